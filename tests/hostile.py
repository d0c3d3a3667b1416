"""Hostile XML for the property tests of the daemon's reader and writers: a Session on the real
aioxmpp stack (XMLStream, StanzaStream, minimix's patches) fed bytes through a fake transport,
strategies for what a stranger, an occupant or the user's own client may send (all of it
well-formed: what a server forwards), and a strict check of what the daemon writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import xml.etree.ElementTree
import xml.parsers.expat as pyexpat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock
from xml.sax.saxutils import escape, quoteattr

import aioxmpp
import aioxmpp.protocol
import lxml.etree
import structlog
from hypothesis import strategies as st

from minimix.xmpp import compat
from minimix.xmpp import session as S
from minimix.xmpp.account import Account

ME = "me@example.org"
DAEMON = f"{ME}/minimix"
PHONE = f"{ME}/phone"
ROOM = "room@muc.example.org"
STRANGER = "stranger@example.net/x"
SERVER_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='s1' version='1.0'>"
)


# -- the daemon's session on a fake transport ----------------------------------------------------


class Wire:
    """The transport: what the daemon writes, kept."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        self.closed = True

    abort = close

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self.closed


@dataclass
class Daemon:
    """The daemon's Session, joined to ROOM as "me", its stream open (XEP-0198 on)."""

    session: S.Session
    xmlstream: aioxmpp.protocol.XMLStream
    wire: Wire
    events: list[object] = field(default_factory=list)  # what the session posted
    listeners: list[Callable[[object], None]] = field(default_factory=list)  # called with each

    @property
    def stream(self) -> aioxmpp.stream.StanzaStream:
        assert self.session.client is not None
        return self.session.client.stream

    def feed(self, data: bytes | str) -> None:
        self.xmlstream.data_received(data.encode() if isinstance(data, str) else data)

    async def turns(self, n: int = 4) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    @property
    def up(self) -> bool:
        return self.xmlstream.state is aioxmpp.protocol.State.OPEN and self.stream.running

    def posted(self, since: int, kind: type) -> list[Any]:
        return [e for e in self.events[since:] if isinstance(e, kind)]


async def daemon(rooms: Callable[[], list[str]] = list) -> Daemon:
    """``rooms``: what the user's ad-hoc forms offer."""
    events: list[object] = []
    listeners: list[Callable[[object], None]] = []

    def post(event: object) -> None:
        events.append(event)
        for listener in listeners:
            listener(event)

    account = Account(aioxmpp.JID.fromstr(DAEMON), "pw")
    session = S.Session(account, post, reconnect_delay=lambda attempt: 1.0, rooms=rooms, on_received=lambda: None)
    with mock.patch.object(compat.MinimixClient, "start", lambda self: None):
        session.start()  # everything but connecting
    client = session.client
    assert client is not None
    wire = Wire()
    xmlstream = aioxmpp.protocol.XMLStream(
        to=aioxmpp.JID.fromstr("example.org"), features_future=asyncio.get_running_loop().create_future()
    )
    xmlstream.connection_made(wire)
    xmlstream.data_received(SERVER_HEADER)
    stream = client.stream
    # XEP-0198 on, as start_sm() leaves it (as on Prosody: acks asked and answered)
    stream._sm_enabled, stream._sm_id, stream._sm_resumable, stream._sm_max, stream._sm_location = (
        True, "sm-1", True, None, None
    )
    stream._sm_outbound_base = stream._sm_inbound_ctr = 0
    stream._sm_unacked_list = []
    stream.start(xmlstream)
    client.established_event.set()
    session.muc.nicks[ROOM] = "me"  # joined: the router reads its groupchat messages
    d = Daemon(session, xmlstream, wire, events, listeners)
    await d.turns(1)  # the stanza loop runs
    return d


@contextlib.contextmanager
def errors_logged() -> Iterator[list[str]]:
    """What is logged at error level or above meanwhile, by minimix (structlog) or anyone."""
    found: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(f"{record.name}: {record.getMessage()}")

    handler = Catch(logging.ERROR)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with structlog.testing.capture_logs() as captured:
            yield found
    finally:
        root.removeHandler(handler)
    found += [f"minimix: {e['event']}" for e in captured if e["log_level"] in ("error", "critical", "exception")]


