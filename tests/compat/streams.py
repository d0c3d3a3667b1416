"""What the compat tests share: a real XMLStream fed bytes as a server's arrive, a stanza
stream with the fast paths' hooks, a TLS transport with its socket mocked, and a client of
the test Prosody as the daemon makes it."""

from __future__ import annotations

import asyncio
import io
import random
import socket
import sys
from unittest import mock

import aioxmpp
import aioxmpp.connector
import aioxmpp.nonza
import aioxmpp.protocol
import aioxmpp.stream
import aioxmpp.xml

import minimix.xmpp  # noqa: F401  (applies the fixes and fast paths)
import minimix.xmpp.mam  # noqa: F401  (Message.xep0313_result)
import minimix.xmpp.xso  # noqa: F401  (Message.minimix_unknown: unknown children kept)
from minimix.xmpp import compat
from minimix.xmpp.account import security_layer

STREAM_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='s1' version='1.0'>\n"
)
ROOM = "room@muc.example.org"
SM_R = b"<r xmlns='urn:xmpp:sm:3'/>"
# A room's message with all the reader picks out: the body without xml:lang among two, the
# room's archive id among another's, the origin id, the room's delay, a child no XSO knows.
FAST = (
    b"<message from='room@muc.example.org/bob' to='me@example.org/mm' type='groupchat' id='f1' xml:lang='en'>"
    b"<body>hi &amp; \xc3\xbc</body><body xml:lang='de'>hallo</body>"
    b"<stanza-id xmlns='urn:xmpp:sid:0' by='other@example.org' id='nope'/>"
    b"<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example.org' id='S1'/>"
    b"<origin-id xmlns='urn:xmpp:sid:0' id='O1'/>"
    b"<delay xmlns='urn:xmpp:delay' from='room@muc.example.org' stamp='2026-01-02T03:04:05.5Z'/>"
    b"<reactions xmlns='urn:xmpp:reactions:0' id='x'><reaction>\xf0\x9f\x91\x8d</reaction></reactions></message>"
)
INNER = (
    b"<message xmlns='jabber:client' from='room@muc.example.org/bob' type='groupchat' id='m4'>"
    b"<body>old</body></message>"
)
ARCHIVED = (
    b"<message to='me@example.org/x' from='room@muc.example.org'><result xmlns='urn:xmpp:mam:2' queryid='q' id='A1'>"
    b"<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/>"
    + INNER
    + b"</forwarded></result></message>"
)


def fed(chunks) -> tuple[list[aioxmpp.Message], aioxmpp.protocol.XMLStream]:
    """Messages parsed by a real XMLStream fed ``chunks``, as a server's bytes arrive."""

    async def feed():
        future = asyncio.get_running_loop().create_future()
        xs = aioxmpp.protocol.XMLStream(to=aioxmpp.JID.fromstr("example.org"), features_future=future)
        got: list[aioxmpp.Message] = []
        xs.stanza_parser.add_class(aioxmpp.Message, got.append)
        xs.connection_made(mock.Mock())
        for chunk in chunks:
            xs.data_received(chunk)
        return got, xs

    return asyncio.run(feed())


def fed_stanzas(data: bytes) -> tuple[list, aioxmpp.protocol.XMLStream]:
    """Stanzas (and erroneous ones, with their errors) a real XMLStream reads from ``data``."""

    async def feed():
        xs = aioxmpp.protocol.XMLStream(to=aioxmpp.JID.fromstr("example.org"), features_future=asyncio.Future())
        got: list = []
        for cls in (aioxmpp.Message, aioxmpp.Presence, aioxmpp.IQ):
            xs.stanza_parser.add_class(cls, got.append)
        xs.error_handler = lambda partial, exc: got.append(exc)
        xs.connection_made(mock.Mock())
        xs.data_received(STREAM_HEADER + data)
        return got, xs

    return asyncio.run(feed())


def split(data: bytes, seed: int) -> list[bytes]:
    rng, out, i = random.Random(seed), [], 0
    while i < len(data):
        n = rng.randint(1, 40)
        out.append(data[i : i + n])
        i += n
    return out


def with_xmlns(raw: bytes) -> str:
    return raw.decode().replace("<message ", "<message xmlns='jabber:client' ", 1)


class HookedStream:
    """A stanza stream as far as the router asks: its hooks (``rooms`` None: no room hook;
    ``archives`` None: no archive hook)."""

    def __init__(self, rooms, archives=None):
        compat.set_hooks(self, compat.StreamHooks(
            rooms=rooms or frozenset(), on_room_stanza=None if rooms is None else (lambda stanza: None),
            archives=archives or frozenset(), on_archived=None if archives is None else (lambda stanza: None),
        ))  # fmt: skip


