"""An independent XMPP test client: slixmpp (never aioxmpp, the daemon's library) run on a
background asyncio loop, behind a small synchronous API for plain pytest functions.

Stanzas are mostly written as raw XML so a test reads like the protocol. Every blocking
call is bounded by the client's timeout. Received messages and presences are recorded
(slixmpp stanza objects: `m["body"]`, `m["from"]`, `m.xml` for ElementTree, `str(m)`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import ssl
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from .stanzas import NS, attr, el_of, error_of, escape, muc_codes, parse, tostring
from .wait import DEFAULT_TIMEOUT, wait_until

BOOKMARKS_NODE = NS["bookmarks"]


class StanzaError(Exception):
    """The peer answered with an error stanza."""

    def __init__(self, stanza, what: str = ""):
        self.stanza = stanza
        self.type, self.condition, self.text = error_of(stanza)
        super().__init__(f"{what}: {self.type}/{self.condition} {self.text or ''}".strip())


class ConnectError(Exception):
    """Connecting, TLS or authentication failed."""


# -- the shared background loop ---------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="test-xmpp-loop", daemon=True).start()
        return _loop


def run(coro, timeout: float):
    """Run `coro` on the background loop; wait at most `timeout` seconds for it."""
    fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), _get_loop())
    try:
        return fut.result(timeout + 5)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise TimeoutError(f"no answer within {timeout} s") from None


# -- records ----------------------------------------------------------------------------


@dataclass
class Occupant:
    nick: str
    jid: str | None  # real JID, if the room shows it to us
    role: str
    affiliation: str
    show: str | None
    status: str | None
    presence: object = field(repr=False, default=None)


@dataclass
class Room:
    jid: str
    nick: str
    joined: bool = False
    subject_seen: bool = False
    occupants: dict[str, Occupant] = field(default_factory=dict)
    self_presence: object = None  # the latest presence about ourselves (join, kick, …)


@dataclass(frozen=True)
class Bookmark:
    """One XEP-0402 item, as stored (no normalisation beyond reading the fields)."""

    room: str  # the item id
    name: str | None
    autojoin: bool
    autojoin_raw: str | None
    nick: str | None
    password: str | None
    extensions_xml: str | None  # the <extensions/> element, serialised
    raw_xml: str  # the whole payload, serialised


@dataclass(frozen=True)
class LegacyBookmark:
    """One <conference/> of a XEP-0048 <storage xmlns='storage:bookmarks'/>."""

    jid: str
    autojoin: bool = False
    name: str | None = None
    nick: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class DiscoInfo:
    identities: set[tuple[str, str, str | None]]
    features: set[str]
    raw: object = field(repr=False, compare=False, default=None)


def _text(el, path: str) -> str | None:
    child = el.find(path, NS)
    return None if child is None else (child.text or "")


def _bare(jid: str) -> str:
    return str(jid).split("/", 1)[0]


def _resource(jid: str) -> str:
    parts = str(jid).split("/", 1)
    return parts[1] if len(parts) == 2 else ""


# -- the client -------------------------------------------------------------------------


class TestClient:
    """A resource of `account` on `server`, e.g. the user's phone or another room member.

    c = TestClient(server, account, resource="phone").connect()  # or `with … as c:`
    """

    __test__ = False  # not a pytest test class
    _ids = itertools.count(1)

    def __init__(
        self,
        server,
        account,
        resource: str = "test",
        *,
        timeout: float | None = None,
        ca_file: str | Path | None = None,
        notify: Iterable[str] = (),
        features: Iterable[str] = (),
    ):
        """`notify`: PEP namespaces to advertise `+notify` for in entity caps (e.g.
        BOOKMARKS_NODE); `features`: extra disco features. `ca_file` defaults to the
        server's CA (pass server.wrong_ca_file for negative tests)."""
        self.server = server
        self.account = account
        self.resource = resource
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.ca_file = Path(ca_file or server.ca_file)
        self.notify = tuple(notify)
        self.features = tuple(features)
        self.messages: list = []  # every <message/> received, in order
        self.presences: list = []  # every <presence/> received, in order
        self.iq_requests: list = []  # every get/set <iq/> addressed to us (e.g. caps queries)
        self.rooms: dict[str, Room] = {}
        self.xmpp: slixmpp.ClientXMPP | None = None
        self._lock = threading.Lock()
        self._waiters: list[tuple[Callable, asyncio.Future]] = []
        self._fallback_publish = False  # the server rejected full XEP-0402 publish-options

    # -- connection ---------------------------------------------------------------------

    @property
    def jid(self) -> str:
        """The bound full JID."""
        return str(self.xmpp.boundjid) if self.xmpp else f"{self.account.jid}/{self.resource}"

    @property
    def bare(self) -> str:
        return self.account.jid

    @property
    def connected(self) -> bool:
        return bool(self.xmpp and self.xmpp.sessionstarted and self.xmpp.transport)

    def connect(
        self,
        show: str | None = None,
        status: str | None = None,
        priority: int | None = None,
        presence: bool = True,
    ) -> TestClient:
        """Connect with STARTTLS (trusting only ca_file), authenticate, bind, and send
        initial presence unless presence=False. Raises ConnectError."""
        run(self._connect(f"{self.account.jid}/{self.resource}"), self.timeout)
        if presence:
            self.set_presence(show, status, priority)
        return self

    async def _connect(self, full_jid: str) -> None:
        x = slixmpp.ClientXMPP(full_jid, self.account.password)
        for plugin in ("xep_0030", "xep_0199", "xep_0115"):
            x.register_plugin(plugin)
        x.ssl_context = ssl.create_default_context(cafile=str(self.ca_file))  # only this CA
        x.enable_direct_tls = False
        x.enable_plaintext = False
        for feature in self.features:
            x.plugin["xep_0030"].add_feature(feature)
        for ns in self.notify:
            x.plugin["xep_0030"].add_feature(f"{ns}+notify")
        if self.notify:
            # A caps hash of our own: servers cache disco#info by hash and would not ask a
            # second client with the same features, so wait_caps_queried() could not work.
            x.plugin["xep_0030"].add_feature(f"urn:minimix:test-client:{uuid.uuid4().hex}")
        x.add_filter("in", self._on_stanza)
        done = asyncio.get_running_loop().create_future()

        def fail(why):
            def handler(arg=None):
                if not done.done():
                    done.set_exception(ConnectError(f"{full_jid}: {why}: {arg}"))

            return handler

        async def started(_):
            await x.plugin["xep_0115"].update_caps(broadcast=False)
            if not done.done():
                done.set_result(None)

        x.add_event_handler("session_start", started)
        x.add_event_handler("ssl_invalid_chain", fail("TLS certificate rejected"))
        x.add_event_handler("failed_all_auth", fail("authentication failed"))
        x.add_event_handler("connection_failed", fail("connection failed"))
        x.add_event_handler("stream_error", fail("stream error"))
        x.add_event_handler("disconnected", fail("disconnected"))
        self.xmpp = x
        with self._lock:
            self.rooms.clear()
        x.connect(self.server.host, self.server.port)
        try:
            await done
        except BaseException:
            self.xmpp = None
            await _shutdown(x)
            raise

    def disconnect(self) -> None:
        """Close the stream (the server then broadcasts our unavailable presence);
        bounded, idempotent."""
        if self.xmpp is None:
            return
        x, self.xmpp = self.xmpp, None

        async def close():
            try:
                if x.transport:
                    await asyncio.wait_for(x.disconnect(wait=1), 5)
            except (TimeoutError, ConnectionError):
                pass
            finally:
                await _shutdown(x)

        run(close(), 10)

    def abort(self) -> None:
        """Drop the TCP connection without closing the stream (a client crash)."""
        x, self.xmpp = self.xmpp, None
        if x is not None:
            run(_shutdown(x), 5)

    def __enter__(self) -> TestClient:
        return self.connect() if not self.connected else self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    async def _call(self, fn, *args):
        return fn(*args)

    # -- raw sending and receiving ---------------------------------------------------------

    def new_id(self) -> str:
        return f"t{next(self._ids)}"

    def send_raw(self, xml: str) -> None:
        """Send an XML string as is (no namespace needed: the stream's is jabber:client)."""
        run(self._call(self.xmpp.send_raw, xml), self.timeout)

    def send_message(
        self,
        to: str,
        body: str | None,
        type_: str = "chat",
        *,
        id: str | None = None,
        extra_xml: str = "",
    ) -> str:
        """Send a message; returns its id."""
        id = id or self.new_id()
        body_xml = f"<body>{escape(body)}</body>" if body is not None else ""
        self.send_raw(
            f"<message to={attr(to)} type={attr(type_)} id={attr(id)}>{body_xml}{extra_xml}</message>"
        )
        return id

    def set_presence(
        self, show: str | None = None, status: str | None = None, priority: int | None = None
    ) -> None:
        """Broadcast available presence (with entity caps)."""
        run(self._call(self.xmpp.send_presence, show, status, priority), self.timeout)

    def iq(self, xml: str, to: str | None = None, type_: str = "get", timeout: float | None = None):
        """Send an IQ and return the result (a slixmpp Iq; `.xml` is the element).
        `xml` is a whole <iq/> or just its payload. Raises StanzaError, TimeoutError."""
        if not xml.lstrip().startswith("<iq"):
            to_attr = f" to={attr(to)}" if to else ""
            xml = f"<iq type={attr(type_)}{to_attr}>{xml}</iq>"
        timeout = timeout or self.timeout

        async def send():
            iq = slixmpp.Iq(self.xmpp, xml=parse(xml))
            if not iq["id"]:
                iq["id"] = self.new_id()
            try:
                return await iq.send(timeout=timeout)
            except IqError as e:
                raise StanzaError(e.iq, f"iq {tostring(iq)[:200]}") from None
            except IqTimeout:
                raise TimeoutError(f"no answer to {tostring(iq)[:200]}") from None

        return run(send(), timeout + 2)

    def wait_message(
        self,
        predicate: Callable = lambda m: True,
        timeout: float | None = None,
        since: int = 0,
        message: str | None = None,
    ):
        """The first received message (from index `since` of self.messages) matching."""

        def find():
            return next((m for m in self.messages[since:] if predicate(m)), None)

        return wait_until(
            find,
            timeout or self.timeout,
            message=message or (lambda: self._no_match("message", self.messages[since:])),
        )

    def wait_presence(
        self,
        predicate: Callable = lambda p: True,
        timeout: float | None = None,
        since: int = 0,
        message: str | None = None,
    ):
        """The first received presence (from index `since` of self.presences) matching."""

        def find():
            return next((p for p in self.presences[since:] if predicate(p)), None)

        return wait_until(
            find,
            timeout or self.timeout,
            message=message or (lambda: self._no_match("presence", self.presences[since:])),
        )

    def wait_caps_queried(self, timeout: float | None = None):
        """Wait until the server asked for our entity caps (disco#info): only then does it
        send +notify PEP events to us (XEP-0163: the server learns our +notify features
        from our caps). Returns the query. A ping round trip
        afterwards makes sure our answer was processed before the test goes on."""

        def query():
            return next(
                (
                    iq
                    for iq in self.iq_requests
                    if el_of(iq).find("disco_info:query", NS) is not None
                ),
                None,
            )

        q = wait_until(
            query, timeout or self.timeout, message=f"{self.jid}: the server never queried our caps"
        )
        self.ping(self.server.domain)
        return q

    def _no_match(self, kind: str, received: list) -> str:
        shown = "\n  ".join(tostring(s)[:300] for s in received[-10:]) or "nothing"
        return f"{self.jid}: no matching {kind}; the last {min(len(received), 10)} received:\n  {shown}\n"

    def _on_stanza(self, stanza):
        """Incoming filter (loop thread): record, track rooms, resolve waiters."""
        tag = el_of(stanza).tag.split("}")[-1]
        if tag == "message":
            self.messages.append(stanza)
            self._track_subject(stanza)
        elif tag == "presence":
            self.presences.append(stanza)
            self._track_presence(stanza)
        elif tag == "iq" and stanza["type"] in ("get", "set"):
            self.iq_requests.append(stanza)
        for waiter in list(self._waiters):
            check, fut = waiter
            if fut.done():
                self._waiters.remove(waiter)
                continue
            try:
                result = check(stanza)
            except Exception as e:  # noqa: BLE001
                fut.set_exception(e)
                continue
            if result is not None:
                fut.set_result(result)
        return stanza

    async def _expect(self, check: Callable, send_xml: str, timeout: float):
        """Send `send_xml`, then wait for the first incoming stanza for which `check`
        returns non-None (it may raise to fail)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((check, fut))
        self.xmpp.send_raw(send_xml)
        return await asyncio.wait_for(fut, timeout)

    # -- MUC: occupant tracking ------------------------------------------------------------

    def _track_presence(self, p) -> None:
        room_jid, nick = _bare(p["from"]), _resource(p["from"])
        with self._lock:
            room = self.rooms.get(room_jid)
            if room is None or not nick:  # not a room of ours, or ejabberd's bare-room presence
                return
            codes, el = muc_codes(p), el_of(p)
            item = el.find("muc_user:x/muc_user:item", NS)
            # 110 marks presences about us; once joined, our nick does too (ejabberd's
            # destroy has no 110). Before that, an occupant with our nick is someone else.
            is_self = 110 in codes or (room.joined and nick == room.nick)
            if p["type"] == "error":
                return
            if p["type"] == "unavailable":
                room.occupants.pop(nick, None)
                if is_self and 303 in codes and item is not None:
                    room.nick = item.get("nick")  # our nick change: the new one comes next
                elif is_self:
                    room.joined = False
                    room.self_presence = p
                    room.occupants.clear()
                return
            room.occupants[nick] = Occupant(
                nick=nick,
                jid=item.get("jid") if item is not None else None,
                role=item.get("role") if item is not None else None,
                affiliation=item.get("affiliation") if item is not None else None,
                show=p["show"] or None,
                status=p["status"] or None,
                presence=p,
            )
            if is_self:
                room.nick, room.joined, room.self_presence = nick, True, p

    def _track_subject(self, m) -> None:
        room = self.rooms.get(_bare(m["from"]))
        if (
            room is not None
            and m["type"] == "groupchat"
            and el_of(m).find("client:subject", NS) is not None
            and el_of(m).find("client:body", NS) is None
        ):
            room.subject_seen = True

    # -- MUC: the occupant's side ------------------------------------------------------------

    def join(
        self,
        room: str,
        nick: str,
        password: str | None = None,
        history: int | None = 0,
        wait_subject: bool = True,
        extra_xml: str = "",
    ):
        """Join `room` as `nick`: waits for our self-presence (and, by default, the subject,
        which ends the join). Returns the self-presence. Raises StanzaError (e.g. conflict,
        forbidden, not-authorized, registration-required)."""
        with self._lock:
            self.rooms[room] = Room(room, nick)
        pw = f"<password>{escape(password)}</password>" if password is not None else ""
        hist = f"<history maxstanzas='{history}'/>" if history is not None else ""
        xml = (
            f"<presence to={attr(f'{room}/{nick}')}><x xmlns='{NS['muc']}'>{hist}{pw}</x>"
            f"{extra_xml}</presence>"
        )

        def check(p):
            if el_of(p).tag.split("}")[-1] != "presence" or _bare(p["from"]) != room:
                return None
            if p["type"] == "error":
                raise StanzaError(p, f"join {room}/{nick}")
            r = self.rooms[room]
            return p if r.joined and r.self_presence is p else None

        try:
            self_presence = run(self._expect(check, xml, self.timeout), self.timeout)
        except StanzaError:
            with self._lock:
                self.rooms.pop(room, None)
            raise
        if wait_subject:
            wait_until(
                lambda: self.rooms[room].subject_seen,
                self.timeout,
                message=f"{self.jid}: no subject after joining {room}",
            )
        return self_presence

    def leave(self, room: str, status: str | None = None):
        """Send unavailable presence and wait for our own unavailable. Returns it."""
        r = self.rooms[room]
        st = f"<status>{escape(status)}</status>" if status else ""
        xml = f"<presence type='unavailable' to={attr(f'{room}/{r.nick}')}>{st}</presence>"

        def check(p):
            return (
                p
                if (
                    _bare(p["from"]) == room
                    and el_of(p).tag.endswith("presence")
                    and not self.rooms[room].joined
                    and self.rooms[room].self_presence is p
                )
                else None
            )

        return run(self._expect(check, xml, self.timeout), self.timeout)

    def change_nick(self, room: str, new_nick: str):
        """Change our nick; waits for the self-presence under the new nick."""

        def check(p):
            if _bare(p["from"]) != room or not el_of(p).tag.endswith("presence"):
                return None
            if p["type"] == "error":
                raise StanzaError(p, f"nick change to {new_nick}")
            r = self.rooms[room]
            return p if r.joined and r.nick == new_nick and r.self_presence is p else None

        return run(
            self._expect(check, f"<presence to={attr(f'{room}/{new_nick}')}/>", self.timeout),
            self.timeout,
        )

    def in_room(self, room: str) -> bool:
        r = self.rooms.get(room)
        return bool(r and r.joined)

    def nick(self, room: str) -> str | None:
        r = self.rooms.get(room)
        return r.nick if r else None

    def self_presence(self, room: str):
        """The latest presence about ourselves in `room` (unavailable after a kick/ban/destroy)."""
        r = self.rooms.get(room)
        return r.self_presence if r else None

    def occupants(self, room: str) -> dict[str, Occupant]:
        """nick -> Occupant, ourselves included, as the room's presences told us."""
        with self._lock:
            r = self.rooms.get(room)
            return dict(r.occupants) if r else {}

    def wait_occupant(
        self, room: str, nick: str, present: bool = True, timeout: float | None = None
    ):
        """Wait until `nick` is (or is no longer) an occupant of `room`."""
        return wait_until(
            lambda: (nick in self.occupants(room)) == present,
            timeout or self.timeout,
            message=f"{self.jid}: {nick!r} {'never joined' if present else 'never left'} "
            f"{room}; occupants: {sorted(self.occupants(room))}",
        )

    def say(self, room: str, text: str, *, id: str | None = None, extra_xml: str = "") -> str:
        """Send a groupchat message; returns its id."""
        return self.send_message(room, text, "groupchat", id=id, extra_xml=extra_xml)

    def wait_groupchat(self, room: str, body: str, timeout: float | None = None, since: int = 0):
        """The first groupchat message from `room` with exactly this body."""
        return self.wait_message(
            lambda m: m["type"] == "groupchat" and _bare(m["from"]) == room and m["body"] == body,
            timeout,
            since,
        )

    # -- MUC: the owner's side ---------------------------------------------------------------

    def _admin(self, room: str, item: str, reason: str | None):
        r = f"<reason>{escape(reason)}</reason>" if reason else ""
        return self.iq(
            f"<query xmlns='{NS['muc_admin']}'><item {item}>{r}</item></query>", room, "set"
        )

    def kick(self, room: str, nick: str, reason: str | None = None):
        """Set role none on `nick` (status 307 for the victim)."""
        return self._admin(room, f"nick={attr(nick)} role='none'", reason)

    def set_role(self, room: str, nick: str, role: str, reason: str | None = None):
        return self._admin(room, f"nick={attr(nick)} role={attr(role)}", reason)

    def ban(self, room: str, jid: str, reason: str | None = None):
        """Set affiliation outcast on the bare `jid` (status 301)."""
        return self.set_affiliation(room, jid, "outcast", reason)

    def set_affiliation(self, room: str, jid: str, affiliation: str, reason: str | None = None):
        return self._admin(room, f"jid={attr(_bare(jid))} affiliation={attr(affiliation)}", reason)

    def destroy_room(self, room: str, alternate: str | None = None, reason: str | None = None):
        alt = f" jid={attr(alternate)}" if alternate else ""
        r = f"<reason>{escape(reason)}</reason>" if reason else ""
        return self.iq(
            f"<query xmlns='{NS['muc_owner']}'><destroy{alt}>{r}</destroy></query>", room, "set"
        )

    def room_config(self, room: str) -> dict[str, list[str]]:
        """The room configuration form: var -> values."""
        form = el_of(self.iq(f"<query xmlns='{NS['muc_owner']}'/>", room)).find(
            "muc_owner:query/data:x", NS
        )
        return {
            f.get("var"): [v.text or "" for v in f.findall("data:value", NS)]
            for f in form.findall("data:field", NS)
            if f.get("var")
        }

    def configure_room(self, room: str, fields: dict[str, object]):
        """Submit only `fields` (e.g. {"muc#roomconfig_membersonly": True}); bools become
        1/0, lists become several values."""

        def values(v):
            items = v if isinstance(v, (list, tuple, set)) else [v]
            return "".join(
                f"<value>{escape(('1' if i else '0') if isinstance(i, bool) else str(i))}</value>"
                for i in items
            )

        xml_fields = "".join(f"<field var={attr(k)}>{values(v)}</field>" for k, v in fields.items())
        return self.iq(
            f"<query xmlns='{NS['muc_owner']}'><x xmlns='{NS['data']}' type='submit'>"
            f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
            f"{xml_fields}</x></query>",
            room,
            "set",
        )

    def set_members_only(self, room: str, on: bool = True):
        return self.configure_room(room, {"muc#roomconfig_membersonly": on})

    # -- discovery and ping ------------------------------------------------------------------

    def disco_info(self, jid: str | None = None, node: str | None = None) -> DiscoInfo:
        node_attr = f" node={attr(node)}" if node else ""
        q = el_of(self.iq(f"<query xmlns='{NS['disco_info']}'{node_attr}/>", jid)).find(
            "disco_info:query", NS
        )
        return DiscoInfo(
            identities={
                (i.get("category"), i.get("type"), i.get("name"))
                for i in q.findall("disco_info:identity", NS)
            },
            features={f.get("var") for f in q.findall("disco_info:feature", NS)},
            raw=q,
        )

    def ping(self, jid: str, timeout: float | None = None) -> str:
        """XEP-0199 ping: "result", or the error condition (e.g. "not-acceptable" from a
        room we are not in). Raises TimeoutError."""
        try:
            self.iq(f"<ping xmlns='{NS['ping']}'/>", jid, timeout=timeout)
            return "result"
        except StanzaError as e:
            return e.condition or "undefined-condition"

    # -- XEP-0402 bookmarks --------------------------------------------------------------

    def publish_bookmark(
        self,
        room: str,
        autojoin: bool | str = True,
        name: str | None = None,
        nick: str | None = None,
        password: str | None = None,
        extensions_xml: str | None = None,
        item_id: str | None = None,
        raw_payload_xml: str | None = None,
        options: bool = True,
    ):
        """Publish one bookmark (item id = room) with the XEP-0402 publish-options.

        ejabberd 23.01 rejects max_items/send_last_published_item (resource-constraint):
        then publish with persist_items + access_model only and configure the node
        max_items=max, or each publish would replace the previous item. `autojoin` may be
        a string to store odd values; `raw_payload_xml` replaces the <conference/>."""
        if raw_payload_xml is None:
            aj = autojoin if isinstance(autojoin, str) else ("true" if autojoin else "false")
            name_attr = f" name={attr(name)}" if name is not None else ""
            children = "".join(
                [
                    f"<nick>{escape(nick)}</nick>" if nick is not None else "",
                    f"<password>{escape(password)}</password>" if password is not None else "",
                    f"<extensions>{extensions_xml}</extensions>"
                    if extensions_xml is not None
                    else "",
                ]
            )
            raw_payload_xml = (
                f"<conference xmlns='{BOOKMARKS_NODE}' autojoin={attr(aj)}{name_attr}>"
                f"{children}</conference>"
            )
        item = f"<item id={attr(item_id or room)}>{raw_payload_xml}</item>"
        if not options:
            return self._publish(item, {})
        full = {
            "pubsub#persist_items": "true",
            "pubsub#max_items": "max",
            "pubsub#send_last_published_item": "never",
            "pubsub#access_model": "whitelist",
        }
        if not self._fallback_publish:
            try:
                return self._publish(item, full)
            except StanzaError as e:
                if e.condition != "resource-constraint":
                    raise
                self._fallback_publish = True
        result = self._publish(
            item, {"pubsub#persist_items": "true", "pubsub#access_model": "whitelist"}
        )
        self.configure_node(
            BOOKMARKS_NODE, {"pubsub#max_items": "max", "pubsub#send_last_published_item": "never"}
        )
        return result

    def _publish(self, item_xml: str, options: dict[str, str]):
        opts = ""
        if options:
            opts = (
                "<publish-options>"
                + _form("http://jabber.org/protocol/pubsub#publish-options", options)
                + "</publish-options>"
            )
        return self.iq(
            f"<pubsub xmlns='{NS['pubsub']}'><publish node='{BOOKMARKS_NODE}'>{item_xml}"
            f"</publish>{opts}</pubsub>",
            type_="set",
        )

    def configure_node(self, node: str, fields: dict[str, str]):
        """Owner-configure one of our PEP nodes."""
        return self.iq(
            f"<pubsub xmlns='{NS['pubsub_owner']}'><configure node={attr(node)}>"
            + _form("http://jabber.org/protocol/pubsub#node_config", fields)
            + "</configure></pubsub>",
            type_="set",
        )

    def node_config(self, node: str) -> dict[str, list[str]]:
        form = el_of(
            self.iq(f"<pubsub xmlns='{NS['pubsub_owner']}'><configure node={attr(node)}/></pubsub>")
        )
        return {
            f.get("var"): [v.text or "" for v in f.findall("data:value", NS)]
            for f in form.iterfind(".//data:field", NS)
            if f.get("var")
        }

    def retract_bookmark(self, room: str, notify: bool = True):
        n = " notify='true'" if notify else ""
        return self.iq(
            f"<pubsub xmlns='{NS['pubsub']}'><retract node='{BOOKMARKS_NODE}'{n}>"
            f"<item id={attr(room)}/></retract></pubsub>",
            type_="set",
        )

    def get_bookmarks(self) -> dict[str, Bookmark]:
        """All items of our urn:xmpp:bookmarks:1 node: room -> Bookmark ({} if no node)."""
        try:
            resp = self.iq(
                f"<pubsub xmlns='{NS['pubsub']}'><items node='{BOOKMARKS_NODE}'/></pubsub>"
            )
        except StanzaError as e:
            if e.condition == "item-not-found":
                return {}
            raise
        result = {}
        for item in el_of(resp).iterfind("pubsub:pubsub/pubsub:items/pubsub:item", NS):
            result[item.get("id")] = parse_bookmark(item)
        return result

    # -- XEP-0048 bookmarks in XEP-0049 private XML ---------------------------------------

    def set_legacy_bookmarks(self, bookmarks: Iterable[LegacyBookmark]):
        """Replace the whole private-XML bookmark list (as legacy clients do)."""
        confs = []
        for b in bookmarks:
            name = f" name={attr(b.name)}" if b.name is not None else ""
            inner = (f"<nick>{escape(b.nick)}</nick>" if b.nick is not None else "") + (
                f"<password>{escape(b.password)}</password>" if b.password is not None else ""
            )
            confs.append(
                f"<conference jid={attr(b.jid)} autojoin={attr('true' if b.autojoin else 'false')}"
                f"{name}>{inner}</conference>"
            )
        return self.iq(
            f"<query xmlns='{NS['private']}'><storage xmlns='{NS['legacy_bookmarks']}'>"
            f"{''.join(confs)}</storage></query>",
            type_="set",
        )

    def get_legacy_bookmarks(self) -> list[LegacyBookmark]:
        resp = self.iq(
            f"<query xmlns='{NS['private']}'><storage xmlns='{NS['legacy_bookmarks']}'/></query>"
        )
        storage = el_of(resp).find("private:query/legacy_bookmarks:storage", NS)
        if storage is None:
            return []
        return [
            LegacyBookmark(
                jid=c.get("jid"),
                autojoin=c.get("autojoin") in ("true", "1"),
                name=c.get("name"),
                nick=_text(c, "legacy_bookmarks:nick"),
                password=_text(c, "legacy_bookmarks:password"),
            )
            for c in storage.findall("legacy_bookmarks:conference", NS)
        ]

    def __repr__(self):
        return f"<TestClient {self.jid} {'connected' if self.connected else 'offline'}>"