# -- checking what is written -------------------------------------------------------------------

NS_SEP = "\x01"


def expat_elements(data: bytes) -> list[tuple[str, dict[str, str]]]:
    """The elements of ``data`` (one document) as a namespace-aware expat reads it (as Prosody
    does, with the separator XML cannot contain); raises ExpatError if it is not well-formed."""
    parser = pyexpat.ParserCreate("utf-8", NS_SEP)
    seen: list[tuple[str, dict[str, str]]] = []
    parser.StartElementHandler = lambda name, attrs: seen.append((name, attrs))
    parser.Parse(data, True)
    return seen


def strict_tree(data: bytes) -> Any:
    """``data`` read by libxml2, which must find nothing wrong with it but a namespace that
    is no URI to it (<x xmlns='a b'/>: XML, and what Prosody and ejabberd forward)."""
    parser = lxml.etree.XMLParser(recover=True, huge_tree=True)
    tree = lxml.etree.fromstring(data, parser)
    complaints = [e for e in parser.error_log if e.type_name not in ("WAR_NS_URI", "WAR_NS_URI_RELATIVE")]
    if complaints and all(e.type_name == "ERR_RESOURCE_LIMIT" for e in complaints):
        # libxml2 2.14 (lxml 6) reads no deeper than 2,048 levels, even with huge_tree
        # (2.10, lxml 4.9, read them): there, expat, as the servers read it, is the check,
        # and it builds the tree (ElementTree reads with expat: no such limit).
        expat_elements(data)
        return xml.etree.ElementTree.fromstring(data)
    assert not complaints, complaints
    return tree


def written_stanzas(wire: Wire) -> list[Any]:
    """Everything the daemon wrote, as one stream, checked by both parsers; its stanzas."""
    document = bytes(wire.out) + b"</stream:stream>"
    expat_elements(document)
    return list(strict_tree(document))


# -- strategies: what the server forwards -------------------------------------------------------