def hooked_stream(rooms, archives=None) -> tuple[aioxmpp.protocol.XMLStream, list]:
    """A real XMLStream (in a running loop) whose stanza stream has the router's hooks set,
    and the list it hands its stanzas to."""
    future = asyncio.get_running_loop().create_future()
    xs = aioxmpp.protocol.XMLStream(to=aioxmpp.JID.fromstr("example.org"), features_future=future)
    got: list = []
    for cls in (aioxmpp.Message, aioxmpp.nonza.SMRequest):
        xs.stanza_parser.add_class(cls, got.append)
    xs._minimix_stanza_stream = HookedStream(rooms, archives)
    xs.connection_made(mock.Mock())
    return xs, got


def routed(chunks, rooms=frozenset({ROOM}), archives=None):
    """What a real XMLStream fed ``chunks`` hands its stanza stream, with the router's hooks set."""

    async def feed():
        xs, got = hooked_stream(rooms, archives)
        for chunk in chunks:
            xs.data_received(chunk)
        return got, xs

    return asyncio.run(feed())


def python_calls(chunks, rooms, archives=None) -> int:
    """How many Python function calls parsing ``chunks`` (after the stream header) takes."""

    async def feed():
        xs, _ = hooked_stream(rooms, archives)
        xs.data_received(STREAM_HEADER)
        for chunk in chunks:  # warm: the JID and name caches filled
            xs.data_received(chunk)
        calls = 0

        def count(frame, event, arg):
            nonlocal calls
            calls += event == "call"

        sys.setprofile(count)
        try:
            for chunk in chunks:
                xs.data_received(chunk)
        finally:
            sys.setprofile(None)
        return calls

    return asyncio.run(feed())


def sm_stream(**hooks):
    """A stanza stream (mocked) with XEP-0198 on, 41 stanzas received, and ``hooks``."""
    stream = mock.Mock()
    stream._sm_enabled = True
    stream._sm_inbound_ctr = 41
    stream._incoming_queue = asyncio.Queue()
    compat.set_hooks(stream, compat.StreamHooks(**hooks))
    stream._xmlstream = xmlstream = mock.Mock()
    xmlstream.state = aioxmpp.protocol.State.OPEN
    return stream, xmlstream


def as_sent(xso):
    """What the stream writes for ``xso``, read back as aioxmpp's <a/>."""
    buf = io.BytesIO()
    gen = aioxmpp.xml.XMPPXMLGenerator(buf, short_empty_elements=True)
    xso.xso_serialise_to_sax(gen)
    gen.flush()
    return aioxmpp.xml.read_single_xso(io.BytesIO(buf.getvalue()), aioxmpp.nonza.SMAcknowledgement)


def open_tls_transport(sent_limit: int | None = None):
    """A STARTTLSTransport with TLS up, its socket and loop mocked."""
    import aioopenssl

    t = aioopenssl.STARTTLSTransport.__new__(aioopenssl.STARTTLSTransport)
    t._buffer = bytearray()
    t._state = aioopenssl._State.TLS_OPEN
    t._closing = False
    t._tls_read_wants_write = t._tls_write_wants_read = False
    t._raw_fd = 7
    t._loop = mock.Mock()
    t._send_wrap = mock.Mock()
    t._send_wrap.send.side_effect = lambda buf: len(buf) if sent_limit is None else min(sent_limit, len(buf))
    return t


def queued_stream(locked: bool = False):
    """A stanza stream, running, with one stanza queued for sending."""
    stream = aioxmpp.stream.StanzaStream(aioxmpp.JID.fromstr("me@example.org"))
    stream._xmlstream = xmlstream = mock.Mock()
    xmlstream.state = aioxmpp.protocol.State.OPEN
    stream._task = mock.Mock()
    stream._task.done.return_value = False
    token = aioxmpp.stream.StanzaToken(aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr("a@b/c")))
    stream._active_queue.put_nowait(token)
    if locked:
        stream._broker_lock._locked = True
    return stream, xmlstream, token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned_client(server, account) -> compat.MinimixClient:
    """A client of ``account`` on the test server, as the daemon makes it (pinned peer)."""
    return compat.MinimixClient(
        aioxmpp.JID.fromstr(f"{account.jid}/r"),
        security_layer(account.password, str(server.ca_file)),
        delay_for=lambda attempt: 0.1,
        override_peer=[(server.host, server.port, aioxmpp.connector.STARTTLSConnector())],
        pin_peer=True,
    )
