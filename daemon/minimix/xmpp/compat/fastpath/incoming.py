"""What is received, taken in batches and handed over in the turn it came in.

Cost: StanzaStream._run takes one received stanza per turn: asyncio.wait() on two futures,
the broker lock, and a new Task for the next queue.get() each time: a sixth of the daemon's
CPU while relaying (BaseEventLoop.create_task alone 8 %, profiled), and a loop turn of
latency for every stanza behind another.  It already sends every queued stanza in one turn
(_process_outgoing); what has been received is taken the same way, in order, up to
INCOMING_BATCH, each stanza guarded as fixes.stanza_guard guards aioxmpp's.  A RoomStanza or
ArchivedStanza (fastpath.router) is counted for XEP-0198 as any stanza is and goes to its
hook (fastpath.hooks) instead of the inbound filters.

Also on that path: Prosody asks for an ack (<r/>) after every stanza it sends, and aioxmpp
builds each answer as an XSO and serialises it, in the turn that hands the stanza before it
to the app: 0.1 ms of every relay's latency (traced).  The answer is the same <a h=…/>, at
the same moment, written as text.  (Answering later, once for several <r/>, was tried:
Prosody trims its queue of unacked stanzas one by one, and the longer queue made 1,000 joins
cost it 50 % more CPU.)  An <r/> read after the stream's end was written is not answered:
nothing may follow the end.

Cost (latency) again: what the stanza loop takes goes to the daemon's own task through a
queue (a turn of the loop, 150 us traced, with the <r/> answer written in between), and what
that task sends goes back to the stanza loop's task through another (50 us more).  The
``on_taken`` hook is called once the stanzas taken in one go are handed over, and before an
<r/> is answered (so that the answer comes after what the daemon sends for the stanzas
before it).  The daemon then handles them at once if its own task is idle, and
:func:`send_queued` writes what it queued in the same turn: the stanza loop's own
_process_outgoing, called only where the loop itself could call it (inside its turn, or when
nothing holds its broker lock: stream management negotiations hold it).  And the stanza
loop's own turn is a hop too (40 us traced): once a read has been parsed, what it brought is
taken at once if the loop is idle (:func:`take_now`).

Crash safety: the inbound count goes to the server in every <a h=…/> and in <resume h=…/>
and is kept nowhere else; after a crash the start-up probe must quote a count the server
accepts (Prosody refuses one below what was already acknowledged, and then closes the
stream without the count of our stanzas that the probe is for).  The ``ack_mark`` hook is
called with the current count before each <a/> goes out and after each batch of received
stanzas (the count that a resumption or a closing <a/> would send).
Test: tests/compat/test_incoming.py (test_stock_stanza_loop_takes_one_received_stanza_per_turn).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aioxmpp
import aioxmpp.nonza
import aioxmpp.protocol
import aioxmpp.stream
import structlog

from minimix.xmpp.compat.fastpath.hooks import hooks_of
from minimix.xmpp.compat.fastpath.reader import ArchivedStanza, RoomStanza
from minimix.xmpp.compat.fastpath.writes import SMAnswer, corked
from minimix.xmpp.compat.fixes.stanza_guard import handle_guarded

log = structlog.get_logger("minimix.xmpp")

INCOMING_BATCH = 64
_orig_process_incoming = aioxmpp.stream.StanzaStream._process_incoming


def _process_incoming(self: Any, xmlstream: Any, queue_entry: Any) -> None:
    self._minimix_taking = True  # inside the loop's turn (send_queued may write)
    # What is written meanwhile (the daemon's relays, the <a/> answers) goes out together,
    # once, at the end: one TLS record and one read for the server (fastpath.writes).
    try:
        with corked(getattr(xmlstream, "_transport", None)):
            handle_guarded(_take_one, self, xmlstream, queue_entry)
            for _ in range(INCOMING_BATCH - 1):
                try:
                    queue_entry = self._incoming_queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                handle_guarded(_take_one, self, xmlstream, queue_entry)
            _taken(self)
    finally:
        self._minimix_taking = False
    _mark_acked(self)


def _take_one(stream: Any, xmlstream: Any, queue_entry: Any) -> None:
    taken = type(queue_entry[0])
    if taken is RoomStanza or taken is ArchivedStanza:  # read by the router
        if stream._sm_enabled:
            stream._sm_inbound_ctr = (stream._sm_inbound_ctr + 1) & 0xFFFFFFFF
        hooks = hooks_of(stream)
        hook = hooks.on_room_stanza if taken is RoomStanza else hooks.on_archived
        if hook is not None:
            hook(queue_entry[0])
    elif stream._sm_enabled and isinstance(queue_entry[0], aioxmpp.nonza.SMRequest):
        _taken(stream)  # what the daemon sends for the stanzas before it goes first
        _mark_acked(stream)
        if xmlstream.state is aioxmpp.protocol.State.OPEN:  # closing: our last <a/> has gone
            xmlstream.send_xso(SMAnswer(stream._sm_inbound_ctr))
    else:
        _orig_process_incoming(stream, xmlstream, queue_entry)


def _mark_acked(stream: Any) -> None:
    mark = hooks_of(stream).ack_mark
    if mark is not None and stream._sm_enabled and stream._sm_id:  # resumable: what a probe asks about
        mark(stream._sm_id, stream._sm_inbound_ctr)


def take_now(xmlstream: Any) -> None:
    """What a read brought, handed over in this turn when the stanza loop is idle (waiting
    for the next stanza): the loop's own _process_incoming, called as the loop would (the
    loop's task then finds its queue empty and waits again)."""
    stream = getattr(xmlstream, "_minimix_stanza_stream", None)
    if stream is None or hooks_of(stream).on_taken is None:
        return
    queue = stream._incoming_queue
    if queue.empty() or stream._xmlstream is not xmlstream or not stream.running or stream._broker_lock.locked():
        return
    try:
        _process_incoming(stream, xmlstream, queue.get_nowait())
    except Exception:  # as in the loop, but one batch of stanzas, never the stream
        log.exception("internal error while taking the stanzas received")


def _taken(stream: Any) -> None:
    hook = hooks_of(stream).on_taken
    if hook is not None:
        try:
            hook()
        except Exception:  # the stanzas are handed over already; the stream goes on
            log.exception("internal error while handling the stanzas received")


def send_queued(stream: aioxmpp.stream.StanzaStream) -> None:
    """Write the stanzas queued for sending now, not on the stanza loop's next turn."""
    xmlstream = stream._xmlstream
    if xmlstream is None or not stream.running or stream._active_queue.empty():
        return
    if stream._broker_lock.locked() and not getattr(stream, "_minimix_taking", False):
        return  # a negotiation holds the stream: the loop sends them once it is done
    try:
        stream._process_outgoing(xmlstream, stream._active_queue.get_nowait())
    except Exception as exc:  # noqa: BLE001 - the stream is going down: the loop finds out
        log.debug("writing at once failed; left to the stanza loop", error=repr(exc))


def apply() -> None:
    """After fixes.stanza_guard and fastpath.router (whose read this takes at once)."""
    feed = aioxmpp.protocol.XMLStream._rx_feed

    def _rx_feed(self: Any, blob: bytes) -> None:
        parser = self._parser
        feed(self, blob)
        if parser is not None:
            take_now(self)

    aioxmpp.protocol.XMLStream._rx_feed = _rx_feed
    aioxmpp.stream.StanzaStream._process_incoming = _process_incoming
