"""Whatever the daemon received, every byte it writes is well-formed XML the server accepts.

The daemon's edge (a Session on the real aioxmpp stack, over a fake transport) and its core
(an Engine), composed as app.py composes them for what they write: hostile room messages
become relays (their fallback bodies and the forwarded originals), hostile lines from the
user's client become command answers and posts in a room (say), ad-hoc commands become
forms, answers and error answers, the client's presence is mirrored into the room; and each
writer is also driven directly with any string at all (C0 controls, lone surrogates, U+FFFE,
a quarter of a megabyte).  What comes out must pass expat (with namespaces, as Prosody reads
it) and libxml2, no stanza may be bigger than what servers take from a client, nothing may
raise, and the stream stays up."""

from __future__ import annotations

import asyncio
import random
import xml.parsers.expat as pyexpat

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hostile import (
    DAEMON,
    ME,
    PHONE,
    ROOM,
    Daemon,
    attr,
    daemon,
    errors_logged,
    nicks,
    stanza,
    text,
    texts,
    written_stanzas,
)
from minimix.core import actions as A
from minimix.core.bookmarks import RawItem, Source
from minimix.core.engine import Engine
from minimix.core.events import (
    CatchUpDone,
    ClientCommand,
    ClientPresence,
    PepBookmarksLoaded,
    SelfAvailable,
    SessionEstablished,
)
from minimix.xmpp.events import RoomActivity

NOW = 1_800_000_000.0
# The least a common server takes from a client by default: ejabberd's older configurations
# and MongooseIM's example (Prosody and today's ejabberd: 256 KiB).  A bigger stanza costs
# the daemon its stream (policy-violation).
SERVER_TAKES = 65_536
SM_R = "<r xmlns='urn:xmpp:sm:3'/>"
ADHOC = "http://jabber.org/protocol/commands"

# Any string at all, as a writer may be handed: C0 controls, lone surrogates, U+FFFE, …
odd_strings = st.one_of(
    st.text(st.characters(blacklist_categories=()), max_size=60),
    st.sampled_from(["", "\x00", "\ud800", "\ufffe\uffff", "]]>", "<&'\""]),
)
anything = st.one_of(odd_strings, st.sampled_from(["x" * 300_000, "&" * 70_000]))  # ids: odd_strings


