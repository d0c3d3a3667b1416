"""One test per aioxmpp patch in minimix.xmpp.compat: each shows the defect is still there in
aioxmpp 0.13.3 (so the patch is still needed) and that the patched behaviour is right."""

import asyncio
import contextlib
import datetime as dt
import io
import logging
import socket
import xml.sax.handler
from unittest import mock

import aioxmpp
import aioxmpp.bookmarks.xso as legacy_xso
import aioxmpp.nonza
import aioxmpp.presence.service
import aioxmpp.protocol
import aioxmpp.xml
import aioxmpp.xso
import lxml.etree
import OpenSSL.crypto
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import minimix.xmpp  # noqa: F401  (applies the patches)
import minimix.xmpp.mam  # noqa: F401  (Message.xep0313_result)
import minimix.xmpp.xso  # noqa: F401  (Message.minimix_unknown: unknown children kept)
from minimix import logging as minimix_logging
from minimix.xmpp import compat


def make_cert(*names: str, cn: str = "server") -> OpenSSL.crypto.X509:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    return OpenSSL.crypto.X509.from_cryptography(builder.sign(key, hashes.SHA256()))


# -- 1. TLS hostname check ------------------------------------------------------------------


def test_stock_hostname_check_is_broken_on_this_stack():
    with pytest.raises(AttributeError):
        compat.ORIGINAL_CHECK_X509_HOSTNAME(make_cert("localhost"), "localhost")


@pytest.mark.parametrize(
    ("names", "cn", "hostname", "ok"),
    [
        (("localhost", "conference.localhost"), "x", "localhost", True),
        (("localhost",), "x", "LOCALHOST.", True),
        (("localhost",), "x", "example.org", False),
        (("*.example.org",), "x", "chat.example.org", True),
        (("*.example.org",), "x", "a.chat.example.org", False),
        (("*.example.org",), "x", "example.org", False),
        ((), "localhost", "localhost", True),  # no SAN: fall back to the CN
        (("other.org",), "localhost", "localhost", False),  # SAN present: CN ignored
    ],
)
def test_patched_hostname_check(names, cn, hostname, ok):
    assert aioxmpp.security_layer.check_x509_hostname is compat.check_x509_hostname
    assert compat.check_x509_hostname(make_cert(*names, cn=cn), hostname) is ok


# -- 2. presence priority ---------------------------------------------------------------------


def test_presence_priority_is_sent():
    async def main():
        client = aioxmpp.Client(aioxmpp.JID.fromstr("a@localhost/r"), compat.security_layer("pw"))
        server = client.summon(aioxmpp.PresenceServer)
        server.set_presence(aioxmpp.PresenceState(True), priority=-1)
        return compat._orig_make_stanza(server).priority, server.make_stanza().priority

    stock, patched = asyncio.run(main())
    assert stock == 0  # the defect: set_presence(priority=-1) is not sent
    assert patched == -1


# -- 3. silent death on connection_lost(None) ------------------------------------------------------


def closing_exception(connection_lost) -> object:
    async def main():
        stream = aioxmpp.protocol.XMLStream(to=aioxmpp.JID.fromstr("localhost"), features_future=asyncio.Future())
        seen = []
        stream.on_closing.connect(seen.append)
        stream.connection_made(mock.Mock())
        connection_lost(stream, None)
        for _ in range(5):
            await asyncio.sleep(0)
        return seen

    return asyncio.run(main())


def test_transport_closed_without_exception_is_reported_as_failure():
    assert closing_exception(compat._orig_connection_lost) == [None]  # the defect: no failure
    (exc,) = closing_exception(aioxmpp.protocol.XMLStream.connection_lost)
    assert isinstance(exc, ConnectionError)


# -- 4. no stream content in the logs ----------------------------------------------------------


@pytest.fixture
def debug_log():
    """The daemon's log pipeline at debug level, into a string."""
    out = io.StringIO()
    minimix_logging.setup("debug", stream=out, mode="journal", env={})
    yield out
    minimix_logging.reset()


def test_stanzas_aioxmpp_logs_are_never_shown(debug_log):
    """The IQ's repr shows its payload (here an error text bob wrote)."""
    iq = aioxmpp.IQ(type_=aioxmpp.IQType.ERROR, error=aioxmpp.stanza.Error(text="what bob said"))
    assert "what bob said" in repr(iq)  # the defect
    for logger in ("aioxmpp.client.StanzaStream", "aioxmpp.StanzaStream", "aioxmpp.node.XMLStream"):
        logging.getLogger(logger).debug("incoming iq: %r", iq)
    assert "bob" not in debug_log.getvalue()
    assert debug_log.getvalue().count("incoming iq: <IQ>") == 3


def test_what_aioxmpps_parser_could_not_read_is_never_shown(debug_log):
    """aioxmpp.xso.model logs the attribute value and the exception quoting it."""
    message = b"<message xmlns='jabber:client'><delay xmlns='urn:xmpp:delay' stamp='what bob said'/></message>"
    with contextlib.suppress(aioxmpp.stanza.StanzaError):  # not the point here
        aioxmpp.xml.read_single_xso(io.BytesIO(message), aioxmpp.Message)
    assert "bob" not in debug_log.getvalue()
    assert debug_log.getvalue().splitlines()[0] == (
        "<7>while parsing XSO <class 'aioxmpp.misc.delay.Delay'> (<13 characters>) (ValueError) "
        "logger=aioxmpp.xso.model"
    )


# -- 7. lenient XEP-0048 parsing ---------------------------------------------------------------------

LEGACY = (
    b"<storage xmlns='storage:bookmarks'>"
    b"<conference jid='ok@conference.localhost' autojoin='true'><nick>al</nick></conference>"
    b"<conference jid='other@conference.localhost' autojoin='yes'/>"
    b"<conference autojoin='1'/>"
    b"</storage>"
)


def parse_legacy():
    return aioxmpp.xml.read_single_xso(io.BytesIO(LEGACY), legacy_xso.Storage)


def test_one_malformed_legacy_bookmark_does_not_lose_the_others():
    storage = parse_legacy()
    assert [(c.jid, c.autojoin) for c in storage.bookmarks] == [
        ("ok@conference.localhost", "true"),
        ("other@conference.localhost", "yes"),
        (None, "1"),
    ]


def test_stock_legacy_parsing_fails_on_one_bad_bookmark():
    autojoin, jid = compat.legacy_descriptor("autojoin"), compat.legacy_descriptor("jid")
    saved = [(d, d.type_, d.default) for d in (autojoin, jid)]
    autojoin.type_, autojoin.default = aioxmpp.xso.Bool(), False  # as in aioxmpp 0.13.3
    jid.type_, jid.default = aioxmpp.xso.JID(), aioxmpp.xso.model._PropBase.NO_DEFAULT
    try:
        with pytest.raises(ValueError):
            parse_legacy()
    finally:
        for descriptor, type_, default in saved:
            descriptor.type_, descriptor.default = type_, default
    assert parse_legacy() is not None


