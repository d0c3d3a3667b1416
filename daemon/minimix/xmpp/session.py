"""The XMPP session: the only place that talks to aioxmpp.

It turns what arrives into events (posted with the ``post`` callback the app
gives it; never acting on them itself) and carries out what the core decided
(:meth:`Session.join`, :meth:`Session.leave`, …).  Anything that needs an
answer from the network runs as a tracked task and reports back as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from xml.sax.saxutils import quoteattr

import aioxmpp
import aioxmpp.bookmarks.xso as legacy_xso
import aioxmpp.connector
import aioxmpp.disco
import aioxmpp.disco.xso as disco_xso
import aioxmpp.entitycaps.caps115 as caps115
import aioxmpp.entitycaps.xso as caps_xso
import aioxmpp.errors
import aioxmpp.mdr.xso  # noqa: F401 - Message.xep0184_received (XEP-0184 receipts)
import aioxmpp.misc
import aioxmpp.muc.xso as muc_xso
import aioxmpp.nonza
import aioxmpp.ping
import aioxmpp.private_xml
import aioxmpp.protocol
import aioxmpp.pubsub.xso as pubsub_xso
import aioxmpp.stream
import aioxmpp.xml
import structlog

from minimix.core import actions as A
from minimix.core.bookmarks import Bookmark, RawItem, Source
from minimix.core.events import (
    CatchUpDone,
    CatchUpPage,
    ClientPresence,
    ClientText,
    LegacyBookmarksLoaded,
    PepBookmarkPublished,
    PepBookmarkRetracted,
    PepBookmarksLoaded,
    PingOutcome,
    PostRefused,
    RelayBounced,
    RelayReceived,
    RelaysAcked,
    ReservedNickFound,
    RoomMessage,
    SelfAvailable,
    SelfPingAnswered,
    SessionEstablished,
    SessionLost,
)
from minimix.xmpp import compat, mam, muc, phones
from minimix.xmpp.adhoc import AdhocCommands
from minimix.xmpp.xso import (
    CAPS_NODE,
    ENVELOPE_BYTES,
    NS_BOOKMARKS,
    NS_BOOKMARKS_COMPAT,
    NS_CAPS,
    NS_CARBONS,
    NS_FALLBACK,
    NS_FORWARD,
    NS_HINTS,
    NS_MUC,
    NS_REPLY,
    STANZA_MAX_BYTES,
    ClientMessage,
    Conference,
    Reply,
    clipped,
    fitting,
    node_config,
    publish_options,
    strip_fallback,
    well_formed,
    xml_chars,
    xml_text,
)

log = structlog.get_logger("minimix.xmpp")
log_std = logging.getLogger("aioxmpp.client")


def dt_stamp(stamp: float | None) -> str:
    """An XEP-0082 date-time for a <delay/>: the given time, else now."""
    if stamp is None:
        stamp = time.time()
    seconds = math.floor(stamp)
    micros = min(round((stamp - seconds) * 1e6), 999999)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{micros:06d}Z"


# -- events only the app cares about (connection state, for logs and STATUS=) -------


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    error: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class LoginFailed:
    error: str


@dataclass(frozen=True, slots=True)
class StreamSuspended:
    error: str


@dataclass(frozen=True, slots=True)
class StreamResumed:
    pass


@dataclass(frozen=True, slots=True)
class CapsQueried:
    """The server asked for our capabilities: from now on it pushes bookmark changes."""


@dataclass(frozen=True, slots=True)
class BookmarkPush:
    """Whether the server pushes every bookmark change (it announces #compat) or must be polled."""

    complete: bool


@dataclass(frozen=True, slots=True)
class ClientStopped:
    error: str | None


@dataclass(frozen=True, slots=True)
class Change:
    """A change to one bookmark; None leaves a field as it is."""

    autojoin: bool | None = None
    nick: str | None = None
    venue: str | None = None

    def describe(self) -> str:
        parts = []
        if self.autojoin is not None:
            parts.append(f"autojoin {'on' if self.autojoin else 'off'}")
        if self.nick is not None:
            parts.append(f"nick {self.nick}")
        if self.venue is not None:
            parts.append(f"moved to {self.venue}")
        return ", ".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class Account:
    jid: aioxmpp.JID  # full JID: bare account JID + resource
    password: str
    host: str | None = None
    port: int = 5222
    ca_file: str | None = None

    @classmethod
    def of(cls, jid: str, resource: str, password: str, *, host: str | None = None, port: int = 5222,
           ca_file: str | None = None) -> Account:
        """The account as configured; ValueError if stringprep refuses the JID or resource
        (what the config file's own check cannot tell)."""
        return cls(aioxmpp.JID.fromstr(jid).replace(resource=resource), password, host, port, ca_file)

    @property
    def address(self) -> str:
        """Our full JID, as text."""
        return str(self.jid)

    @property
    def bare(self) -> str:
        return str(self.jid.bare())

    @property
    def localpart(self) -> str | None:
        return self.jid.localpart

    @property
    def server(self) -> str:
        """Where it connects, for the log: the configured host, else the domain's SRV."""
        return f"{self.host}:{self.port}" if self.host else f"{self.jid.domain} (SRV)"

CATCH_UP_CONCURRENCY = 200  # room archive queries in flight at once
FETCH_AGAIN_MAX = 5  # bookmark list fetched again when changes were pushed meanwhile
# How long the answer to a query may take before it counts as none.  aioxmpp waits for an
# IQ's answer for ever: a room that never answers its disco#info held that room's live
# traffic back for ever (and a catch-up slot).  Archive queries: mam.QUERY_TIMEOUT_S.
ROOM_QUERY_TIMEOUT_S = 30.0  # a room (disco#info, reserved nick, destroy); maybe remote, over s2s
ACCOUNT_QUERY_TIMEOUT_S = 30.0  # our own server, about our account (bookmarks, its features)

T = TypeVar("T")


async def asked(query: Awaitable[T], timeout: float) -> T:
    """The answer to ``query``, or TimeoutError after ``timeout`` seconds: every query the
    daemon waits on goes through here, and each caller says what no answer means."""
    try:
        return await asyncio.wait_for(query, timeout)
    except TimeoutError:
        raise TimeoutError(f"no answer in {timeout:g} s") from None


# XEP-0410 §4: how to read the answer to a self-ping.
_STILL_JOINED = {"service-unavailable", "feature-not-implemented"}
_UNDECIDED = {"remote-server-not-found", "remote-server-timeout"}


def room_message(
    room: str,
    message: aioxmpp.Message,
    body: str | None,
    subject: str | None,
    *,
    private: bool = False,
    stamp: float | None = None,
    archive_id: str | None = None,
    history: bool = False,
) -> RoomMessage:
    """The event for a room's message; ``ref`` is the stanza as text, as it is logged and
    forwarded (only for messages with something to relay): the text it arrived as where
    compat kept it, else serialised.

    ``archive_id``: a message from the room's archive (MAM gives the id on <result/>; a
    relay carries it on the message itself, as <stanza-id/>, unless the room put one there).
    """
    origin = message.xep0359_origin_id
    stanza_id = next((s.id_ for s in message.xep0359_stanza_ids if s.by is not None and str(s.by) == room), None)
    insert = ""
    if archive_id is not None and stanza_id is None:
        stanza_id = archive_id
        insert = f"<stanza-id xmlns='urn:xmpp:sid:0' by={quoteattr(room)} id={quoteattr(archive_id)}/>"
    ref = None
    if body is not None or subject is not None:
        ref = compat.raw_message(message, insert)
        if ref is None:
            if insert:
                mam.add_stanza_id(message, aioxmpp.JID.fromstr(room), stanza_id)
            ref = aioxmpp.xml.serialize_single_xso(message)
    return RoomMessage(
        room,
        message.from_.resource if message.from_ is not None else None,
        body,
        subject,
        private=private,
        stanza_id=stanza_id,
        origin_id=origin.id_ if origin is not None else None,
        message_id=message.id_,
        ref=ref,
        stamp=stamp,
        archived=archive_id is not None,
        history=history,
    )


def subject_of(has_subject: bool, subject: str | None, body: str | None) -> str | None:
    """A message's subject change: an empty <subject/> without a body clears the subject,
    which is a change too ("")."""
    return "" if has_subject and subject is None and body is None else subject


def stanza_message(
    room: str, rs: compat.RoomStanza, *, stanza_id: str | None, stamp: float | None, archived: bool = False,
    history: bool = False,
) -> RoomMessage:
    """The event for a room message compat 15 read without XSOs, live or from the archive."""
    subject = subject_of(rs.has_subject, rs.subject, rs.body)
    return RoomMessage(
        room, rs.nick, rs.body, subject, stanza_id=stanza_id, origin_id=rs.origin_id, message_id=rs.id_,
        ref=rs.text if rs.body is not None or subject is not None else None, stamp=stamp, archived=archived,
        history=history,
    )  # fmt: skip


def archived_message(room: str, rs: compat.RoomStanza, archived: mam.Archived) -> RoomMessage:
    """The event for a message from the room's archive (its text has the archive's id on it
    as a <stanza-id/> already)."""
    return stanza_message(room, rs, stanza_id=rs.stanza_id or archived.id_, stamp=archived.stamp, archived=True)


# What every message to the user's clients says: no carbon copies to the others (XEP-0280
# private + no-copy), not in the account's archive (XEP-0334).  A relay also asks for a
# receipt (XEP-0184) and says its body is a fallback for the forwarded original (XEP-0428).
PRIVATE_HINTS = (
    f"<private xmlns='{NS_CARBONS}'/><no-copy xmlns='{NS_HINTS}'/><no-store xmlns='{NS_HINTS}'/>"
)
RECEIPT_HINTS = f"<request xmlns='urn:xmpp:receipts'/>{PRIVATE_HINTS}"
FALLBACK_HINT = f"<fallback xmlns='{NS_FALLBACK}' for='{NS_FORWARD}'/>"
RELAY_HINTS = RECEIPT_HINTS + FALLBACK_HINT
PAYLOAD_MAX_BYTES = STANZA_MAX_BYTES - ENVELOPE_BYTES
STATUS_MAX_BYTES = 4_096  # our status, in every room we are in (mirrored from the user's client)
REFERENCE_MAX_CHARS = 4_096  # a reply's reference: an occupant JID and an archive id


def relay_payload(room: str, text: str, original: str, stamp: float | None, hints: str = RECEIPT_HINTS) -> bytes:
    """What a relay holds: the fallback body and the original, forwarded whole.  Where both
    do not fit in one stanza (STANZA_MAX_BYTES), the body alone (what most clients show),
    cut if even that is too long: a stanza the server refuses would cost the whole stream.
    So would an original that is not XML (a message logged by a version that wrote some
    that way, played back): its text alone too.  ``hints``: what it asks of the server and
    the client (a relay's: a receipt, no copies, not archived)."""
    if not well_formed(original):
        log.warning("a logged message is not XML: relayed as its text alone", room=room, bytes=len(original))
        return _text_alone(text, hints)
    forwarded = (
        f"<forwarded xmlns='{NS_FORWARD}'><delay xmlns='urn:xmpp:delay' stamp='{dt_stamp(stamp)}'/>"
        f"{original}</forwarded>"
    ).encode()
    body = xml_text(text).encode()
    whole = hints + FALLBACK_HINT
    if len(body) + len(whole) + len(forwarded) + len("<body></body>") <= PAYLOAD_MAX_BYTES:
        return b"<body>" + body + f"</body>{whole}".encode() + forwarded
    log.debug("a message too big to relay whole: its text alone", room=room, bytes=len(forwarded))
    return _text_alone(text, hints)


def _text_alone(text: str, hints: str) -> bytes:
    return f"<body>{clipped(text, PAYLOAD_MAX_BYTES - len(hints))}</body>{hints}".encode()


SHOW_OF = {
    "available": aioxmpp.PresenceShow.NONE,
    "chat": aioxmpp.PresenceShow.CHAT,
    "away": aioxmpp.PresenceShow.AWAY,
    "xa": aioxmpp.PresenceShow.XA,
    "dnd": aioxmpp.PresenceShow.DND,
}


def ping_outcome(condition: str | None) -> PingOutcome:
    if condition is None or condition in _STILL_JOINED:
        return PingOutcome.JOINED
    if condition == "item-not-found":
        return PingOutcome.NICK_CHANGED
    if condition in _UNDECIDED:
        return PingOutcome.UNDECIDED
    return PingOutcome.GONE


def normalise_room(raw: str | None) -> tuple[str | None, str | None]:
    """(bare room JID, None) or (None, why not)."""
    if not raw:
        return None, "empty"
    try:
        jid = aioxmpp.JID.fromstr(raw)
    except ValueError as exc:
        return None, str(exc)[:100]
    if not jid.localpart or jid.resource:
        return None, "not of the form room@service"
    return str(jid), None


def prepared_nick(room: str | None, nick: str | None) -> tuple[str | None, bool]:
    """(the nick as the room will see it, whether it is usable): resourceprep maps some
    characters to others (a fullwidth Ａ to A) or to nothing (a soft hyphen), and refuses
    some.  A nick that prepares to nothing would join the bare room JID."""
    if room is None or not nick:
        return nick, True
    try:
        prepared = aioxmpp.JID.fromstr(room).replace(resource=nick).resource
    except ValueError:
        return nick, False
    return (prepared, True) if prepared else (nick, False)


def address_check(room: str, nick: str | None) -> str | None:
    """The core's AddressCheck: what the bookmark reader would skip (stringprep)."""
    norm, error = normalise_room(room)
    if norm is None:
        return f"{room[:100]!r} is not a room address ({error})"
    if nick and not prepared_nick(norm, nick)[1]:
        return "the nick is not a valid XMPP nick (resourceprep)"
    return None


def raw_pep_item(item_id: str | None, payload: Any) -> RawItem:
    item_id = item_id or ""
    room, error = normalise_room(item_id)
    if not isinstance(payload, Conference):
        return RawItem(item_id, Source.PEP, room, has_payload=False, room_error=error)
    nick, nick_ok = prepared_nick(room, payload.nick)
    return RawItem(
        item_id,
        Source.PEP,
        room,
        autojoin=payload.autojoin,
        name=payload.name,
        nick=nick,
        password=payload.password,
        nick_ok=nick_ok,
        room_error=error,
    )


def raw_legacy_item(conference: legacy_xso.Conference) -> RawItem:
    item_id = conference.jid or ""
    room, error = normalise_room(item_id)
    autojoin = conference.autojoin
    nick, nick_ok = prepared_nick(room, conference.nick)
    return RawItem(
        item_id,
        Source.LEGACY,
        room,
        autojoin=autojoin if isinstance(autojoin, str) else None,
        name=conference.name,
        nick=nick,
        password=conference.password,
        nick_ok=nick_ok,
        room_error=error,
    )


class _CapsNode(aioxmpp.disco.StaticNode):
    """Our disco#info under the caps node; tells when the server asks for it."""

    on_query: Callable[[aioxmpp.JID | None], None] = staticmethod(lambda peer: None)

    def as_info_xso(self, stanza: Any = None) -> disco_xso.InfoQuery:
        self.on_query(getattr(stanza, "from_", None))
        return super().as_info_xso(stanza)


class Session:
    """One account's XMPP session, kept up until :meth:`stop`."""

    def __init__(
        self,
        account: Account,
        post: Callable[[object], None],
        *,
        reconnect_delay: Callable[[int], float],
        rooms: Callable[[], list[str]] = list,
        ack_mark: Callable[[str, int], None] | None = None,
        on_received: Callable[[], None] | None = None,
    ) -> None:
        self.account = account
        # Called once the stanzas received in one go have become events (compat 16): their
        # owner may handle them now rather than on the loop's next turn.
        self._on_received = on_received
        self._ack_mark = ack_mark  # records each XEP-0198 count we acknowledge (compat 14)
        self.own = account.jid.bare()
        self._post = post
        self._reconnect_delay = reconnect_delay
        self._tasks: set[asyncio.Task[Any]] = set()
        self._nicks: dict[str, str] = {}  # room → the nick we hold or try there
        self._pep_payloads: dict[str, Conference] = {}  # XEP-0402 items as last seen, kept whole
        self._pep_pushes = 0  # bookmark changes pushed to us: a fetch that saw some arrive is redone
        self._rooms = rooms  # the rooms the user may pick from in ad-hoc forms
        self._legacy_count = 0
        self._room_features: dict[str, frozenset[str]] = {}  # disco#info of rooms, this session
        # Archive queries in flight at once: the server answers them one at a time anyway,
        # and a start with a thousand rooms must not hold a thousand answers in memory.
        self._catch_up_slots = asyncio.Semaphore(CATCH_UP_CONCURRENCY)
        self._acked: list[str] = []  # relays the server has, reported once per loop turn
        self._lost: list[str] = []
        self._awaiting_subject: set[str] = set()  # joins whose subject (the end of the join) is due
        self._room_show: tuple[aioxmpp.PresenceShow, str | None] = (aioxmpp.PresenceShow.NONE, None)
        self.client: compat.MinimixClient | None = None
        self.server_features: frozenset[str] = frozenset()
        self._destroyed_since_suspend = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Build the client (inside the running loop: aioxmpp needs it) and connect."""
        acc = self.account
        peer = []
        if acc.host:
            peer = [(acc.host, acc.port, aioxmpp.connector.STARTTLSConnector())]
        client = compat.MinimixClient(
            acc.jid,
            compat.security_layer(acc.password, acc.ca_file),
            delay_for=self._reconnect_delay,
            override_peer=peer,
            pin_peer=bool(acc.host),
        )
        self.client = client
        self._setup_services(client)
        stream = client.stream
        if self._ack_mark is not None:
            stream.minimix_ack_mark = self._mark_acked
        stream.minimix_rooms = self._nicks  # their groupchat messages come as RoomStanzas (compat 15)
        stream.minimix_room_stanza = self._room_stanza
        if self._on_received is not None:
            stream.minimix_stanzas_taken = self._on_received
        stream.app_inbound_presence_filter.register(self._inbound_presence, 0)
        stream.app_inbound_message_filter.register(self._inbound_message, 0)
        stream.service_inbound_message_filter.register(self._bookmark_node_emptied, -1)
        client.on_stream_established.connect(self._on_established)
        client.on_stream_destroyed.connect(self._on_destroyed)
        client.on_stream_suspended.connect(self._on_suspended)
        client.on_stream_resumed.connect(self._on_resumed)
        client.on_connect_failed.connect(self._on_connect_failed)
        client.on_failure.connect(self._on_failure)
        client.on_stopped.connect(lambda: self._post(ClientStopped(None)))
        client.start()

    def _mark_acked(self, sm_id: str, count: int) -> None:
        if self._ack_mark is None:
            return
        try:
            self._ack_mark(sm_id, count)
        except OSError as exc:  # a crash would then be settled with the count saved with the relays
            log.warning("cannot record the stream count acknowledged; carrying on without", error=_describe(exc))
            self._ack_mark = None

    def _setup_services(self, client: aioxmpp.Client) -> None:
        disco = client.summon(aioxmpp.DiscoServer)
        # aioxmpp's DiscoServer already says client/bot: exactly what minimix is. Its name is
        # what clients list for this resource (Dino's tooltip of your own account).
        disco.set_identity_names("client", "bot", {aioxmpp.structs.LanguageTag.fromstr("en"): "minimix"})
        client.summon(aioxmpp.PingService)  # answers XEP-0199 pings (and says so in disco)
        for feature in (NS_MUC, NS_BOOKMARKS + "+notify", phones.NS_MDS + "+notify", NS_CAPS):
            disco.register_feature(feature)
        self._disco_client = client.summon(aioxmpp.DiscoClient)
        self._pubsub = client.summon(aioxmpp.PubSubClient)
        self._pubsub.on_item_published.connect(self._on_item_published)
        self._pubsub.on_item_retracted.connect(self._on_item_retracted)
        self._private = client.summon(aioxmpp.private_xml.PrivateXMLService)
        self._presence = client.summon(aioxmpp.PresenceServer)
        self._presence.set_presence(aioxmpp.PresenceState(True), {None: "minimix"}, priority=-1)
        AdhocCommands(client, self._post, self._rooms, self.is_own_client)
        self._archives = mam.Archives(client, read_raw=True)
        self._setup_caps(disco, client)

    def is_own_client(self, peer: aioxmpp.JID | None) -> bool:
        """Another resource of our own account: one of the user's clients (never us, nor
        ``minimix doctor``'s short session)."""
        if peer is None or not peer.resource or peer.bare() != self.own:
            return False
        me = self.client.local_jid if self.client is not None else self.account.jid
        return peer != me and peer.resource != f"{me.resource}-doctor"

    def _setup_caps(self, disco: aioxmpp.DiscoServer, client: aioxmpp.Client) -> None:
        """XEP-0115 caps with a ver of our own, so the server's query can be noticed.

        PEP pushes bookmark changes only to resources whose caps carry
        ``urn:xmpp:bookmarks:1+notify``; for an unknown ver the server first asks us
        (disco#info on the caps node) and subscribes us only after our answer.  A
        change between our first fetch and that moment is never pushed, so the app
        fetches again once the server has asked (PROTOCOL.md, "+notify needs caps first").
        """
        node = _CapsNode.clone(disco)
        ver = caps115.hash_query(node.as_info_xso(), "sha1")
        node.on_query = self._on_caps_query  # only now: computing ver above is no query
        disco.mount_node(f"{CAPS_NODE}#{ver}", node)
        caps = caps_xso.Caps115(CAPS_NODE, ver, "sha-1")

        def add_caps(presence: aioxmpp.Presence) -> aioxmpp.Presence:
            if presence.type_ == aioxmpp.PresenceType.AVAILABLE and presence.to is None:
                presence.xep0115_caps = caps
            return presence

        client.stream.app_outbound_presence_filter.register(add_caps, 0)

    def _on_caps_query(self, peer: aioxmpp.JID | None) -> None:
        """The server asking (Prosody: from the account's bare JID; ejabberd: from our own
        full JID) — not one of the user's clients looking at us."""
        me = self.client.local_jid if self.client is not None else self.account.jid
        if peer is None or peer in (self.own, me, self.own.replace(localpart=None)):
            self._post(CapsQueried())

    async def probe_previous_session(self, sm_id: str, inbound: int, timeout: float = 15.0) -> int | None:
        """How many of our stanzas the server had from a previous run's XEP-0198 session.

        Before the daemon's own session starts: log in, ask to resume the old session, read
        the count from <resumed h=…/> or <failed h=…/> (Prosody remembers it for expired
        sessions too), and close.  None when the server does not say.
        """
        acc = self.account
        peer = [(acc.host, acc.port, aioxmpp.connector.STARTTLSConnector())] if acc.host else []
        security = compat.security_layer(acc.password, acc.ca_file)
        xmlstream = None
        try:
            async with asyncio.timeout(timeout):
                if peer:
                    errors: list[BaseException] = []
                    result = await aioxmpp.node._try_options(
                        peer, errors, acc.jid, security, negotiation_timeout=timeout,
                        loop=asyncio.get_running_loop(), logger=log_std,
                    )
                    if result is None:
                        return None
                    _, xmlstream, features = result
                else:
                    _, xmlstream, features = await aioxmpp.node.connect_xmlstream(
                        acc.jid, security, logger=log_std  # its stream logs as the session's does
                    )
                try:
                    features[aioxmpp.nonza.StreamManagementFeature]
                except KeyError:
                    return None
                answer = await aioxmpp.protocol.send_and_wait_for(
                    xmlstream,
                    [aioxmpp.nonza.SMResume(previd=sm_id, counter=inbound)],
                    [aioxmpp.nonza.SMResumed, aioxmpp.nonza.SMFailed],
                )
                return answer.counter
        except Exception as exc:  # TLS closes, refusals, timeouts: the server did not say
            log.info("could not ask the server about the previous session", error=_describe(exc))
            return None
        finally:
            if xmlstream is not None:
                with contextlib.suppress(Exception):
                    xmlstream.abort()

    async def stop(self, timeout: float = 5.0) -> None:
        for task in list(self._tasks):
            task.cancel()
        client = self.client
        if client is None or not client.running:
            return
        stopped = client.on_stopped.future()
        failed = client.on_failure.future()
        client.stop()
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED), timeout)

    @property
    def online(self) -> bool:
        return self.client is not None and self.client.established and not self.client.suspended

    async def drain(self, timeout: float) -> None:
        """Wait until what was sent is acknowledged by the server (XEP-0198), or ``timeout``:
        a clean stop leaves no relay in flight (a closed session's count is gone)."""
        client = self.client
        if client is None or not self.online:
            return
        stream = client.stream
        with contextlib.suppress(Exception):
            await asyncio.wait_for(aioxmpp.ping.ping(client, self.own.replace(localpart=None)), timeout)
            if stream.sm_enabled and stream.sm_unacked_list:
                stream._xmlstream.send_xso(aioxmpp.nonza.SMRequest())
                async with asyncio.timeout(timeout):
                    while stream.sm_enabled and stream.sm_unacked_list:
                        await asyncio.sleep(0.01)  # bounded by the timeout above
        await asyncio.sleep(0)  # let the acks' reports reach the app's queue

    # -- stream events -------------------------------------------------------------------

    def _on_established(self) -> None:
        assert self.client is not None
        compat.set_nodelay(self.client)
        log.info("session established", jid=str(self.client.local_jid))
        self._room_features.clear()  # this session's (a room may have turned its archive on)
        self._post(SessionEstablished())
        self.fetch_bookmarks()

    def _on_destroyed(self) -> None:
        self._destroyed_since_suspend = True
        self._post(SessionLost())

    def _on_suspended(self, exc: BaseException | None) -> None:
        self._destroyed_since_suspend = False  # a new outage: resumed unless destroyed
        self._post(StreamSuspended(_describe(exc)))

    def _on_resumed(self) -> None:
        # aioxmpp fires this after a *new* stream too (destroyed + established): skip that.
        if not self._destroyed_since_suspend:
            assert self.client is not None
            compat.set_nodelay(self.client)
            self._post(StreamResumed())

    def _on_connect_failed(self, exc: BaseException, delay: float) -> None:
        self._post(ConnectFailed(_describe(exc), delay))

    def _on_failure(self, exc: BaseException) -> None:
        if isinstance(exc, compat.FatalLoginError):
            self._post(LoginFailed(str(exc)))
        else:
            self._post(ClientStopped(_describe(exc)))

    # -- inbound -------------------------------------------------------------------------

    def _inbound_presence(self, presence: aioxmpp.Presence) -> aioxmpp.Presence | None:
        sender = presence.from_
        if sender is None:
            return presence
        if self.is_own_client(sender):
            self._client_presence(sender.resource, presence)
            return None
        room = str(sender.bare())
        if room not in self._nicks:
            return presence
        try:
            events = muc.presence_events(presence, room, self._nicks.get(room))
        except Exception:  # a malformed presence must never break the stream
            log.warning("unreadable room presence", room=room, exc_info=True)
            return None
        for event in events:
            if isinstance(event, SelfAvailable):
                self._nicks[room] = event.nick
            self._post(event)
        return None

    def _client_presence(self, resource: str, presence: aioxmpp.Presence) -> None:
        available = presence.type_ == aioxmpp.PresenceType.AVAILABLE
        status = presence.status.any() if presence.status else None
        show = muc.SHOW.get(presence.show, "available")
        self._post(ClientPresence(resource, available, show, status, presence.priority))

    def _inbound_message(self, message: aioxmpp.Message) -> aioxmpp.Message | None:
        """Room traffic and the user's clients' messages become events; the rest is dropped.

        Strangers get nothing back (the daemon must not reflect anything to them), and a
        forwarded or carbon-copied stanza is never taken for a live one.
        """
        sender = message.from_
        if sender is None:
            return None
        room = str(sender.bare())
        kind = message.type_
        if room in self._nicks:
            if kind == aioxmpp.MessageType.GROUPCHAT:
                self._room_message(room, message, private=False)
            elif kind in (aioxmpp.MessageType.CHAT, aioxmpp.MessageType.NORMAL) and sender.resource:
                self._room_message(room, message, private=True)
            else:
                if kind == aioxmpp.MessageType.ERROR and message.id_:  # our post's id: refused
                    self._post(PostRefused(str(sender), message.id_, *muc.error_condition(message.error)))
                self._post(RoomActivity(room))
            return None
        if kind == aioxmpp.MessageType.ERROR:
            if self.is_own_client(sender) and message.id_:  # the core knows its relay ids
                self._post(RelayBounced(sender.resource, message.id_))  # a relay given back
            return None
        if self.is_own_client(sender) and kind in (aioxmpp.MessageType.CHAT, aioxmpp.MessageType.NORMAL):
            received = message.xep0184_received
            if received is not None and received.message_id:
                self._post(RelayReceived(sender.resource, received.message_id))
            body = message.body.any() if message.body else None
            if body is not None:
                reply = message.minimix_reply
                if reply is not None and reply.id_:
                    self._post(ClientText(sender.resource, strip_fallback(body, message, NS_REPLY), reply.id_))
                else:
                    self._post(ClientText(sender.resource, body))
        return None

    def _room_message(self, room: str, message: aioxmpp.Message, *, private: bool) -> None:
        subject = message.subject.any() if message.subject else None
        body = message.body.any() if message.body else None
        # An empty <subject/> (a room without one) still ends the join: aioxmpp reads it as
        # {None: None}, so test for the element, not its text.
        if self._joined_by_subject(room, bool(message.subject), body):
            return
        subject = subject_of(bool(message.subject), subject, body)
        history = not private and room in self._awaiting_subject
        stamp = None
        if history:  # the room's own <delay/> (see compat._room_stanza), the last one
            for delay in message.xep0203_delay:
                if delay.from_ is not None and str(delay.from_) == room and delay.stamp is not None:
                    stamp = delay.stamp.timestamp()
        self._post(room_message(room, message, body, subject, private=private, stamp=stamp, history=history))

    def _room_stanza(self, rs: compat.RoomStanza) -> None:
        """A room's groupchat message as compat 15 read it (no XSO): as :meth:`_room_message`."""
        room = rs.room
        if room not in self._nicks:  # left since it was read: dropped, as any message from it now
            return
        if self._joined_by_subject(room, rs.has_subject, rs.body):
            return
        # Before the subject that ends our join: the history the room replays, dated by the
        # room; after it, live: said when it came, whatever <delay/> it carries.
        history = room in self._awaiting_subject
        self._post(stanza_message(room, rs, stanza_id=rs.stanza_id, stamp=rs.stamp if history else None,
                                  history=history))

    def _joined_by_subject(self, room: str, has_subject: bool, body: str | None) -> bool:
        """The subject that ends our join: not news (True: taken)."""
        if has_subject and body is None and room in self._awaiting_subject:
            self._awaiting_subject.discard(room)
            self._post(RoomActivity(room))
            return True
        return False

    def _bookmark_node_emptied(self, message: aioxmpp.Message) -> aioxmpp.Message | None:
        """A purge or delete of our bookmark node: every XEP-0402 bookmark is gone.

        Prosody 0.12 purges the node when a legacy client saves an empty list; aioxmpp's
        PubSubClient swallows purges without a signal, so this filter runs before it.
        """
        event = message.xep0060_event
        payload = event.payload if event is not None else None
        if (
            isinstance(payload, pubsub_xso.EventPurge | pubsub_xso.EventDelete)
            and payload.node == NS_BOOKMARKS
            and message.from_ == self.own
        ):
            self._pep_pushes += 1
            self._pep_payloads.clear()
            self._post(PepBookmarksLoaded(()))
            return None
        return message

    def _on_item_published(self, jid: aioxmpp.JID, node: str, item: Any, *, message: Any = None) -> None:
        if node == phones.NS_MDS and (marker := phones.published_marker(jid, self.own, item)) is not None:
            self._post(marker)
        if node != NS_BOOKMARKS:
            return
        if jid != self.own:  # only our own account's PEP counts (CVE-2023-28686)
            log.warning("ignored a bookmark notification from another entity", sender=str(jid))
            return
        self._pep_pushes += 1
        self._remember(item.id_, item.registered_payload)
        self._post(PepBookmarkPublished(raw_pep_item(item.id_, item.registered_payload)))

    def _on_item_retracted(self, jid: aioxmpp.JID, node: str, id_: str, *, message: Any = None) -> None:
        if node != NS_BOOKMARKS:
            return
        if jid != self.own:
            log.warning("ignored a bookmark retraction from another entity", sender=str(jid))
            return
        self._pep_pushes += 1
        self._pep_payloads.pop(id_, None)
        self._post(PepBookmarkRetracted(id_))

    # -- bookmarks -------------------------------------------------------------------------

    def fetch_bookmarks(self) -> None:
        self._spawn(self._fetch_bookmarks(), "fetch bookmarks")

    async def _fetch_bookmarks(self) -> None:
        client = self.client
        assert client is not None
        # Both at once: the account's features (is there #compat?) and the XEP-0402 items.
        # No answer in time: the fetch fails (logged); the next resync or poll fetches again.
        info_task = asyncio.ensure_future(
            asked(self._disco_client.query_info(self.own, require_fresh=True), ACCOUNT_QUERY_TIMEOUT_S)
        )
        # The read markers too, handed over before the bookmarks: playbacks wait for those.
        markers = asyncio.ensure_future(phones.fetch_markers(self._pubsub, self.own, ACCOUNT_QUERY_TIMEOUT_S))
        try:
            response = await self._fresh_pep_items()
        except BaseException:
            info_task.cancel()
            markers.cancel()
            raise
        for marker in await markers:
            self._post(marker)
        if response is None:
            items: tuple[RawItem, ...] = ()
        else:
            self._pep_payloads.clear()
            for item in response.payload.items:
                self._remember(item.id_, item.registered_payload)
            items = tuple(raw_pep_item(i.id_, i.registered_payload) for i in response.payload.items)
        self._post(PepBookmarksLoaded(items))
        info = await info_task
        self.server_features = frozenset(info.features)
        compat_store = NS_BOOKMARKS_COMPAT in self.server_features
        self._post(BookmarkPush(compat_store))
        if not compat_store:
            # Without #compat the legacy store is separate (or the only one): read it too.
            legacy = await self._fetch_legacy()
            self._legacy_count = len(legacy)
            self._post(LegacyBookmarksLoaded(legacy))

    async def _fresh_pep_items(self) -> Any:
        """The XEP-0402 items (None: no node), as of a moment after every change pushed so far.

        A list fetched while a change was being pushed may predate it, and taken as the
        whole truth it would undo that change (a room left, and joined again at the next
        push).  Its answer cannot be ordered against the pushes (aioxmpp hands a push over
        at once and the answer a loop iteration later), so then the list is fetched again.
        """
        response = None
        for _ in range(FETCH_AGAIN_MAX + 1):
            pushed = self._pep_pushes
            try:
                response = await asked(self._pubsub.get_items(self.own, NS_BOOKMARKS), ACCOUNT_QUERY_TIMEOUT_S)
            except aioxmpp.errors.XMPPCancelError as exc:
                if exc.condition != aioxmpp.ErrorCondition.ITEM_NOT_FOUND:
                    raise
                response = None  # no XEP-0402 node: no XEP-0402 bookmarks
            if self._pep_pushes == pushed:
                break
            log.debug("bookmarks changed while being fetched: fetching them again")
        return response

    async def _fetch_legacy(self) -> tuple[RawItem, ...]:
        try:
            result = await asked(self._private.get_private_xml(legacy_xso.Storage()), ACCOUNT_QUERY_TIMEOUT_S)
        except aioxmpp.errors.XMPPError as exc:
            if exc.condition in (aioxmpp.ErrorCondition.ITEM_NOT_FOUND, aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE):
                return ()
            raise
        storage = result.registered_payload
        if not isinstance(storage, legacy_xso.Storage):
            return ()
        return tuple(
            raw_legacy_item(c) for c in storage.bookmarks if isinstance(c, legacy_xso.Conference)
        )

    def _remember(self, item_id: str | None, payload: Any) -> None:
        if item_id and isinstance(payload, Conference):
            self._pep_payloads[item_id] = payload

    def change_bookmark(
        self,
        bookmark: Bookmark | None,
        room: str,
        *,
        autojoin: bool | None = None,
        nick: str | None = None,
        venue: str | None = None,
        reason: str,
    ) -> None:
        """Change a bookmark in the store it came from (a new one: where the others live).

        Every field not changed is kept, ``<extensions/>`` and unknown children included
        (XEP-0402 §3.1).  ``venue``: move the bookmark to that room (same name, nick,
        extensions; not the old room's password).
        """
        change = Change(autojoin, nick, venue)
        self._spawn(self._change(bookmark, room, change, reason), f"update bookmark {room}")

    async def _change(self, bookmark: Bookmark | None, room: str, change: Change, reason: str) -> None:
        source = bookmark.source if bookmark is not None else self._new_bookmark_store()
        if source is Source.PEP:
            await self._change_pep(bookmark, room, change)
        else:
            await self._change_legacy(room, change)
            self.fetch_bookmarks()  # private XML pushes nothing: read the result back
        log.info("bookmark updated", room=room, store=source.value, change=change.describe(), reason=reason)

    def _new_bookmark_store(self) -> Source:
        """Where a new bookmark goes: XEP-0402, unless the account's bookmarks are all legacy."""
        if NS_BOOKMARKS_COMPAT in self.server_features or self._pep_payloads or not self._legacy_count:
            return Source.PEP
        return Source.LEGACY

    async def _change_pep(self, bookmark: Bookmark | None, room: str, change: Change) -> None:
        item_id = bookmark.item_id if bookmark is not None else room
        old = self._pep_payloads.get(item_id)
        payload = Conference()
        if old is not None:  # keep everything we do not change, unknown children included
            payload.name, payload.autojoin, payload.nick = old.name, old.autojoin, old.nick
            payload.password, payload.extensions = old.password, old.extensions
            payload.unknown[:] = old.unknown
        elif bookmark is not None:
            payload.name, payload.nick, payload.password = bookmark.name, bookmark.nick, bookmark.password
            payload.autojoin = "true" if bookmark.autojoin else "false"
        if change.autojoin is not None:
            payload.autojoin = "true" if change.autojoin else "false"
        if change.nick is not None:
            payload.nick = change.nick
        if change.venue is None:
            await self.publish_bookmark(item_id, payload)
            return
        payload.password = None  # the password of the old room is not the new one's
        await self.publish_bookmark(change.venue, payload)
        await asked(self._pubsub.retract(None, NS_BOOKMARKS, item_id, notify=True), ACCOUNT_QUERY_TIMEOUT_S)

    async def publish_bookmark(self, item_id: str, payload: Conference) -> None:
        """Publish one XEP-0402 item without ever losing the others.

        XEP-0402 §3.3 publish-options first.  ejabberd 23.01 rejects max_items and
        send_last_published_item there (resource-constraint) and a node it creates keeps
        one item, so a second bookmark would replace the first: then make sure the node
        keeps them all (owner configuration) before and after publishing with the options
        it accepts, and check.
        """
        pubsub = self._pubsub
        wait = ACCOUNT_QUERY_TIMEOUT_S  # no answer in time: the change fails (logged)
        try:
            await asked(pubsub.publish(None, NS_BOOKMARKS, payload, id_=item_id, publish_options=publish_options()), wait)
            return
        except (aioxmpp.errors.XMPPError, RuntimeError) as exc:
            # conflict (precondition-not-met): the node exists with another configuration,
            # e.g. max_items=1 and access "presence" after another client's plain publish:
            # publishing as it is could replace a bookmark, and show passwords to contacts.
            # resource-constraint: ejabberd 23.01 knows only some of the options.
            # RuntimeError: no publish-options at all.
            log.info("bookmark publish-options refused: configuring the node", error=str(exc))
        with contextlib.suppress(aioxmpp.errors.XMPPError):
            await asked(pubsub.set_node_config(None, node_config(), NS_BOOKMARKS), wait)  # an existing node
        for options in (publish_options(), publish_options(full=False), None):
            try:
                await asked(pubsub.publish(None, NS_BOOKMARKS, payload, id_=item_id, publish_options=options), wait)
                break
            except (aioxmpp.errors.XMPPError, RuntimeError):
                if options is None:
                    raise
        with contextlib.suppress(aioxmpp.errors.XMPPError):
            await asked(pubsub.set_node_config(None, node_config(), NS_BOOKMARKS), wait)  # a node just created
        config = await asked(pubsub.get_node_config(None, NS_BOOKMARKS), wait)
        value = next((v for f in config.fields if f.var == "pubsub#max_items" for v in f.values), None)
        if value is not None and value.isdigit() and int(value) < 2:
            log.error("the bookmark node keeps only one item: other bookmarks may be lost", max_items=value)

    async def _change_legacy(self, room: str, change: Change) -> None:
        """Read-modify-write the whole XEP-0048 list (that is how it works; keep it short)."""
        # No answer in time to either: the change fails (logged), the list is as it was.
        result = await asked(self._private.get_private_xml(legacy_xso.Storage()), ACCOUNT_QUERY_TIMEOUT_S)
        storage = result.registered_payload
        if not isinstance(storage, legacy_xso.Storage):
            storage = legacy_xso.Storage()
        entries = [
            c for c in storage.bookmarks
            if isinstance(c, legacy_xso.Conference) and normalise_room(c.jid)[0] == room
        ]
        if not entries:
            entry = legacy_xso.Conference(None, room, autojoin="false")
            storage.bookmarks.append(entry)
            entries = [entry]
        for entry in entries:
            if change.autojoin is not None:
                entry.autojoin = "true" if change.autojoin else "false"
            if change.nick is not None:
                entry.nick = change.nick
            if change.venue is not None:
                entry.jid, entry.password = change.venue, None
        await asked(self._private.set_private_xml(storage), ACCOUNT_QUERY_TIMEOUT_S)

    # -- rooms -----------------------------------------------------------------------------

    def join(self, room: str, nick: str, password: str | None, history_since: float | None = None) -> None:
        self._nicks[room] = nick
        self._awaiting_subject.add(room)
        presence = muc.join_presence(aioxmpp.JID.fromstr(room), nick, password, history_since)
        self._enqueue(self._shown(presence))

    def leave(self, room: str, nick: str, status: str | None) -> None:
        self._enqueue(muc.leave_presence(aioxmpp.JID.fromstr(room), nick, fitting(status, STATUS_MAX_BYTES) if status else None))

    def change_nick(self, room: str, nick: str) -> None:
        self._enqueue(self._shown(muc.nick_presence(aioxmpp.JID.fromstr(room), nick)))

    def _shown(self, presence: aioxmpp.Presence) -> aioxmpp.Presence:
        """Our presence in rooms carries the user's show and status (mirrored)."""
        show, status = self._room_show
        presence.show = show
        if status:
            presence.status[None] = status
        return presence

    def mirror_presence(self, show: str, status: str | None, occupants: list[tuple[str, str]]) -> None:
        self._room_show = (SHOW_OF.get(show, aioxmpp.PresenceShow.NONE), fitting(status, STATUS_MAX_BYTES) if status else None)
        for room, nick in occupants:
            self._enqueue(self._shown(muc.nick_presence(aioxmpp.JID.fromstr(room), nick)))

    # -- relays and replies ----------------------------------------------------------------

    def relay(self, action: A.Relay) -> None:
        """One chat message per client: a readable fallback body, the original forwarded whole.

        ``<private/>`` + ``<no-copy/>``: no carbon copies to clients that did not opt in.
        ``<no-store/>``: not archived in the account's MAM, where every MAM-syncing client
        (Conversations, Gajim, Dino) would fetch every relay meant for another client; minimix
        keeps its own log for playback instead.  Each asks for a receipt (XEP-0184).

        The payload (all but the message's own attributes) is the same for every client: it
        is written once, as text, and each relay is a ClientMessage written as text: not built,
        validated and serialised per relay by aioxmpp's XSO machinery, which cost most of the
        daemon's CPU per relayed message.
        """
        if not isinstance(action.ref, str):
            return
        tracked = action.seq is not None
        account = str(self.own.bare())
        payload = relay_payload(action.room, action.text, action.ref, action.stamp)
        for resource, relay_id in action.deliveries:
            message = ClientMessage(f"{account}/{resource}", payload, relay_id)
            self._enqueue(message, self._delivery_tracker(relay_id) if tracked else None)

    def store(self, action: A.Store) -> None:
        """A mention to the account's bare JID, for the server to store (xmpp.phones); the
        server's ack of it is reported as a relay's."""
        if isinstance(action.ref, str):
            payload = relay_payload(action.room, action.text, action.ref, action.stamp, phones.STORE_HINTS)
            message = ClientMessage(str(self.own.bare()), payload, action.push_id)
            self._enqueue(message, self._delivery_tracker(action.push_id))

    def send_now(self) -> None:
        """Write what is queued for the server at once, not on the stanza loop's next turn."""
        client = self.client
        if client is not None and client.established:
            compat.send_queued(client.stream)

    def next_sm_positions(self, count: int) -> tuple[str | None, list[int | None], int | None]:
        """Where the next ``count`` stanzas will stand in the XEP-0198 count: (session id,
        their numbers, our inbound counter).  Valid until anything else is enqueued."""
        client = self.client
        stream = client.stream if client is not None else None
        if stream is None or not stream.sm_enabled or not client.established:
            return None, [None] * count, None
        # _sm_unacked_list: the public sm_unacked_list is a copy, O(n) per relay in a burst
        first = stream.sm_outbound_base + len(stream._sm_unacked_list) + len(stream._active_queue) + 1
        return stream.sm_id, [(first + i) & 0xFFFFFFFF for i in range(count)], stream.sm_inbound_ctr

    def _delivery_tracker(self, relay_id: str) -> Callable[[Any, Any], None]:
        was_sent_with_sm = False

        def on_state_change(token: Any, state: aioxmpp.stream.StanzaState) -> None:
            nonlocal was_sent_with_sm
            S = aioxmpp.stream.StanzaState
            if state == S.SENT:
                was_sent_with_sm = True
            elif state == S.ACKED or (state == S.SENT_WITHOUT_SM and not was_sent_with_sm):
                self._report(relay_id, delivered=True)
            elif state in (S.SENT_WITHOUT_SM, S.DISCONNECTED, S.ABORTED, S.DROPPED, S.FAILED):
                # SENT_WITHOUT_SM after SENT: the session died unacked and resuming failed
                # without a count: the server may not have it.  Owed again, never lost.
                self._report(relay_id, delivered=False)

        return on_state_change

    def _report(self, relay_id: str, *, delivered: bool) -> None:
        batch = self._acked if delivered else self._lost
        if not self._acked and not self._lost:
            asyncio.get_running_loop().call_soon(self._flush_reports)
        batch.append(relay_id)

    def _flush_reports(self) -> None:
        if self._acked:
            self._post(RelaysAcked(tuple(self._acked), True))
            self._acked = []
        if self._lost:
            self._post(RelaysAcked(tuple(self._lost), False))
            self._lost = []

    def reply(self, resource: str, text: str) -> None:
        """A message from the daemon to one of the user's clients (not carbon-copied to the
        others, not archived)."""
        payload = f"<body>{clipped(text, PAYLOAD_MAX_BYTES - len(PRIVATE_HINTS))}</body>{PRIVATE_HINTS}".encode()
        message = ClientMessage(f"{self.own.bare()}/{resource}", payload)
        self._enqueue(message)

    def send_to_room(self, action: A.SendToRoom) -> None:
        room = aioxmpp.JID.fromstr(action.room)
        if action.nick:  # a private message to one occupant (XEP-0045 §7.5)
            message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=room.replace(resource=action.nick))
            message.xep0045_muc_user = muc_xso.UserExt()
        else:
            message = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT, to=room)
        message.id_ = xml_chars(action.origin_id)
        # Not cut to STANZA_MAX_BYTES: the text came in a bigger stanza from the user's client,
        # which the server took.
        message.body[None] = xml_chars(action.text)
        message.xep0359_origin_id = aioxmpp.misc.OriginID(message.id_)
        if action.reply_to is not None and sum(map(len, action.reply_to)) <= REFERENCE_MAX_CHARS:
            message.minimix_reply = Reply(*map(xml_chars, action.reply_to))  # (a longer one is no id)
        self._enqueue(message)

    def self_ping(self, room: str, nick: str, timeout: float) -> None:
        async def ping() -> None:
            assert self.client is not None
            target = aioxmpp.JID.fromstr(room).replace(resource=nick)
            try:
                await asyncio.wait_for(aioxmpp.ping.ping(self.client, target), timeout)
            except TimeoutError:
                self._post(SelfPingAnswered(room, PingOutcome.UNDECIDED, "timeout"))
            except aioxmpp.errors.XMPPError as exc:
                condition = exc.condition.value[1] if isinstance(exc.condition.value, tuple) else str(exc.condition)
                self._post(SelfPingAnswered(room, ping_outcome(condition), condition))
            except (ConnectionError, aioxmpp.errors.ErroneousStanza) as exc:
                self._post(SelfPingAnswered(room, PingOutcome.UNDECIDED, _describe(exc)))
            else:
                self._post(SelfPingAnswered(room, PingOutcome.JOINED))

        self._spawn(ping(), f"self-ping {room}")

    def catch_up(self, room: str, after: tuple[str, float] | None, limit: int, token: int | None = None) -> None:
        """Fetch from the room's archive what came after ``after``; report CatchUpDone."""

        async def run() -> None:
            async with self._catch_up_slots:
                await catch_up()

        async def catch_up() -> None:
            jid = aioxmpp.JID.fromstr(room)
            try:
                features = await self._features(jid)
                if mam.NS_MAM not in features:
                    self._post(CatchUpDone(room, mam=False, token=token))
                    return
                if after is None:  # first time here: only learn where the archive ends
                    self._post(CatchUpDone(room, mam=True, head=await mam.newest_id(self._archives, jid), token=token))
                    return
                found, more, streamed = await mam.catch_up(
                    self._archives, jid, after, limit, mam.NS_MAM_EXTENDED in features,
                    on_page=lambda page: self._post(CatchUpPage(room, room_messages(page), token)),
                )
            except (TimeoutError, aioxmpp.errors.XMPPError, ConnectionError) as exc:
                self._post(CatchUpDone(room, error=_describe(exc), token=token))
                return
            self._post(CatchUpDone(room, room_messages(found), more, mam=True, streamed=streamed, token=token))

        def room_messages(archived: list[mam.Archived]) -> tuple[RoomMessage, ...]:
            messages = []
            for a in archived:
                message = a.message
                if isinstance(message, compat.RoomStanza):  # read without XSOs (compat 15)
                    messages.append(archived_message(room, message, a))
                    continue
                if message.type_ != aioxmpp.MessageType.GROUPCHAT or message.from_ is None:
                    continue
                body = message.body.any() if message.body else None
                subject = message.subject.any() if message.subject else None
                messages.append(room_message(room, message, body, subject, stamp=a.stamp, archive_id=a.id_))
            return tuple(messages)

        self._spawn(run(), f"catch up {room}")

    async def _features(self, jid: aioxmpp.JID) -> frozenset[str]:
        key = str(jid)
        if key not in self._room_features:
            # Not DiscoClient.query_info: it keeps every answer (forms and all) for the
            # session, a lot of memory with many rooms; we keep the features only.
            assert self.client is not None
            iq = aioxmpp.IQ(type_=aioxmpp.IQType.GET, to=jid, payload=disco_xso.InfoQuery())
            info = await asked(self.client.send(iq), ROOM_QUERY_TIMEOUT_S)  # none: the catch-up fails
            self._room_features[key] = frozenset(info.features)
        return self._room_features[key]

    def query_reserved_nick(self, room: str) -> None:
        async def query() -> None:
            nick = None
            try:
                info = await asked(
                    self._disco_client.query_info(aioxmpp.JID.fromstr(room), node="x-roomuser-item",
                                                  require_fresh=True),
                    ROOM_QUERY_TIMEOUT_S,
                )
                for identity in info.identities:
                    if identity.category == "conference" and identity.name:
                        nick = identity.name
                        break
            except (aioxmpp.errors.XMPPError, TimeoutError):
                pass  # the room names none: the join backs off
            self._post(ReservedNickFound(room, nick))

        self._spawn(query(), f"reserved nick {room}")

    def destroy_room(self, room: str, reason: str) -> None:
        async def destroy() -> None:
            assert self.client is not None
            query = muc_xso.OwnerQuery(destroy=muc_xso.DestroyRequest())
            query.destroy.reason = reason
            iq = aioxmpp.IQ(type_=aioxmpp.IQType.SET, to=aioxmpp.JID.fromstr(room), payload=query)
            await asked(self.client.send(iq), ROOM_QUERY_TIMEOUT_S)  # none: logged (task failed)

        self._spawn(destroy(), f"destroy {room}")

    # -- plumbing ----------------------------------------------------------------------------

    def _enqueue(self, stanza: Any, on_state_change: Callable[[Any, Any], None] | None = None) -> None:
        client = self.client
        if client is None or not client.established:
            if on_state_change is not None:
                on_state_change(None, aioxmpp.stream.StanzaState.DROPPED)
            return  # the room machine knows we are offline; it rejoins on the next session
        try:
            client.enqueue(stanza, on_state_change=on_state_change)
        except ConnectionError:
            if on_state_change is not None:
                on_state_change(None, aioxmpp.stream.StanzaState.DROPPED)

    def _spawn(self, coro: Awaitable[Any], what: str) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if isinstance(exc, ConnectionError) and not self.online:  # the stream's loss: reported once, as such
                log.debug("task ended with the stream", task=what, error=_describe(exc))
            elif exc is not None:
                log.warning("task failed", task=what, error=_describe(exc))

        task.add_done_callback(done)


@dataclass(frozen=True, slots=True)
class RoomActivity:
    """Traffic from a room: it knows we are there."""

    room: str


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