# Characters XML 1.0 allows, weighted towards the awkward ones: bidi and zero-width controls,
# noncharacters that XML allows (U+FDD0), C1 controls, combining marks, astral characters.
AWKWARD = (
    "\u202e\u202d\u2066\u2067\u2068\u2069\u200b\u200c\u200d\u2060\ufeff\u00ad"
    "\ufdd0\ufdef\U0001fffe\U0010fffd\x80\x85\x9f\u0301\u0627\U0001f98a<>&'\"\t\n\r ]]>"
)
xml_chars = st.one_of(
    st.characters(min_codepoint=0x20, blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff"),
    st.sampled_from("\t\n\r"),
)
texts = st.text(st.one_of(xml_chars, st.sampled_from(AWKWARD)), max_size=40)
NAMESPACES = ("a b", "", "<&'\"", "a\nb", "a\tb", " ", "urn:x ", "http://x/?a=1&b=2", "\u202e", "jabber:client")
namespaces = st.one_of(st.sampled_from(NAMESPACES), texts)
LANGS = ("", "x", "!!", "en-US-x-", "-", "de", "en", "zh-Hant-TW", "a" * 300, "e\u0301n")
langs = st.one_of(st.sampled_from(LANGS), texts)
GARBAGE = ("", "garbage", "bad@@jid", "-1", "abc", "1e9", "99999999999999999999", "2026-13-45T99:99:99Z", "\u202e1")
values = st.one_of(st.sampled_from(GARBAGE), texts)


def attr(value: str) -> str:
    """An attribute value, escaped so that what is read back is ``value`` (tabs and newlines too)."""
    return quoteattr(value, {"\n": "&#10;", "\t": "&#9;", "\r": "&#13;"})


def text(value: str) -> str:
    return escape(value, {"\r": "&#13;"})


def nests(tag: str, depth: int, inner: str = "") -> str:
    return f"<{tag}>" * depth + inner + f"</{tag.split()[0]}>" * depth


LEAVES = st.one_of(
    st.builds(lambda n: f"<body>{'B' * n}</body>", st.sampled_from([65_536, 250_000])),  # Prosody: 256 KiB at most
    st.builds(lambda ns: f"<x xmlns={attr(ns)}/>", namespaces),
    st.builds(  # a prefix cannot be undeclared (xmlns:p=''): not namespace-well-formed
        lambda ns, v: f"<p:x xmlns:p={attr(ns)} p:a={attr(v)}><p:y/></p:x>", namespaces.filter(bool), values
    ),
    st.builds(lambda ns, t: f"<r xmlns='urn:example:r'><k xmlns={attr(ns)}>{text(t)}</k><k/></r>", namespaces, texts),
    st.builds(lambda t, lang: f"<body xml:lang={attr(lang)}>{text(t)}</body>", texts, langs),
    st.builds(lambda t: f"<subject>{text(t)}</subject>", texts),
    st.builds(lambda v: f"<status>{text(v)}</status><show>{text(v)}</show><priority>{text(v)}</priority>", values),
    st.builds(lambda v: f"<delay xmlns='urn:xmpp:delay' stamp={attr(v)}/>", values),
    st.builds(lambda v: f"<stanza-id xmlns='urn:xmpp:sid:0' by={attr(v)}/>", st.one_of(values, st.just(ROOM))),
    st.builds(lambda v: f"<origin-id xmlns='urn:xmpp:sid:0' id={attr(v)}/><origin-id xmlns='urn:xmpp:sid:0'/>", values),
    st.builds(
        lambda j, a, code: (
            f"<x xmlns='http://jabber.org/protocol/muc#user'><item jid={attr(j)} affiliation={attr(a)} "
            f"role={attr(a)} nick={attr(j)}><actor jid={attr(j)}/><reason>{text(a)}</reason></item>"
            f"<status code={attr(code)}/><status code='110'/><destroy jid={attr(j)}/></x>"
        ),
        values, values, values,
    ),
    st.builds(lambda v: f"<reply xmlns='urn:xmpp:reply:0' id={attr(v)} to={attr(v)}/>", values),
    st.builds(
        lambda a, b: (
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'>"
            f"<body start={attr(a)} end={attr(b)}/></fallback>"
        ),
        values, values,
    ),
    st.builds(lambda v: f"<received xmlns='urn:xmpp:receipts' id={attr(v)}/><request xmlns='urn:xmpp:receipts'/>", values),
    st.builds(
        lambda v: (
            f"<error type={attr(v)}><bogus xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
            f"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{text(v)}</text></error>"
        ),
        values,
    ),
    st.builds(lambda n: nests("a xmlns='urn:example:deep'", n), st.sampled_from([1, 255, 256, 257, 1000, 3000])),
    st.builds(lambda lang, t: f"<thread xml:lang={attr(lang)} parent={attr(t)}>{text(t)}</thread>", langs, texts),
    st.builds(
        lambda v: (
            f"<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:bookmarks:1'>"
            f"<item id={attr(v)}><conference xmlns='urn:xmpp:bookmarks:1' autojoin={attr(v)}><nick>{text(v)}</nick>"
            f"<x xmlns='a b'/></conference></item></items></event>"
        ),
        values,
    ),
)


def _nested_forwards(n: int) -> str:
    """A message forwarded in a message forwarded in… ``n`` times (a parser recursing per XSO)."""
    one = "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat'>"
    return one * n + "</message></forwarded>" * n


def wrapped(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Another stanza inside this one: forwarded, a carbon copy, an archive's result."""
    message = st.builds(
        lambda kind, frm, kids: (
            f"<message xmlns='jabber:client' type={attr(kind)} from={attr(frm)} id='in'>{''.join(kids)}</message>"
        ),
        st.sampled_from(["groupchat", "chat", "bogus"]),
        st.sampled_from([f"{ROOM}/bob", PHONE, STRANGER, "bad@@jid"]),
        st.lists(inner, max_size=3),
    )
    return st.one_of(
        st.builds(
            lambda m, v: f"<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp={attr(v)}/>{m}</forwarded>",
            message, values,
        ),
        st.builds(lambda m: f"<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{m}</forwarded></received>", message),
        st.builds(
            lambda m, v: (
                f"<result xmlns='urn:xmpp:mam:2' queryid={attr(v)} id={attr(v)}>"
                f"<forwarded xmlns='urn:xmpp:forward:0'>{m}</forwarded></result>"
            ),
            message, values,
        ),
        st.builds(_nested_forwards, st.sampled_from([1, 50, 400, 1200])),
    )


children = st.one_of(LEAVES, wrapped(st.one_of(LEAVES, wrapped(LEAVES))))


SENDERS = {
    "stranger": STRANGER,
    "occupant": f"{ROOM}/bob",
    "room": ROOM,
    "own client": PHONE,
    "own account": ME,
    "server": "example.org",
}
def _prepared_nick(nick: str) -> str | None:
    try:
        return aioxmpp.JID.fromstr(ROOM).replace(resource=nick).resource or None
    except ValueError:
        return None


AWKWARD_NICKS = ("bob", "Zoë ünïcödé", "e\u0301", "\U0001f98a", "a b", "<&'\">", "\u0627\u0644", "\u202bx", "n" * 1023)
nicks = st.one_of(
    st.sampled_from([n for n in map(_prepared_nick, AWKWARD_NICKS) if n]),
    texts.map(_prepared_nick).filter(lambda n: n is not None),
)


@dataclass(frozen=True)
class Stanza:
    kind: str  # message, presence, iq
    type_: str | None
    sender: str
    id_: str
    xml: str

    @property
    def from_room(self) -> bool:
        return self.sender.split("/")[0] == ROOM and "/" in self.sender


TYPES = {
    "message": [None, "chat", "groupchat", "normal", "headline", "error", "bogus", ""],
    "presence": [None, "unavailable", "error", "subscribe", "probe", "bogus"],
    "iq": ["get", "set", "result", "error", "bogus"],
}


@st.composite
def stanzas(draw: st.DrawFn) -> Stanza:
    kind = draw(st.sampled_from(sorted(TYPES)))
    type_ = draw(st.sampled_from(TYPES[kind]))
    who = draw(st.sampled_from(sorted(SENDERS)))
    sender = SENDERS[who]
    if who == "occupant":
        sender = f"{ROOM}/{draw(nicks)}"
    id_ = draw(st.one_of(st.sampled_from(["h1", ""]), texts))
    if kind == "iq" and not id_:  # RFC 6120 §8.1.3: servers bounce an IQ without one
        id_ = "iq"
    lang = draw(st.one_of(st.none(), langs))
    kids = draw(st.lists(children, max_size=4))
    if kind == "message" and draw(st.booleans()):
        kids.insert(draw(st.integers(0, len(kids))), f"<body>{text(draw(texts))}</body>")
    if kind == "iq" and type_ in ("get", "set"):
        kids = [draw(st.sampled_from([
            f"<query xmlns='jabber:iq:version'>{''.join(kids)}</query>",
            f"<ping xmlns='urn:xmpp:ping'>{''.join(kids)}</ping>",
            f"<query xmlns='http://jabber.org/protocol/disco#info' node={attr(draw(values))}/>",
            f"<command xmlns='http://jabber.org/protocol/commands' node={attr(draw(st.sampled_from(['say', 'relay', 'join', 'bogus'])))} "
            f"action={attr(draw(values))} sessionid={attr(draw(values))}><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='room'><value>{text(draw(texts))}</value></field><field var='text'><value>{text(draw(texts))}</value></field>"
            f"<field var='mode'><value>{text(draw(values))}</value></field></x>{''.join(kids)}</command>",
            "".join(kids) or "<x xmlns='a b'/>",
        ]))]
    return stanza(kind, type_, sender, id_, "".join(kids), lang)


def stanza(kind: str, type_: str | None, sender: str, id_: str, inner: str, lang: str | None = None) -> Stanza:
    type_attr = f" type={attr(type_)}" if type_ is not None else ""
    lang_attr = f" xml:lang={attr(lang)}" if lang is not None else ""
    xml = f"<{kind} from={attr(sender)} to='{DAEMON}' id={attr(id_)}{type_attr}{lang_attr}>{inner}</{kind}>"
    return Stanza(kind, type_, sender, id_, xml)