# -- 5 and 6 against a real server: TCP_NODELAY, and the reconnect loop ---------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned_client(prosody, account) -> compat.MinimixClient:
    """A client of `account` on the test Prosody, as the daemon makes it (pinned peer)."""
    return compat.MinimixClient(
        aioxmpp.JID.fromstr(f"{account.jid}/r"),
        compat.security_layer(account.password, str(prosody.ca_file)),
        delay_for=lambda attempt: 0.1,
        override_peer=[(prosody.host, prosody.port, aioxmpp.connector.STARTTLSConnector())],
        pin_peer=True,
    )


def test_reconnect_loop_is_pinned_jittered_and_never_gives_up():
    """aioxmpp gives up after 4 initial attempts and falls back to SRV: ours does neither."""
    port = free_port()
    failures: list[tuple[str, float]] = []

    async def main():
        delays = iter([0.01 * n for n in range(1, 100)])
        client = compat.MinimixClient(
            aioxmpp.JID.fromstr("nobody@localhost/r"),
            compat.security_layer("pw"),
            delay_for=lambda attempt: next(delays),
            override_peer=[("127.0.0.1", port, aioxmpp.connector.STARTTLSConnector())],
            pin_peer=True,
        )
        client.on_connect_failed.connect(lambda exc, delay: failures.append((str(exc), delay)))
        client.start()
        while len(failures) < 6 and client.running:
            await asyncio.sleep(0.01)
        running = client.running
        client.stop()
        return running

    assert asyncio.run(asyncio.wait_for(main(), 20))
    assert len(failures) >= 6  # still trying after aioxmpp's 4 initial attempts
    assert all(f"127.0.0.1:{port}" in error for error, _ in failures)  # only the configured peer
    assert [d for _, d in failures[:3]] == [0.01, 0.02, 0.03]  # the delays we gave it


@pytest.mark.integration
def test_nodelay_is_set_after_the_stream_is_up(prosody):
    account = prosody.new_account()

    async def main():
        client = pinned_client(prosody, account)
        async with client.connected():
            sock = client.stream._xmlstream.transport.get_extra_info("socket")
            before = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert compat.set_nodelay(client)
            after = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        return before, after

    before, after = asyncio.run(asyncio.wait_for(main(), 30))
    assert before == 0  # the defect: aioopenssl leaves Nagle on
    assert after == 1


# -- 8. memoised stringprep ---------------------------------------------------------------------


def test_jid_preparation_is_memoised():
    import aioxmpp.structs

    for name in compat.PREP_FUNCTIONS:
        assert hasattr(getattr(aioxmpp.structs, name), "cache_info"), name
    aioxmpp.structs.resourceprep.cache_clear()
    compat.jid_from_string.cache_clear()
    for _ in range(3):
        jid = aioxmpp.JID.fromstr("Room@Conference.Example.org/Ünïcode Nick")
    assert aioxmpp.JID.fromstr("Room@Conference.Example.org/Ünïcode Nick", strict=False) == jid
    info = aioxmpp.structs.resourceprep.cache_info()
    assert (info.misses, info.hits) == (2, 0)  # once per strictness: the JID is reused after
    info = compat.jid_from_string.cache_info()
    assert (info.misses, info.hits) == (2, 2)
    assert jid == aioxmpp.JID("room", "conference.example.org", "Ünïcode Nick")
    assert aioxmpp.JID.fromstr("a@b/c") is aioxmpp.JID.fromstr("a@b/c")
    with pytest.raises(ValueError):  # errors are still errors (and not cached as results)
        aioxmpp.JID.fromstr("a@b/\u0000")



def test_xml_name_validation_is_memoised_and_still_validates():
    import aioxmpp.xml

    check = aioxmpp.xml.xmlValidateNameValue_str
    assert hasattr(check, "cache_info")
    check.cache_clear()
    message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr("a@b/c"))
    message.body[None] = "hi"
    for _ in range(3):
        aioxmpp.xml.serialize_single_xso(message)
    info = check.cache_info()
    assert info.hits > info.misses > 0  # the second and third time: from the cache
    for name, valid in [("message", True), ("x-y.z_1", True), ("1abc", False), ("a b", False), ("", False)]:
        assert check(name) is valid, name
    generator = aioxmpp.xml.XMPPXMLGenerator(io.BytesIO(), short_empty_elements=True)
    generator.startDocument()
    with pytest.raises(ValueError):
        generator.startElementNS(("urn:x", "bad name"), None, {})


# -- 9. ack requests coalesced ----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("stock", [True, False], ids=["stock", "patched"])
def test_ack_requests_are_coalesced(prosody, stock, monkeypatch):
    """Stock aioxmpp sends an XEP-0198 <r/> after every batch of stanzas; ours at most one
    per SM_REQUEST_INTERVAL_S (each <r/> costs an <a/> and, with Nagle, a 40 ms stall)."""
    import aioxmpp.nonza
    import aioxmpp.stream

    if stock:
        monkeypatch.setattr(aioxmpp.stream.StanzaStream, "_process_outgoing", compat._orig_process_outgoing)
    account = prosody.new_account()

    async def main():
        client = pinned_client(prosody, account)
        async with client.connected():
            xmlstream = client.stream._xmlstream
            sent = []
            original = xmlstream.send_xso
            xmlstream.send_xso = lambda x: (sent.append(type(x)), original(x))[1]
            for n in range(20):  # 20 separate batches, one loop turn each
                msg = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=client.local_jid)
                msg.body[None] = f"{n}"
                client.enqueue(msg)
                await asyncio.sleep(0.001)
            await asyncio.sleep(compat.SM_REQUEST_INTERVAL_S * 2)
            xmlstream.send_xso = original
            return sent.count(aioxmpp.nonza.SMRequest), client.stream.sm_unacked_list

    requests, unacked = asyncio.run(asyncio.wait_for(main(), 30))
    if stock:
        assert requests >= 20  # the defect: one per batch
    else:
        assert 1 <= requests <= 3
    assert unacked == []  # acknowledged in the end either way


# -- 10. <failed/> without a condition ----------------------------------------------------------

FAILED_WITHOUT_CONDITION = b"<failed xmlns='urn:xmpp:sm:3' h='17' previd='abc'/>"


def test_sm_failed_without_condition_is_read():
    import aioxmpp.nonza

    failed = aioxmpp.xml.read_single_xso(io.BytesIO(FAILED_WITHOUT_CONDITION), aioxmpp.nonza.SMFailed)
    assert failed.counter == 17


def test_stock_sm_failed_needs_a_condition(monkeypatch):
    import aioxmpp.nonza
    from aioxmpp.xso.model import _PropBase

    monkeypatch.setattr(aioxmpp.nonza.SMFailed.condition.xq_descriptor, "default", _PropBase.NO_DEFAULT)
    with pytest.raises(ValueError):
        aioxmpp.xml.read_single_xso(io.BytesIO(FAILED_WITHOUT_CONDITION), aioxmpp.nonza.SMFailed)