class Writers:
    """The core's actions that write, carried out by the session as app.py does."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.engine = Engine(default_nick="me", relay_globs={"phone": "all"}, rng=random.Random(1))
        d.listeners.append(self.handle)
        for event in (
            SessionEstablished(),
            ClientPresence("phone", True),
            PepBookmarksLoaded((RawItem(ROOM, Source.PEP, ROOM, autojoin="true", nick="me"),)),
            SelfAvailable(ROOM, "me", frozenset({110})),
            CatchUpDone(ROOM, mam=True, head=("s0", NOW)),
        ):
            self.handle(event)

    def handle(self, event: object) -> None:
        if not isinstance(event, RoomActivity):  # the session's own: for the app only
            self.execute(self.engine.handle(event, NOW))  # type: ignore[arg-type]

    def execute(self, actions: list[A.Action]) -> None:
        session = self.d.session
        for action in actions:
            match action:
                case A.Relay():
                    session.delivery.relay(action)
                case A.Reply(resource, text, token) if token is None:
                    session.delivery.reply(resource, text)
                case A.Reply(text=text, token=asyncio.Future() as answer) if not answer.done():  # ad-hoc
                    answer.set_result(text)
                case A.SendToRoom():
                    session.muc.send_to_room(action)
                case A.MirrorPresence(show, status):
                    session.muc.mirror_presence(show, status, [(ROOM, "me")])
                case A.Join(room, nick, password):
                    session.muc.join(room, nick, password)
                case A.Leave(room, nick, status):
                    session.muc.leave(room, nick, status)
                case A.ChangeNick(room, nick):
                    session.muc.change_nick(room, nick)


def stanza_sizes(data: bytes) -> list[int]:
    """The size in bytes of each stanza in a stream (its header open, its footer added)."""
    data += b"</stream:stream>"
    parser = pyexpat.ParserCreate("utf-8", "\x01")
    depth, start, sizes = [0], [0], []

    def started(name: str, attrs: dict[str, str]) -> None:
        depth[0] += 1
        if depth[0] == 2:
            start[0] = parser.CurrentByteIndex

    def ended(name: str) -> None:
        if depth[0] == 2:  # at its end tag (or at the start tag of an empty element)
            sizes.append(data.index(b">", parser.CurrentByteIndex) + 1 - start[0])
        depth[0] -= 1

    parser.StartElementHandler, parser.EndElementHandler = started, ended
    parser.Parse(data, True)
    return sizes


def check_written(d: Daemon) -> None:
    assert d.up, "the stream went down"
    written_stanzas(d.wire)  # expat with namespaces, and libxml2
    sizes = stanza_sizes(bytes(d.wire.out))
    assert max(sizes, default=0) <= SERVER_TAKES, max(sizes)


async def settle(d: Daemon) -> None:
    await d.turns(8)
    d.session.send_now()
    await d.turns(2)


# -- what arrives, and what the daemon writes for it ---------------------------------------------

room_messages = st.builds(  # (each gets its own id)
    lambda nick, kind, body, subject, kids: lambda id_: stanza(
        "message", kind, f"{ROOM}/{nick}", id_,
        (f"<body>{text(body)}</body>" if body is not None else "")
        + (f"<subject>{text(subject)}</subject>" if subject is not None else "") + kids,
    ),
    nicks, st.sampled_from(["groupchat", "groupchat", "chat"]),
    st.one_of(st.none(), texts.map(lambda t: f"b {t}"), st.just("B" * 250_000)),  # a body: never empty
    st.one_of(st.none(), texts), st.sampled_from(["", "<x xmlns='a b'/>", "<y xmlns='&lt;&amp;'/><z xmlns='http://x/?a=1&amp;b=2'/>"]),
)
COMMANDS = ["rooms", "status", "help", "say kitchen ", f"say {ROOM} ", "relay all", "relay ", "keywords add ", "join ", "nick "]
client_lines = st.builds(lambda command, rest: command + rest, st.sampled_from(COMMANDS), texts)
SHOWS = ["away", "dnd", "xa", "chat", "bogus"]
client_presences = st.builds(
    lambda show, status: stanza("presence", None, PHONE, "p1", f"<show>{text(show)}</show><status>{text(status)}</status>"),
    st.one_of(st.sampled_from(SHOWS), texts), st.one_of(texts, st.just("S" * 200_000)),
)


def adhoc(node: str, sessionid: str | None = None, fields: dict[str, str] | None = None) -> str:
    form = ""
    if fields is not None:
        form = "<x xmlns='jabber:x:data' type='submit'>" + "".join(
            f"<field var={attr(var)}><value>{text(value)}</value></field>" for var, value in fields.items()
        ) + "</x>"
    sid = f" sessionid={attr(sessionid)}" if sessionid is not None else ""
    return (
        f"<iq from='{PHONE}' to='{DAEMON}' type='set' id='a-{node}'>"
        f"<command xmlns='{ADHOC}' node={attr(node)} action='execute'{sid}>{form}</command></iq>"
    )


async def run_adhoc(d: Daemon, node: str, fields: dict[str, str]) -> None:
    """The two steps of an ad-hoc command: the form asked for, the form submitted."""
    d.feed(adhoc(node))
    await settle(d)
    answers = [s for s in written_stanzas(d.wire) if s.get("id") == f"a-{node}"]
    command = answers[-1].find(f"{{{ADHOC}}}command") if answers else None
    sessionid = command.get("sessionid") if command is not None else None
    d.feed(adhoc(node, sessionid, fields).replace(f"id='a-{node}'", f"id='b-{node}'"))
    await settle(d)
    assert [s.get("type") for s in written_stanzas(d.wire) if s.get("id") == f"b-{node}"] in (["result"], ["error"])


# -- the properties ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    st.lists(room_messages, max_size=3), st.lists(client_lines, max_size=3), st.lists(client_presences, max_size=2),
    st.sampled_from(["say", "relay", "keywords", "join", "nick", "leave", "rooms"]), texts, texts,
)
@example([lambda id_: stanza("message", "groupchat", f"{ROOM}/bob", id_, f"<body>{'B' * 150_000}</body>")], [], [], "say", "", "")
def test_what_arrives_is_written_on_as_xml_the_server_takes(messages, lines, presences, node, field_a, field_b):
    async def run() -> None:
        d = await daemon()
        Writers(d)
        with errors_logged() as errors:
            sent = [message(f"m{n}") for n, message in enumerate(messages)]
            for message in sent:
                d.feed(message.xml + SM_R)
                await settle(d)
            relays = [s for s in written_stanzas(d.wire) if s.get("to") == f"{ME}/phone"]
            assert len(relays) >= sum(m.type_ == "groupchat" and "<body>" in m.xml for m in sent)
            for line in lines:
                d.feed(f"<message from='{PHONE}' to='{DAEMON}' type='chat' id='c'><body>{text(line)}</body></message>")
                await settle(d)
            for presence in presences:
                d.feed(presence.xml)
                await settle(d)
            await run_adhoc(d, node, {"room": field_a, "text": field_b, "mode": field_a, "nick": field_b,
                                      "action": field_a, "word": field_b})
            check_written(d)
        assert not errors, errors

    asyncio.run(run())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    anything, anything, anything, odd_strings, nicks,
    st.one_of(st.none(), st.floats(min_value=-62135596800, max_value=253402300799)),
)
def test_each_writer_handed_anything_writes_xml_the_server_takes(body, ref_text, status, ident, nick, stamp):
    """Strings a writer should never be handed (the reader gives XML characters only), in
    every writer: nothing raises, nothing written is malformed or too big."""

    async def run() -> None:
        d = await daemon()
        session = d.session
        original = f"<message xmlns='jabber:client' from='{ROOM}/bob' type='groupchat' id='o'><body>{text(ref_text)}</body></message>"
        with errors_logged() as errors:
            session.delivery.relay(A.Relay(ROOM, (("phone", ident), ("laptop", "r2")), body, original, stamp=stamp))
            session.delivery.reply("phone", body)
            if len(body) < 10_000:  # say's text came in a bigger stanza, from the user's client
                session.muc.send_to_room(A.SendToRoom(ROOM, body, ident))
                session.muc.send_to_room(A.SendToRoom(ROOM, body, ident, nick, (f"{ROOM}/{nick}", ident)))
            session.muc.mirror_presence("away", status, [(ROOM, "me"), (ROOM, nick)])
            session.muc.leave(ROOM, nick, status)
            # an ad-hoc command's answer: the core's text, whatever it is
            d.listeners.append(lambda event: isinstance(event, ClientCommand) and event.token.set_result(body))
            await settle(d)
            await run_adhoc(d, "status", {})
            check_written(d)
        assert not errors, errors

    asyncio.run(run())


def test_a_relay_too_big_for_the_server_goes_as_its_text_alone():
    """A room's 150 KB message: the fallback body and the forwarded original were 300 KB in
    one stanza, which Prosody refused (policy-violation) and closed the daemon's stream for,
    again after each reconnection (the playback relayed it again)."""

    async def run() -> list:
        d = await daemon()
        Writers(d)
        with errors_logged() as errors:
            d.feed(stanza("message", "groupchat", f"{ROOM}/bob", "big", f"<body>{'B' * 150_000}</body>").xml)
            d.feed(stanza("message", "groupchat", f"{ROOM}/bob", "small", "<body>small</body>").xml)
            await settle(d)
            check_written(d)
        assert not errors
        return [s for s in written_stanzas(d.wire) if s.get("to") == f"{ME}/phone"]

    big, small = asyncio.run(run())
    body = big.findtext("{jabber:client}body")
    assert body.startswith("[room] bob: BBB") and body.endswith("characters in all]")
    assert big.find("{urn:xmpp:forward:0}forwarded") is None
    assert big.find("{urn:xmpp:fallback:0}fallback") is None  # the body is no fallback now
    assert small.find("{urn:xmpp:forward:0}forwarded") is not None  # the others: as ever


def test_an_adhoc_form_for_thousands_of_rooms_fits_in_a_stanza():
    """Every room as a choice: 3,000 rooms made a 300 KB form, which the server refused,
    closing the daemon's stream.  Beyond what fits, the room is typed in."""
    rooms = [f"room-with-a-long-name-{n:04d}@conference.example.org" for n in range(3000)]

    async def run() -> list:
        d = await daemon(rooms=lambda: rooms)
        d.feed(adhoc("leave"))
        await settle(d)
        check_written(d)
        return [s for s in written_stanzas(d.wire) if s.get("id") == "a-leave"]

    (answer,) = asyncio.run(run())
    field = answer.find(".//{jabber:x:data}field[@var='room']")
    assert field.get("type") == "text-single" and field.find("{jabber:x:data}option") is None

    async def few() -> list:
        d = await daemon(rooms=lambda: rooms[:10])
        d.feed(adhoc("leave"))
        await settle(d)
        return [s for s in written_stanzas(d.wire) if s.get("id") == "a-leave"]

    (answer,) = asyncio.run(few())
    field = answer.find(".//{jabber:x:data}field[@var='room']")
    assert field.get("type") == "list-single" and len(field.findall("{jabber:x:data}option")) == 10


