"""fastpath.writes: a write goes out at once (stock aioopenssl waits for the loop's next
turn), what is written in one go goes out together, and what a server needs whole goes out
whole (the stream header and footer, a stop's last <a/> with the end)."""

import asyncio
import io
from unittest import mock

import aioopenssl
import aioxmpp
import aioxmpp.xml

from compat.streams import open_tls_transport, sm_stream
from minimix.xmpp.compat.fastpath import writes
from minimix.xmpp.xso import ClientMessage


def test_stock_write_waits_for_the_next_turn(monkeypatch):
    monkeypatch.setattr(aioopenssl.STARTTLSTransport, "write", writes._orig_tls_write)
    t = open_tls_transport()
    t.write(b"<message/>")
    assert not t._send_wrap.send.called and t._buffer == b"<message/>"
    t._loop.add_writer.assert_called_once()


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


def test_stanzas_sent_in_one_go_are_written_together():
    t = open_tls_transport()
    with writes.corked(t):
        t.write(b"<message id='1'/>")
        t.write(b"<message id='2'/>")
        t.write(b"<r xmlns='urn:xmpp:sm:3'/>")
        assert not t._send_wrap.send.called
    t._send_wrap.send.assert_called_once()
    assert t._buffer == b"" and not t._loop.add_writer.called


def test_a_stanza_written_as_text_goes_to_the_transport_as_it_is():
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
    stock = written(writes._orig_writer_send)
    assert fast == stock and fast.endswith(b"""<message type='chat' to="me@example.org/phone" id="r1"><body>hi</body></message>""")


def header_and_footer_writes() -> list[bytes]:
    writes_seen: list[bytes] = []
    out = mock.Mock(write=lambda data: writes_seen.append(bytes(data)), flush=lambda: None)
    writer = aioxmpp.xml.XMLStreamWriter(out, aioxmpp.JID.fromstr("example.org"), nsmap={None: "jabber:client"})
    writer.start()
    writer.close()
    writer.close()  # closed: nothing more
    return writes_seen


def test_stock_header_and_footer_are_written_in_pieces(monkeypatch):
    monkeypatch.setattr(aioxmpp.xml.XMLStreamWriter, "start", writes._orig_writer_start)
    monkeypatch.setattr(aioxmpp.xml.XMLStreamWriter, "close", writes._orig_writer_close)
    assert len(header_and_footer_writes()) > 2


def test_the_stream_header_and_footer_are_written_whole():
    """One write each (one TLS record): a server whose expat defers reparsing held back the
    last small piece (`>`) of the footer, and once the header after STARTTLS."""
    header, footer = header_and_footer_writes()
    assert header.startswith(b"<?xml") and header.endswith(b">")
    assert footer == b"</stream:stream>"


def records_of_a_stop(close) -> list[bytes]:
    """The TLS records a stanza stream's close() writes: its last <a/>, then the end."""
    stream, xmlstream = sm_stream()
    xmlstream._transport = transport = open_tls_transport()
    xmlstream.send_xso.side_effect = lambda xso: transport.write(b"<a/>")
    end = lambda: [transport.write(b) for b in (b"</", b"stream:stream", b">")]  # noqa: E731
    xmlstream.close.side_effect = end
    xmlstream.close_and_wait = mock.AsyncMock(side_effect=end if close is writes._orig_stanza_stream_close else None)
    stream.running, stream.sm_enabled, stream.wait_stop = True, True, mock.AsyncMock()
    sent = []
    transport._send_wrap.send.side_effect = lambda buf: sent.append(bytes(buf)) or len(buf)
    asyncio.run(close(stream))
    assert stream.stop_sm.called and stream._closed
    return sent


def test_stock_close_writes_the_last_ack_and_the_end_apart():
    assert len(records_of_a_stop(writes._orig_stanza_stream_close)) > 1


def test_the_last_ack_and_the_streams_end_go_out_in_one_write():
    """Prosody 13 could leave the end unread (its own record, read with the <a/> in one
    go): the stop timed out and the session stayed online for minutes."""
    assert records_of_a_stop(writes._stanza_stream_close) == [b"<a/></stream:stream>"]