# -- 4b. stop noise: aioxmpp's futures of aborted stanzas ----------------------------------


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("stanza aborted"), aioxmpp.stream.DestructionRequested("stop"), ConnectionError("gone")],
)
def test_futures_of_stanzas_aborted_by_a_stop_are_not_errors(exc):
    """An IQ in flight when the daemon stops (a room archive query, say): its waiting task
    is cancelled, aioxmpp fails the IQ's future and asyncio logs "Future exception was never
    retrieved" at ERROR on every such stop.  It goes to DEBUG."""
    record = logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, "Future exception was never retrieved\nfuture: %r",
        ("<Future>",), (type(exc), exc, None),
    )
    assert not compat._Demote().filter(record) or logging.getLogger().isEnabledFor(logging.DEBUG)
    assert record.levelno == logging.DEBUG


def test_other_unretrieved_future_exceptions_stay_errors():
    exc = RuntimeError("something else")
    record = logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, "Future exception was never retrieved", (),
        (type(exc), exc, None),
    )
    assert compat._Demote().filter(record)
    assert record.levelno == logging.ERROR


# -- 11. the text a message arrived as ------------------------------------------------------------

STREAM_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='s1' version='1.0'>\n"
)
LIVE = (
    b"<message from='room@muc.example.org/bob' type='groupchat' id='m1'>"
    b"<body>a &lt;b&gt; &amp; \xc3\xbc</body><reactions xmlns='urn:xmpp:reactions:0' id='x'/></message>"
)
EMPTY = b"<message from='room@muc.example.org/al' type='groupchat' id='m2'/>"
DECLARED = b"<message xmlns='jabber:client' from='room@muc.example.org/al' type='groupchat' id='m3'><body>x</body></message>"
INNER = b"<message xmlns='jabber:client' from='room@muc.example.org/bob' type='groupchat' id='m4'><body>old</body></message>"
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


def split(data: bytes, seed: int) -> list[bytes]:
    import random

    rng, out, i = random.Random(seed), [], 0
    while i < len(data):
        n = rng.randint(1, 40)
        out.append(data[i : i + n])
        i += n
    return out


def with_xmlns(raw: bytes) -> str:
    return raw.decode().replace("<message ", "<message xmlns='jabber:client' ", 1)


@pytest.mark.parametrize("seed", range(20))
def test_messages_keep_the_text_they_arrived_as(seed):
    data = STREAM_HEADER + LIVE + b" " + EMPTY + DECLARED + ARCHIVED
    (live, empty, declared, archived), xs = fed(split(data, seed))
    assert compat.raw_message(live) == with_xmlns(LIVE)  # byte for byte, escapes and all
    assert compat.raw_message(empty) is None  # nothing to forward: serialised if ever asked
    assert compat.raw_message(declared) == DECLARED.decode()  # not declared twice
    inner = archived.xep0313_result.forwarded.stanza
    sid = "<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example.org' id='A1'/>"
    assert compat.raw_message(inner, sid) == INNER.decode().replace("</message>", sid + "</message>")
    assert len(xs._minimix_rx.data) < 20  # nothing held once the stanzas are complete


def test_stock_messages_keep_no_text(monkeypatch):
    """Without the patch a message is only its XSO: the text must be serialised again (the
    cost the patch removes), and it is not what arrived."""
    monkeypatch.setattr(aioxmpp.protocol.XMLStream, "_rx_feed", compat._orig_rx_feed)
    (live,), _ = fed([STREAM_HEADER + LIVE])
    assert compat.raw_message(live) is None
    assert aioxmpp.xml.serialize_single_xso(live).encode() != with_xmlns(LIVE).encode()


def test_text_that_is_not_a_plain_message_is_not_used():
    """Kept text is checked before it is forwarded: it must be a well-formed jabber:client
    message with the parsed one's id, else the daemon serialises the XSO instead."""
    prefixed = b"<c:message xmlns:c='jabber:client' from='room@muc.example.org/x' type='groupchat' id='p'><c:body>y</c:body></c:message>"
    (message,), _ = fed([STREAM_HEADER + prefixed])
    assert compat.raw_message(message) is None
    (other,), _ = fed([STREAM_HEADER + LIVE])
    raw, end = compat._raw_texts[other]
    compat._raw_texts[other] = (raw.replace(b"id='m1'", b"id='zz'"), end)
    assert compat.raw_message(other) is None
    compat._raw_texts[other] = (raw, end)
    assert compat.raw_message(other, "<unclosed>") is None


# -- 12. every write waits for the next turn of the loop --------------------------------------------


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


def test_a_write_goes_out_at_once():
    t = open_tls_transport()
    t.write(b"<message/>")
    t._send_wrap.send.assert_called_once()
    assert t._buffer == b"" and not t._loop.add_writer.called


def test_what_the_socket_does_not_take_waits_for_the_writer():
    t = open_tls_transport(sent_limit=3)
    t.write(b"<message/>")
    assert t._buffer == b"ssage/>"
    t._loop.add_writer.assert_called_once_with(7, t._write_ready)
    t.write(b"<r/>")  # queued behind it, in order
    assert t._buffer == b"ssage/><r/>" and t._send_wrap.send.call_count == 1


def test_stock_write_waits_for_the_next_turn(monkeypatch):
    import aioopenssl

    monkeypatch.setattr(aioopenssl.STARTTLSTransport, "write", compat._orig_tls_write)
    t = open_tls_transport()
    t.write(b"<message/>")
    assert not t._send_wrap.send.called and t._buffer == b"<message/>"
    t._loop.add_writer.assert_called_once()


def test_a_reset_during_the_tls_close_is_not_an_error():
    """A server that resets the connection while minimix closes it (after a refused login,
    once writes go out at once): asyncio's traceback goes to DEBUG."""
    import OpenSSL.SSL

    exc = OpenSSL.SSL.SysCallError(104, "ECONNRESET")
    record = logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, "Fatal error on tls shutdown\nprotocol: %r", ("<p>",),
        (type(exc), exc, None),
    )
    compat._Demote().filter(record)
    assert record.levelno == logging.DEBUG


def test_stanzas_sent_in_one_go_are_written_together():
    t = open_tls_transport()
    with compat.corked(t):
        t.write(b"<message id='1'/>")
        t.write(b"<message id='2'/>")
        t.write(b"<r xmlns='urn:xmpp:sm:3'/>")
        assert not t._send_wrap.send.called
    t._send_wrap.send.assert_called_once()
    assert t._buffer == b"" and not t._loop.add_writer.called


# -- 13. one turn of the stanza loop per received stanza ----------------------------------------


def test_received_stanzas_are_taken_together_in_order():
    stream = mock.Mock()
    stream._incoming_queue = asyncio.Queue()
    for i in range(2, 5):
        stream._incoming_queue.put_nowait((f"s{i}", None))
    seen = []
    with mock.patch.object(compat, "_orig_process_incoming", lambda self, xs, entry: seen.append(entry[0])):
        compat._process_incoming(stream, None, ("s1", None))
    assert seen == ["s1", "s2", "s3", "s4"] and stream._incoming_queue.empty()


def test_received_stanzas_are_taken_at_most_a_batch_at_a_time():
    stream = mock.Mock()
    stream._incoming_queue = asyncio.Queue()
    for i in range(compat.INCOMING_BATCH + 5):
        stream._incoming_queue.put_nowait((i, None))
    seen = []
    with mock.patch.object(compat, "_orig_process_incoming", lambda self, xs, entry: seen.append(entry[0])):
        compat._process_incoming(stream, None, stream._incoming_queue.get_nowait())
    assert seen == list(range(compat.INCOMING_BATCH)) and stream._incoming_queue.qsize() == 5