def test_a_logged_original_that_is_not_xml_goes_as_its_text_alone():
    """What an earlier version logged as the original may not be XML (it wrote a namespace
    with & as it was): played back, it would cost the stream again at each reconnection."""
    broken = f"<message xmlns='jabber:client' from='{ROOM}/bob' type='groupchat' id='o'><x xmlns=\"a&b\"/></message>"

    async def run() -> list:
        d = await daemon()
        d.session.delivery.relay(A.Relay(ROOM, (("phone", "r1"),), "[room] bob: hi", broken, seq=7))
        await settle(d)
        check_written(d)
        return [s for s in written_stanzas(d.wire) if s.tag == "{jabber:client}message"]

    (relay,) = asyncio.run(run())
    assert relay.findtext("{jabber:client}body") == "[room] bob: hi"
    assert relay.find("{urn:xmpp:forward:0}forwarded") is None


def test_a_stanza_that_cannot_be_written_costs_itself_not_the_batch_nor_the_stream():
    """Written in one go with others (a burst, corked: fastpath.writes), a stanza whose serialisation raises (a
    C0 control in a body) is not written, and neither are half of it; the rest go out."""
    import aioxmpp

    async def run() -> list:
        d = await daemon()
        client = d.session.client
        for n, body in enumerate(["before", "bad \x00", "after"]):
            message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr(PHONE), id_=f"w{n}")
            message.body[None] = body
            client.enqueue(message)
        d.session.send_now()
        await settle(d)
        check_written(d)
        return [s.findtext("{jabber:client}body") for s in written_stanzas(d.wire) if s.tag == "{jabber:client}message"]

    assert asyncio.run(run()) == ["before", "after"]
