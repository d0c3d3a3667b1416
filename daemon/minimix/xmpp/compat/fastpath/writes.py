"""Writes that go out at once, together, and whole.

Cost (latency): aioopenssl's STARTTLSTransport.write() only buffers and registers a writer;
the bytes go out on the loop's next turn, after select() says the socket is writable (it
always is), at the cost of a loop turn and two epoll_ctl calls per write.  asyncio's own
transports try the socket at once.  So do we, once TLS is up: what the socket takes goes
now; the rest, and every error, is left to aioopenssl's _write_ready exactly as before
(SendWrap wants the same buffer object on a retry: the transport's).  What is written in one
go (:func:`corked`: a burst of relays sent together, the relays and <a/> answers of the
stanzas taken together) goes out at its end, one TLS record for all, as the deferred write
did.  And a stanza that writes itself as text (:class:`WrittenAsText`: the relays) goes to
the transport as it is, not through the XML writer's buffer() and state save (35 us per
relay).

Writing at once must still write whole what a server needs whole.  aioxmpp writes the
stream header and footer a token at a time (`</`, `stream:stream`, `>`: a dozen writes for
the header), each then a TLS record and, with TCP_NODELAY, a TCP segment of its own; a
server whose expat defers reparsing (>= 2.6.0: Prosody 13 on Debian 13) held the last small
piece until more data came: `</stream:stream>` waited until 16 more bytes came (3 of 10
disconnects hung), and the stream header after STARTTLS once never got an answer (a login
stalled after authentication until aioxmpp's negotiation timeout).  Each is gathered and
written in one piece (bytes: XMPPXMLGenerator.buffer() would hand the transport a view of
its reused buffer).  And StanzaStream.close() writes its last <a/> and then the stream's
end: Prosody 13.0.1 reads what is on the socket in one go but could leave all but the
first record unprocessed, its reading paused, until more bytes came, and after our end none
come: the stop gave up after its timeout and the server kept the session for resumption,
the daemon's resource online for minutes (measured: 1 stop in 6 with three rooms; 0.12
never).  The same close, with what it writes in one record.
Test: tests/compat/test_writes.py (test_stock_write_waits_for_the_next_turn, and the header,
footer and close written in one piece where the stock writer writes them in many).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import aioopenssl
import aioxmpp.stream
import aioxmpp.xml
import aioxmpp.xso

_orig_tls_write = aioopenssl.STARTTLSTransport.write
_orig_writer_send = aioxmpp.xml.XMLStreamWriter.send
_orig_writer_start = aioxmpp.xml.XMLStreamWriter.start
_orig_writer_close = aioxmpp.xml.XMLStreamWriter.close
_orig_stanza_stream_close = aioxmpp.stream.StanzaStream.close


class WrittenAsText:
    """A stanza that writes itself: :meth:`wire` is all of it, as the stream carries it."""

    __slots__ = ()

    def wire(self) -> bytes:
        raise NotImplementedError


class SMAnswer(aioxmpp.xso.XSO):
    """<a xmlns='urn:xmpp:sm:3' h='N'/>, written as text (aioxmpp's SMAcknowledgement takes
    0.05 ms to serialise).  Sent only: the TAG is never registered for parsing."""

    TAG = ("urn:minimix:sm", "answer")
    __slots__ = ("counter",)

    def __init__(self, counter: int) -> None:
        super().__init__()
        self.counter = counter

    def xso_serialise_to_sax(self, dest: Any) -> None:
        dest._finish_pending_start_element()
        dest._write(f"<a xmlns='urn:xmpp:sm:3' h='{int(self.counter)}'/>".encode())


def _tls_ready(t: Any) -> bool:
    return (
        t._state is aioopenssl._State.TLS_OPEN
        and not t._closing
        and not t._tls_read_wants_write
        and not t._tls_write_wants_read
    )


def _tls_write(self: Any, data: Any) -> None:
    if self._buffer or not _tls_ready(self) or not isinstance(data, (bytes, bytearray, memoryview)) or not data:
        return _orig_tls_write(self, data)
    self._buffer.extend(data)
    if not getattr(self, "_minimix_corked", False):
        _tls_flush(self)


def _tls_flush(t: Any) -> None:
    try:
        sent = t._send_wrap.send(t._buffer)
    except Exception:  # noqa: BLE001 - _write_ready meets it again and handles it as it does
        sent = 0
    if sent:
        del t._buffer[:sent]
    if t._buffer:
        t._loop.add_writer(t._raw_fd, t._write_ready)


@contextlib.contextmanager
def corked(transport: Any) -> Any:
    """Writes made inside go out together at the end (at once, if TLS is up)."""
    if not isinstance(transport, aioopenssl.STARTTLSTransport) or getattr(transport, "_minimix_corked", False):
        yield
        return
    transport._minimix_corked = True
    try:
        yield
    finally:
        transport._minimix_corked = False
        if transport._buffer and _tls_ready(transport):
            _tls_flush(transport)


def _writer_send(self: Any, xso: Any) -> None:
    gen = getattr(self, "_writer", None)
    if not isinstance(xso, WrittenAsText) or gen is None or gen._buf_in_use:
        return _orig_writer_send(self, xso)
    data = xso.wire()  # all of it, or an exception before anything is written (as buffer() would)
    gen._finish_pending_start_element()
    gen._write(data)


def _in_one_write(gen: Any, write_pieces: Callable[[], None]) -> None:
    pieces: list[bytes] = []
    write, flush = gen._write, gen._flush
    gen._write, gen._flush = pieces.append, None
    try:
        write_pieces()
    finally:
        gen._write, gen._flush = write, flush
    write(b"".join(pieces))
    if flush:
        flush()


def _writer_start(self: Any) -> None:
    _in_one_write(self._writer, lambda: _orig_writer_start(self))


def _writer_close(self: Any) -> None:
    gen = getattr(self, "_writer", None)
    if self._closed or gen is None:
        return _orig_writer_close(self)
    _in_one_write(gen, lambda: _orig_writer_close(self))


async def _stanza_stream_close(self: Any) -> None:  # mirrors aioxmpp 0.13.3
    exc = aioxmpp.stream.DestructionRequested("close() called")
    if self.running:
        xmlstream = self._xmlstream
        with corked(getattr(xmlstream, "_transport", None)):
            if self.sm_enabled:
                xmlstream.send_xso(SMAnswer(self._sm_inbound_ctr))
            xmlstream.close()
        await xmlstream.close_and_wait()  # does not raise (and does not write again)
        await self.wait_stop()  # may raise
    self._closed = True
    self._xmlstream_exception = exc
    self._destroy_stream_state(self._xmlstream_exception)
    if self.sm_enabled:
        self.stop_sm()


def apply() -> None:
    """After fixes.ack_stall: what its _process_outgoing writes in one go goes out together."""
    process_outgoing = aioxmpp.stream.StanzaStream._process_outgoing

    def _process_outgoing(self: Any, xmlstream: Any, token: Any) -> None:
        with corked(getattr(xmlstream, "_transport", None)):  # one write for the lot
            process_outgoing(self, xmlstream, token)

    aioopenssl.STARTTLSTransport.write = _tls_write
    aioxmpp.stream.StanzaStream._process_outgoing = _process_outgoing
    aioxmpp.stream.StanzaStream.close = _stanza_stream_close
    aioxmpp.xml.XMLStreamWriter.send = _writer_send
    aioxmpp.xml.XMLStreamWriter.start = _writer_start
    aioxmpp.xml.XMLStreamWriter.close = _writer_close