def test_stock_stanza_loop_takes_one_received_stanza_per_turn():
    import aioxmpp.stream

    stream = mock.Mock()
    stream._sm_enabled = False
    stream._incoming_queue = asyncio.Queue()
    stream._incoming_queue.put_nowait(("s2", None))
    compat._orig_process_incoming(stream, None, (aioxmpp.Message(type_=aioxmpp.MessageType.CHAT), None))
    assert stream._incoming_queue.qsize() == 1  # left for the next turn
    assert aioxmpp.stream.StanzaStream._process_incoming is compat._process_incoming


def as_sent(xso):
    """What the stream writes for ``xso``, read back as aioxmpp's <a/>."""
    import aioxmpp.nonza

    buf = io.BytesIO()
    gen = aioxmpp.xml.XMPPXMLGenerator(buf, short_empty_elements=True)
    xso.xso_serialise_to_sax(gen)
    gen.flush()
    return aioxmpp.xml.read_single_xso(io.BytesIO(buf.getvalue()), aioxmpp.nonza.SMAcknowledgement)


def sm_stream():
    stream = mock.Mock()
    stream._sm_enabled = True
    stream._sm_inbound_ctr = 41
    stream._incoming_queue = asyncio.Queue()
    stream._minimix_ack_answer = None
    stream._xmlstream = xmlstream = mock.Mock()
    xmlstream.state = aioxmpp.protocol.State.OPEN
    return stream, xmlstream


def test_the_servers_ack_request_is_answered_at_once_as_text():
    """The same <a h=…/> aioxmpp sends, at the same moment (in order with the stanzas taken
    in the same turn), without building and serialising an XSO."""
    import aioxmpp.nonza

    stream, xmlstream = sm_stream()
    stream._incoming_queue.put_nowait((aioxmpp.nonza.SMRequest(), None))
    stream._incoming_queue.put_nowait(("another stanza", None))
    seen = []

    def handled(self, xs, entry):
        seen.append(entry[0])
        self._sm_inbound_ctr += 1

    with mock.patch.object(compat, "_orig_process_incoming", handled):
        compat._process_incoming(stream, xmlstream, ("a room message", None))
    assert seen == ["a room message", "another stanza"]
    (answer,), _ = xmlstream.send_xso.call_args
    assert as_sent(answer).counter == 42  # the count when the <r/> was taken


def test_stock_stanza_loop_answers_the_ack_request_at_once():
    import aioxmpp.nonza

    stream, xmlstream = sm_stream()
    compat._orig_process_incoming(stream, xmlstream, (aioxmpp.nonza.SMRequest(), None))
    (answer,), _ = xmlstream.send_xso.call_args
    assert answer.counter == 41


# -- 15. four layers of Python and an XSO for every room message --------------------------------

ROOM = "room@muc.example.org"
FAST = (
    b"<message from='room@muc.example.org/bob' to='me@example.org/mm' type='groupchat' id='f1' xml:lang='en'>"
    b"<body>hi &amp; \xc3\xbc</body><body xml:lang='de'>hallo</body>"
    b"<stanza-id xmlns='urn:xmpp:sid:0' by='other@example.org' id='nope'/>"
    b"<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example.org' id='S1'/>"
    b"<origin-id xmlns='urn:xmpp:sid:0' id='O1'/>"
    b"<delay xmlns='urn:xmpp:delay' from='room@muc.example.org' stamp='2026-01-02T03:04:05.5Z'/>"
    b"<reactions xmlns='urn:xmpp:reactions:0' id='x'><reaction>\xf0\x9f\x91\x8d</reaction></reactions></message>"
)
SM_R = b"<r xmlns='urn:xmpp:sm:3'/>"
SUBJECT = b"<message from='room@muc.example.org/al' type='groupchat' id='f2'><subject>news</subject></message>"
CLEARED = b"<message from='room@muc.example.org/al' type='groupchat' id='f3'><subject/></message>"
BARE = b"<message from='room@muc.example.org/al' type='groupchat' id='f4'/>"
ELSEWHERE = b"<message from='other@muc.example.org/al' type='groupchat' id='s1'><body>x</body></message>"
PM = b"<message from='room@muc.example.org/al' type='chat' id='s2'><body>psst</body></message>"
PREFIXED = (
    b"<c:message xmlns:c='jabber:client' from='room@muc.example.org/al' type='groupchat' id='s3'>"
    b"<c:body>y</c:body></c:message>"
)
AFTER = b"<message from='room@muc.example.org/al' type='groupchat' id='f5'><body>last</body></message>"


class _HookedStream:
    """What patch 15 asks of the stanza stream: the rooms and their hook, and the archives
    being queried and theirs (None: no hook)."""

    def __init__(self, rooms, archives=None):
        self.minimix_rooms = rooms
        self.minimix_room_stanza = lambda stanza: None
        if archives is not None:
            self.minimix_archives = archives
            self.minimix_archived = lambda stanza: None


def hooked_stream(rooms, archives=None) -> tuple[aioxmpp.protocol.XMLStream, list]:
    """A real XMLStream (in a running loop) whose stanza stream has patch 15's hook set
    (``rooms`` None: no hook), and the list it hands its stanzas to."""
    future = asyncio.get_running_loop().create_future()
    xs = aioxmpp.protocol.XMLStream(to=aioxmpp.JID.fromstr("example.org"), features_future=future)
    got: list = []
    for cls in (aioxmpp.Message, aioxmpp.nonza.SMRequest):
        xs.stanza_parser.add_class(cls, got.append)
    xs._minimix_stanza_stream = _HookedStream(rooms, archives)
    xs.connection_made(mock.Mock())
    return xs, got


def routed(chunks, rooms=frozenset({ROOM}), archives=None):
    """What a real XMLStream fed ``chunks`` hands its stanza stream, with patch 15's hooks set."""

    async def feed():
        xs, got = hooked_stream(rooms, archives)
        for chunk in chunks:
            xs.data_received(chunk)
        return got, xs

    return asyncio.run(feed())


@pytest.mark.parametrize("seed", range(20))
def test_room_messages_are_read_without_xsos(seed):
    data = STREAM_HEADER + FAST + SM_R + b"\n" + SUBJECT + CLEARED + BARE + ELSEWHERE + PM + PREFIXED + ARCHIVED + AFTER
    got, xs = routed(split(data, seed))
    fast, r, subject, cleared, bare, elsewhere, pm, prefixed, archived, after = got
    assert fast == compat.RoomStanza(
        ROOM, "bob", "f1", "hi & ü", None, False, "S1", "O1",
        dt.datetime(2026, 1, 2, 3, 4, 5, 500000, dt.UTC).timestamp(), with_xmlns(FAST),
    )  # fmt: skip
    assert isinstance(r, aioxmpp.nonza.SMRequest)
    assert (subject.subject, subject.has_subject, subject.body) == ("news", True, None)
    assert (cleared.subject, cleared.has_subject) == (None, True)
    assert bare == compat.RoomStanza(ROOM, "al", "f4", None, None, False, None, None, None, None)
    # not a listed room's groupchat at the top level: parsed as before
    for stanza in (elsewhere, pm, prefixed, archived):
        assert isinstance(stanza, aioxmpp.Message)
    assert archived.xep0313_result.forwarded.stanza.body.any() == "old"  # nested: never taken
    assert compat.raw_message(archived.xep0313_result.forwarded.stanza) == INNER.decode()
    assert after.body == "last" and after.text == with_xmlns(AFTER)  # the parser's state is intact
    assert len(xs._minimix_rx.data) < 20  # nothing held once the stanzas are complete