async def _shutdown(x: slixmpp.ClientXMPP) -> None:
    """Abort the connection and end slixmpp's background task (otherwise only cancelled
    by __del__, which leaves "Task was destroyed but it is pending" at exit)."""
    x.cancel_connection_attempt()
    x.abort()
    task = getattr(x, "_run_out_filters", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1)


def parse_bookmark(item) -> Bookmark:
    """A XEP-0402 <item/> (from a query result or a pubsub event) as a Bookmark."""
    item = el_of(item)
    payload = next(iter(item), None)
    conf = item.find("bookmarks:conference", NS)
    ext = conf.find("bookmarks:extensions", NS) if conf is not None else None
    aj = conf.get("autojoin") if conf is not None else None
    return Bookmark(
        room=item.get("id"),
        name=conf.get("name") if conf is not None else None,
        autojoin=aj in ("true", "1"),
        autojoin_raw=aj,
        nick=_text(conf, "bookmarks:nick") if conf is not None else None,
        password=_text(conf, "bookmarks:password") if conf is not None else None,
        extensions_xml=tostring(ext) if ext is not None else None,
        raw_xml=tostring(payload) if payload is not None else "",
    )


def _form(form_type: str, fields: dict[str, str]) -> str:
    body = "".join(
        f"<field var={attr(k)}><value>{escape(str(v))}</value></field>" for k, v in fields.items()
    )
    return (
        f"<x xmlns='{NS['data']}' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{escape(form_type)}</value></field>{body}</x>"
    )