def test_without_the_hook_room_messages_are_xsos():
    got, _ = routed([STREAM_HEADER + FAST + AFTER], rooms=None)
    assert all(isinstance(m, aioxmpp.Message) for m in got)
    got, _ = routed([STREAM_HEADER + ELSEWHERE], rooms=frozenset())
    assert isinstance(got[0], aioxmpp.Message)


def python_calls(chunks, rooms, archives=None) -> int:
    """How many Python function calls parsing ``chunks`` (after the stream header) takes."""
    import sys

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


def test_a_room_message_costs_a_fraction_of_the_xso_parse():
    """The cost the patch removes, counted in Python calls (not timed): the four layers per
    SAX event and the XSO build, for a room message and the <r/> after it."""
    fast = python_calls([FAST + SM_R], frozenset({ROOM}))
    stock = python_calls([FAST + SM_R], None)
    assert fast * 5 < stock, (fast, stock)


def test_a_room_stanza_is_counted_and_goes_to_the_hook():
    stream, xmlstream = sm_stream()
    taken = []
    stream.minimix_room_stanza = taken.append
    stanza = compat.RoomStanza(ROOM, "al", "f4", "x", None, False, None, None, None, "<message/>")
    compat._process_incoming(stream, xmlstream, (stanza, None))
    assert taken == [stanza] and stream._sm_inbound_ctr == 42


def test_a_failing_hook_costs_the_stanza_not_the_stream(caplog):
    stream, xmlstream = sm_stream()
    stream.minimix_room_stanza = mock.Mock(side_effect=RuntimeError("bug"))
    stanza = compat.RoomStanza(ROOM, "al", "f4", "x", None, False, None, None, None, "<message/>")
    compat._process_incoming(stream, xmlstream, (stanza, None))  # does not raise
    assert stream._sm_inbound_ctr == 42


# -- 16. a relay waits two more turns of the loop ---------------------------------------------------


def test_the_daemon_handles_what_was_taken_before_the_ack_answer():
    """The hook runs before an <r/> is answered (so what the daemon sends for the stanzas
    before it goes first) and once at the end of what was taken in one go."""
    stream, xmlstream = sm_stream()
    seen = []
    stream.minimix_stanzas_taken = lambda: seen.append("hook")
    xmlstream.send_xso.side_effect = lambda xso: seen.append(f"answer {as_sent(xso).counter}")
    stream._incoming_queue.put_nowait((aioxmpp.nonza.SMRequest(), None))
    stream._incoming_queue.put_nowait(("another stanza", None))

    def handled(self, xs, entry):
        seen.append(entry[0])
        self._sm_inbound_ctr += 1

    with mock.patch.object(compat, "_orig_process_incoming", handled):
        compat._process_incoming(stream, xmlstream, ("a room message", None))
    assert seen == ["a room message", "hook", "answer 42", "another stanza", "hook"]


def test_a_failing_hook_does_not_stop_the_stream():
    stream, xmlstream = sm_stream()
    stream.minimix_stanzas_taken = mock.Mock(side_effect=RuntimeError("bug"))
    with mock.patch.object(compat, "_orig_process_incoming", lambda *a: None):
        compat._process_incoming(stream, xmlstream, ("a stanza", None))  # does not raise
    assert stream._minimix_taking is False


def queued_stream(locked: bool = False):
    """A stanza stream, running, with one stanza queued for sending."""
    stream = aioxmpp.stream.StanzaStream(aioxmpp.JID.fromstr("me@example.org"))
    stream._xmlstream = xmlstream = mock.Mock()
    stream._task = mock.Mock()
    stream._task.done.return_value = False
    token = aioxmpp.stream.StanzaToken(aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr("a@b/c")))
    stream._active_queue.put_nowait(token)
    if locked:
        stream._broker_lock._locked = True
    return stream, xmlstream, token


def test_what_the_daemon_queued_is_written_at_once():
    async def run():
        stream, xmlstream, token = queued_stream()
        compat.send_queued(stream)
        assert xmlstream.send_xso.call_args_list[0].args[0] is token.stanza
        assert stream._active_queue.empty() and token.state == aioxmpp.stream.StanzaState.SENT_WITHOUT_SM

    asyncio.run(run())


def test_nothing_is_written_while_a_negotiation_holds_the_stream():
    async def run():
        stream, xmlstream, token = queued_stream(locked=True)
        compat.send_queued(stream)
        assert not xmlstream.send_xso.called and len(stream._active_queue) == 1
        stream._minimix_taking = True  # inside the stanza loop's own turn: it holds the lock
        compat.send_queued(stream)
        assert stream._active_queue.empty()

    asyncio.run(run())


def test_stock_stanzas_wait_for_the_loops_next_turn():
    """Without the patch a queued stanza goes out only when the stanza loop's task runs."""

    async def run():
        stream, xmlstream, token = queued_stream()
        stream._task.done.return_value = True  # not running: send_queued leaves it too
        compat.send_queued(stream)
        assert not xmlstream.send_xso.called and len(stream._active_queue) == 1

    asyncio.run(run())


NOT_A_RESULT = (
    b"<message from='room@muc.example.org' to='me@example.org/x' id='n1'>"
    b"<x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>"
)


def archive_results(chunks, archives=frozenset({ROOM})):
    return routed(chunks, frozenset(), archives)


@pytest.mark.parametrize("seed", range(10))
def test_archive_results_are_read_without_xsos(seed):
    got, xs = archive_results(split(STREAM_HEADER + ARCHIVED + NOT_A_RESULT + SM_R + ARCHIVED, seed))
    archived, other, r, again = got
    assert isinstance(archived, compat.ArchivedStanza) and again == archived
    assert (archived.archive, archived.queryid, archived.id_) == (ROOM, "q", "A1")
    assert archived.stamp == dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    inner = archived.message
    assert (inner.room, inner.nick, inner.id_, inner.body, inner.stanza_id) == (ROOM, "bob", "m4", "old", "A1")
    # the archived message as text, with the archive's id on it (a relay carries it there)
    text = lxml.etree.fromstring(inner.text)
    assert text.tag == "{jabber:client}message" and text.findtext("{jabber:client}body") == "old"
    sid = text.find("{urn:xmpp:sid:0}stanza-id")
    assert (sid.get("by"), sid.get("id")) == (ROOM, "A1")
    # from the archive's JID, but not a result: the Message XSO it always was
    assert isinstance(other, aioxmpp.Message) and other.id_ == "n1"
    assert isinstance(r, aioxmpp.nonza.SMRequest)
    assert len(xs._minimix_rx.data) < 20


def test_results_of_an_archive_not_queried_are_xsos():
    (archived,), _ = archive_results([STREAM_HEADER + ARCHIVED], archives=frozenset({"other@muc.example.org"}))
    assert isinstance(archived, aioxmpp.Message) and archived.xep0313_result is not None


def test_an_archive_result_costs_a_fraction_of_the_xso_parse():
    fast = python_calls([ARCHIVED], frozenset(), archives=frozenset({ROOM}))
    stock = python_calls([ARCHIVED], frozenset())
    assert fast * 5 < stock, (fast, stock)


def test_what_a_read_brought_is_taken_in_that_turn_when_the_loop_is_idle():
    async def run(locked: bool):
        xs, got = hooked_stream(frozenset({ROOM}))
        stream = aioxmpp.stream.StanzaStream(aioxmpp.JID.fromstr("me@example.org"))
        stream._xmlstream = xs
        stream._task = mock.Mock()
        stream._task.done.return_value = False
        taken = []
        stream.minimix_room_stanza = taken.append
        stream.minimix_rooms = frozenset({ROOM})
        stream.minimix_stanzas_taken = lambda: taken.append("handed over")
        xs._minimix_stanza_stream = stream
        xs.stanza_parser.remove_class(aioxmpp.Message)
        xs.stanza_parser.add_class(aioxmpp.Message, stream.recv_stanza)
        if locked:
            stream._broker_lock._locked = True
        xs.data_received(STREAM_HEADER)
        xs.data_received(FAST)
        return taken, len(stream._incoming_queue)

    taken, left = asyncio.run(run(locked=False))
    assert [t if isinstance(t, str) else t.id_ for t in taken] == ["f1", "handed over"] and left == 0
    taken, left = asyncio.run(run(locked=True))  # a negotiation holds the stream: the loop takes it later
    assert taken == [] and left == 1


def test_a_stanza_written_as_text_goes_to_the_transport_as_it_is():
    from minimix.xmpp.xso import ClientMessage

    def written(send):
        out = io.BytesIO()
        writer = aioxmpp.xml.XMLStreamWriter(out, aioxmpp.JID.fromstr("example.org"))
        writer.start()
        out.seek(0)
        out.truncate()
        send(writer, ClientMessage("me@example.org/phone", b"<body>hi</body>", "r1"))
        return out.getvalue()

    def unbuffered(writer, message):
        with mock.patch.object(aioxmpp.xml.XMPPXMLGenerator, "buffer", side_effect=AssertionError("buffered")):
            aioxmpp.xml.XMLStreamWriter.send(writer, message)

    fast = written(unbuffered)
    stock = written(compat._orig_writer_send)
    assert fast == stock and fast.endswith(b"""<message type='chat' to="me@example.org/phone" id="r1"><body>hi</body></message>""")


class FakeLoop:
    def __init__(self):
        self.armed = []

    def call_later(self, delay, callback):
        handle = mock.Mock(delay=delay, callback=callback)
        self.armed.append(handle)
        return handle


def test_reads_do_not_rearm_the_deadtime_timers():
    """Patch 17: a read notes the time; a timer that fires after data came arms itself
    again for the rest of its limit; with no data for the whole limit it trips, once."""
    loop, now = FakeLoop(), [1000.0]
    monitor = aioxmpp.utils.AlivenessMonitor(loop)
    tripped = []
    monitor.on_deadtime_soft_limit_tripped.connect(lambda: tripped.append(now[0]))
    with mock.patch.object(compat.time, "monotonic", lambda: now[0]), \
         mock.patch.object(aioxmpp.utils.time, "monotonic", lambda: now[0]):  # fmt: skip
        monitor.deadtime_soft_limit = dt.timedelta(seconds=10)
        assert len(loop.armed) == 1
        for i in range(1, 101):
            now[0] = 1000.0 + i / 10
            monitor.notify_received()  # the last at 1010
        assert len(loop.armed) == 1  # nothing cancelled, nothing armed
        now[0] = 1010.0
        loop.armed[-1].callback()  # armed at 1000 for 10 s: data came at 1010
        assert tripped == [] and loop.armed[-1].delay == pytest.approx(10.0)
        now[0] = 1020.5
        loop.armed[-1].callback()
        assert tripped == [1020.5]
        monitor.notify_received()  # a read after a trip arms the timer again
        assert len(loop.armed) == 3


def test_stock_reads_rearm_the_deadtime_timers():
    loop = FakeLoop()
    monitor = aioxmpp.utils.AlivenessMonitor(loop)
    monitor.deadtime_soft_limit = dt.timedelta(seconds=10)
    with mock.patch.object(aioxmpp.utils.AlivenessMonitor, "notify_received", compat._orig_notify_received):
        for _ in range(5):
            monitor.notify_received()
    assert len(loop.armed) == 6  # one timer armed (and one cancelled) per read


def test_what_is_written_while_stanzas_are_taken_goes_out_in_one_write():
    """The daemon's relay for a room message and the <a/> for the <r/> after it: one TLS
    write (one record, one read for the server), not two."""
    stream, xmlstream = sm_stream()
    xmlstream._transport = transport = open_tls_transport()
    xmlstream.send_xso.side_effect = lambda xso: transport.write(b"<a/>")
    relays = [b"<message>relay</message>"]
    stream.minimix_stanzas_taken = lambda: relays and transport.write(relays.pop())
    stream._incoming_queue.put_nowait((aioxmpp.nonza.SMRequest(), None))
    sent = []
    transport._send_wrap.send.side_effect = lambda buf: sent.append(bytes(buf)) or len(buf)
    with mock.patch.object(compat, "_orig_process_incoming", lambda *a: None):
        compat._process_incoming(stream, xmlstream, ("a room message", None))
    assert sent == [b"<message>relay</message><a/>"]


# -- 21. expat's reparse deferral ---------------------------------------------------------------------


def test_a_stanza_is_read_by_the_feed_that_completes_it():
    """Expat >= 2.6 (Python 3.13) would look at an incomplete start tag again only once the
    data after it had doubled: this message's few last bytes, in a read of their own, would
    wait for the next stanza or keepalive."""
    start = b"<message from='room@muc.example.org/bob' type='groupchat' id='" + b"i" * 200
    (message,), _ = fed([STREAM_HEADER, start, b"'><body>x</body></message>"])
    assert (message.id_, message.body[None]) == ("i" * 200, "x")


# -- 22. the stream header and footer in pieces -----------------------------------------------------


def test_the_stream_header_and_footer_are_written_whole():
    """One write each (one TLS record): a server whose expat defers reparsing held back the
    last small piece (`>`) of the footer, and once the header after STARTTLS."""
    writes: list[bytes] = []
    out = mock.Mock(write=lambda data: writes.append(bytes(data)), flush=lambda: None)
    writer = aioxmpp.xml.XMLStreamWriter(out, aioxmpp.JID.fromstr("example.org"), nsmap={None: "jabber:client"})
    writer.start()
    assert len(writes) == 1 and writes[0].startswith(b"<?xml") and writes[0].endswith(b">")
    writer.close()
    assert writes[1:] == [b"</stream:stream>"]
    writer.close()  # closed: nothing more
    assert len(writes) == 2


# -- 18. a namespace with a space fails the stream --------------------------------------------------

ODD_NAMESPACES = (
    b"<message from='stranger@example.net/x' to='me@example.org/mm' id='o1' type='headline'>"
    b"<x xmlns='a b'/><y xmlns='a&#10;b'><z/></y><p:q xmlns:p='p q' p:r='1'/></message>"
)


def test_stock_reader_fails_the_stream_on_a_namespace_with_a_space(monkeypatch):
    """expat (since 2.4.5) refuses a namespace holding the separator xml.sax gives it (a
    space): the parser fails, and aioxmpp closes its own stream (bad-format)."""
    monkeypatch.setattr(aioxmpp.xml, "make_parser", compat._orig_make_parser)
    got, xs = fed([STREAM_HEADER + ODD_NAMESPACES + LIVE])
    assert got == [] and xs.state >= aioxmpp.protocol.State.CLOSING


def test_a_namespace_with_a_space_fails_nothing():
    got, xs = fed([STREAM_HEADER + ODD_NAMESPACES + LIVE])
    assert xs.state is aioxmpp.protocol.State.OPEN
    assert got[-1].id_ == "m1"  # what comes after is read as ever


def test_names_are_split_at_the_separator_only():
    names = []

    class Handler(xml.sax.handler.ContentHandler):
        def startElementNS(self, name, qname, attrs):
            names.append((name, dict(attrs.items())))

    reader = compat.namespace_reader()
    reader.setContentHandler(Handler())
    reader.feed(b"<a xmlns='a b' xmlns:p='p&#10;q' p:c='1' d='2'><p:e/><f xmlns=''/></a>")
    assert names == [
        (("a b", "a"), {("p\nq", "c"): "1", (None, "d"): "2"}),
        (("p\nq", "e"), {}),
        ((None, "f"), {}),
    ]


# -- 19. one child aioxmpp cannot read costs the whole stanza ---------------------------------------

BAD_CHILDREN = (
    b"<message from='room@muc.example.org/bob' to='me@example.org/mm' id='b1' type='chat'><body>still here</body>"
    b"<delay xmlns='urn:xmpp:delay' stamp='garbage'/><x xmlns='a b'/>"
    b"<r xmlns='urn:example:r'><k xmlns='c d'/></r><thread>t</thread></message>"
)
BAD_PRESENCE = (
    b"<presence from='room@muc.example.org/bob' id='b2'><priority>x</priority><status>away</status>"
    b"<x xmlns='http://jabber.org/protocol/muc#user'><item jid='bad@@jid' affiliation='member' role='participant'/>"
    b"<status code='abc'/></x><y xmlns='&lt;&amp;'/></presence>"
)


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


def test_stock_stanza_is_lost_for_one_bad_child(monkeypatch):
    monkeypatch.setattr(aioxmpp.Message, "xso_error_handler", compat._orig_stanza_error_handler)
    monkeypatch.setattr(aioxmpp.Presence, "xso_error_handler", compat._orig_stanza_error_handler)
    monkeypatch.setattr(aioxmpp.xso.model.Collector, "from_events", compat._orig_collect)
    got, xs = fed_stanzas(BAD_CHILDREN + BAD_PRESENCE)
    assert [type(g) for g in got] == [aioxmpp.stanza.StanzaError] * 2  # both lost
    assert xs.state is aioxmpp.protocol.State.OPEN


def test_a_bad_child_is_left_out_and_the_stanza_read():
    (message, presence), xs = fed_stanzas(BAD_CHILDREN + BAD_PRESENCE)
    assert message.body.any() == "still here" and message.xep0203_delay == []
    assert [c.tag for c in message.minimix_unknown] == []  # the {urn:example:r}r holding c d: out whole
    assert message.thread.identifier == "t"  # what comes after a bad child is read
    assert presence.status.any() == "away" and presence.xep0045_muc_user is None
    assert compat.raw_message(message) == with_xmlns(BAD_CHILDREN)  # a relay forwards it all


def test_an_iq_request_with_a_bad_child_is_answered_bad_request():
    request = (
        b"<iq from='stranger@example.net/x' to='me@example.org/mm' id='q1' type='get'>"
        b"<error type=''><bogus xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )
    (error,), _ = fed_stanzas(request)
    assert isinstance(error, aioxmpp.stanza.PayloadParsingError)  # what aioxmpp answers bad-request
    assert compat._orig_iq_error_handler is not aioxmpp.IQ.xso_error_handler


# -- 20. xml:lang='' fails the stanza -----------------------------------------------------------------

NO_LANGUAGE = (
    b"<iq from='stranger@example.net/x' to='me@example.org/mm' id='q2' type='get' xml:lang=''>"
    b"<ping xmlns='urn:xmpp:ping'/></iq>"
    b"<message from='me@example.org/phone' id='l1' type='chat'><body xml:lang=''>hi</body></message>"
)


def test_stock_empty_language_fails_the_stanza(monkeypatch):
    monkeypatch.setattr(aioxmpp.xso.LanguageTag, "parse", compat._orig_lang_parse)
    got, _ = fed_stanzas(NO_LANGUAGE)
    assert isinstance(got[0], aioxmpp.stanza.StanzaError)  # the ping: no answer
    assert not got[1].body  # the body: left out (lost whole without patch 19)


def test_an_empty_language_is_no_language():
    (ping, message), _ = fed_stanzas(NO_LANGUAGE)
    assert ping.lang is None and ping.payload is not None
    assert message.body == {None: "hi"}


# -- 11 and 15: what libxml2 alone refuses, read; a namespace with & written as XML -----------------

ODD_ROOM_MESSAGE = (
    b"<message from='room@muc.example.org/bob' to='me@example.org/mm' type='groupchat' id='o2'>"
    b"<body>odd</body><x xmlns='a b'/>" + b"<d xmlns='urn:example:deep'>" * 300 + b"</d>" * 300
    + b"<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example.org' id='S9'/></message>"
)


@pytest.mark.parametrize("data", [ODD_ROOM_MESSAGE, ODD_ROOM_MESSAGE.replace(b"groupchat", b"chat")])
def test_what_libxml2_alone_refuses_is_relayed_whole(data):
    """lxml reads a namespace with a space as an error, and stops at 256 levels; expat, the
    stream and Prosody take both.  A room's message (compat 15) and a private one (compat 11)
    are read, and forwarded as they came."""
    with pytest.raises(lxml.etree.XMLSyntaxError):
        lxml.etree.fromstring(with_xmlns(data))  # what the kept text was checked with
    (stanza,), _ = routed([STREAM_HEADER, data])  # the router is set up by the first read
    if b"groupchat" in data:
        assert (stanza.body, stanza.stanza_id, stanza.text) == ("odd", "S9", with_xmlns(data))
    else:
        assert stanza.body.any() == "odd" and compat.raw_message(stanza) == with_xmlns(data)


ARCHIVED_ODD = ARCHIVED.replace(
    b"<body>old</body>", b"<body>old</body><x xmlns='http://x/?a=1&amp;b=2'/><y xmlns='&lt;'/>"
)


def test_an_archived_message_with_an_ampersand_in_a_namespace_is_written_as_xml():
    """libxml2 writes a namespace's & and < as they are: the relay of such an archived
    message was not XML, and the server closed the daemon's stream for it (and again after
    each reconnection: the catch-up fetched it again)."""
    ((archived,), _) = archive_results([STREAM_HEADER, ARCHIVED_ODD])
    text = archived.message.text.encode()
    root = lxml.etree.fromstring(text, lxml.etree.XMLParser(recover=True))
    assert [c.tag for c in root][1:3] == ["{http://x/?a=1&b=2}x", "{<}y"]
    assert compat._root_of(text) == (compat._CLIENT_MESSAGE, "m4")  # and expat, as the server reads it
    stock = lxml.etree.tostring(lxml.etree.fromstring(b"<m><x xmlns='http://x/?a=1&amp;b=2'/></m>"))
    # how libxml2 writes it: 2.10 (lxml 4.9, Debian 12) as it is, not XML; 2.14 (lxml 6) escaped
    assert stock in (b'<m><x xmlns="http://x/?a=1&b=2"/></m>', b'<m><x xmlns="http://x/?a=1&amp;b=2"/></m>')


# -- 13. one stanza, never the stream ------------------------------------------------------------

def test_a_stream_that_goes_down_with_stanzas_queued_is_no_internal_error(caplog):
    """Stanzas, <r/> and the server's stream error in one read: the <a/> cannot go out any
    more, which is the stream's loss (reported once, as such), not an internal error, and
    the stanzas read before it are still handled."""
    import hostile
    from minimix.core.events import ClientText

    async def run():
        d = await hostile.daemon()
        with hostile.errors_logged() as errors:
            d.feed(
                f"<message from='{hostile.PHONE}' type='chat' id='a'><body>one</body></message>{SM_R.decode()}"
                f"<message from='{hostile.PHONE}' type='chat' id='b'><body>two</body></message>{SM_R.decode()}"
                "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
                "</stream:stream>"
            )
            await d.turns()
        return errors, [e.text for e in d.events if isinstance(e, ClientText)]

    errors, texts = asyncio.run(run())
    assert errors == [] and texts == ["one", "two"]


@pytest.mark.parametrize("at_once", [True, False], ids=["taken at once", "by the stanza loop"])
def test_an_exception_handling_a_stanza_costs_that_stanza_not_the_stream(at_once):
    """A bug of ours handling one stanza: logged, and the next one in the same read is still
    handled (in aioxmpp's own loop such an exception ended the stanza stream)."""
    import hostile
    from minimix.core.events import ClientText

    async def run():
        d = await hostile.daemon()
        if not at_once:
            d.stream.minimix_stanzas_taken = None  # patch 16 off: the loop's task takes them
        post = d.session._post

        def buggy(event):  # the daemon's own handling of one stanza fails
            if getattr(event, "text", None) == "bug":
                raise RuntimeError("a bug")
            post(event)

        d.session._post = buggy
        with hostile.errors_logged() as errors:
            d.feed("".join(
                f"<message from='{hostile.PHONE}' type='chat' id='{id_}'><body>{id_}</body></message>"
                for id_ in ("bug", "fine")
            ))
            await d.turns()
        return errors, [e.text for e in d.events if isinstance(e, ClientText)], d.up

    errors, texts, up = asyncio.run(run())
    assert errors == ["minimix: internal error while handling a stanza; skipped"]
    assert texts == ["fine"] and up


# -- 23. a lost stream logs a traceback per disco query in flight --------------------------------


@pytest.mark.parametrize("stock", [True, False], ids=["stock", "patched"])
def test_a_disco_query_cancelled_with_the_stream_is_no_error(stock, caplog):
    import aioxmpp.disco

    async def run():
        client = aioxmpp.Client(aioxmpp.JID.fromstr("a@localhost/r"), compat.security_layer("pw"))
        disco = client.summon(aioxmpp.DiscoClient)
        query = asyncio.ensure_future(asyncio.sleep(10))
        callback = compat._orig_info_received if stock else aioxmpp.disco.DiscoClient._handle_info_received
        query.add_done_callback(lambda task: callback(disco, aioxmpp.JID.fromstr("room@muc.localhost"), None, task))
        await asyncio.sleep(0)
        query.cancel()  # as the stream is lost
        for _ in range(3):
            await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(run())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if stock:
        assert errors and errors[0].startswith("Exception in callback")
    else:
        assert errors == []


# -- 6b. a lost stream is reported once --------------------------------------------------------


@pytest.mark.integration
def test_a_lost_stream_is_reported_once_not_also_as_a_failed_attempt(prosody):
    """A stream that was up and failed was reported twice, as a suspension ("connection
    lost") and as a failed connection attempt ("connection failed"), with the same error."""
    account = prosody.new_account()

    async def main():
        client = pinned_client(prosody, account)
        seen = []
        client.on_stream_suspended.connect(lambda exc: seen.append(("lost", type(exc).__name__)))
        client.on_connect_failed.connect(lambda exc, delay: seen.append(("failed", type(exc).__name__)))
        established = client.on_stream_established.future()
        client.start()
        await established
        again = {client.on_stream_established.future(), client.on_stream_resumed.future()}
        client.stream._xmlstream.transport.abort()  # the connection breaks
        await asyncio.wait(again, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        assert any(f.done() for f in again)  # back (resumed, XEP-0198)
        client.stop()
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 30))
    assert [kind for kind, _ in seen] == ["lost"], seen


# -- 24. the stream's end in a TLS record of its own ------------------------------------------------


def test_the_last_ack_and_the_streams_end_go_out_in_one_write():
    """Prosody 13 could leave the end unread (its own record, read with the <a/> in one
    go): the stop timed out and the session stayed online for minutes."""
    stream, xmlstream = sm_stream()
    xmlstream._transport = transport = open_tls_transport()
    xmlstream.send_xso.side_effect = lambda xso: transport.write(b"<a/>")
    xmlstream.close.side_effect = lambda: [transport.write(b) for b in (b"</", b"stream:stream", b">")]
    xmlstream.close_and_wait = mock.AsyncMock()
    stream.running, stream.sm_enabled, stream.wait_stop = True, True, mock.AsyncMock()
    sent = []
    transport._send_wrap.send.side_effect = lambda buf: sent.append(bytes(buf)) or len(buf)
    asyncio.run(compat._stanza_stream_close(stream))
    assert sent == [b"<a/></stream:stream>"]
    assert stream.stop_sm.called and stream._closed


def test_an_ack_request_read_after_the_streams_end_is_not_answered():
    """Nothing may follow the end: the answer raised ConnectionError, logged as an internal
    error at every such stop."""
    import aioxmpp.nonza

    stream, xmlstream = sm_stream()
    xmlstream.state = aioxmpp.protocol.State.CLOSING
    compat._process_incoming(stream, xmlstream, (aioxmpp.nonza.SMRequest(), None))
    xmlstream.send_xso.assert_not_called()
