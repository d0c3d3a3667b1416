"""fastpath.incoming: what is received, taken in batches and handed over in the turn it came
in, the server's <r/> answered as text, and the count acknowledged on record."""

import asyncio
from unittest import mock

import aioxmpp
import aioxmpp.nonza
import aioxmpp.protocol
import aioxmpp.stream

from compat.streams import (
    FAST,
    ROOM,
    STREAM_HEADER,
    as_sent,
    hooked_stream,
    open_tls_transport,
    queued_stream,
    sm_stream,
)
from minimix.xmpp import compat
from minimix.xmpp.compat.fastpath import incoming


def room_stanza() -> compat.RoomStanza:
    return compat.RoomStanza(ROOM, "al", "f4", "x", None, False, None, None, None, "<message/>")


def test_stock_stanza_loop_takes_one_received_stanza_per_turn():
    stream = mock.Mock()
    stream._sm_enabled = False
    stream._incoming_queue = asyncio.Queue()
    stream._incoming_queue.put_nowait(("s2", None))
    incoming._orig_process_incoming(stream, None, (aioxmpp.Message(type_=aioxmpp.MessageType.CHAT), None))
    assert stream._incoming_queue.qsize() == 1  # left for the next turn
    assert aioxmpp.stream.StanzaStream._process_incoming is incoming._process_incoming


def test_received_stanzas_are_taken_together_in_order():
    stream = mock.Mock()
    stream._incoming_queue = asyncio.Queue()
    for i in range(2, 5):
        stream._incoming_queue.put_nowait((f"s{i}", None))
    seen = []
    with mock.patch.object(incoming, "_orig_process_incoming", lambda self, xs, entry: seen.append(entry[0])):
        incoming._process_incoming(stream, None, ("s1", None))
    assert seen == ["s1", "s2", "s3", "s4"] and stream._incoming_queue.empty()


def test_received_stanzas_are_taken_at_most_a_batch_at_a_time():
    stream = mock.Mock()
    stream._incoming_queue = asyncio.Queue()
    for i in range(incoming.INCOMING_BATCH + 5):
        stream._incoming_queue.put_nowait((i, None))
    seen = []
    with mock.patch.object(incoming, "_orig_process_incoming", lambda self, xs, entry: seen.append(entry[0])):
        incoming._process_incoming(stream, None, stream._incoming_queue.get_nowait())
    assert seen == list(range(incoming.INCOMING_BATCH)) and stream._incoming_queue.qsize() == 5


def handled(seen):
    def handle(self, xs, entry):
        seen.append(entry[0])
        self._sm_inbound_ctr += 1

    return handle


def test_stock_stanza_loop_answers_the_ack_request_at_once():
    stream, xmlstream = sm_stream()
    incoming._orig_process_incoming(stream, xmlstream, (aioxmpp.nonza.SMRequest(), None))
    (answer,), _ = xmlstream.send_xso.call_args
    assert answer.counter == 41


def test_the_servers_ack_request_is_answered_at_once_as_text():
    """The same <a h=…/> aioxmpp sends, at the same moment (in order with the stanzas taken
    in the same turn), without building and serialising an XSO."""
    stream, xmlstream = sm_stream()
    stream._incoming_queue.put_nowait((aioxmpp.nonza.SMRequest(), None))
    stream._incoming_queue.put_nowait(("another stanza", None))
    seen = []
    with mock.patch.object(incoming, "_orig_process_incoming", handled(seen)):
        incoming._process_incoming(stream, xmlstream, ("a room message", None))
    assert seen == ["a room message", "another stanza"]
    (answer,), _ = xmlstream.send_xso.call_args
    assert as_sent(answer).counter == 42  # the count when the <r/> was taken


def test_an_ack_request_read_after_the_streams_end_is_not_answered():
    """Nothing may follow the end: the answer raised ConnectionError, logged as an internal
    error at every such stop."""
    stream, xmlstream = sm_stream()
    xmlstream.state = aioxmpp.protocol.State.CLOSING
    incoming._process_incoming(stream, xmlstream, (aioxmpp.nonza.SMRequest(), None))
    xmlstream.send_xso.assert_not_called()


def test_the_count_acknowledged_is_on_record_before_each_answer_and_after_each_batch():
    marks = []
    stream, xmlstream = sm_stream(ack_mark=lambda sm_id, count: marks.append((sm_id, count)))
    stream._sm_id = "sm-1"
    xmlstream.send_xso.side_effect = lambda xso: marks.append(f"answer {as_sent(xso).counter}")
    stream._incoming_queue.put_nowait((aioxmpp.nonza.SMRequest(), None))
    stream._incoming_queue.put_nowait(("another stanza", None))
    with mock.patch.object(incoming, "_orig_process_incoming", handled([])):
        incoming._process_incoming(stream, xmlstream, ("a stanza", None))
    assert marks == [("sm-1", 42), "answer 42", ("sm-1", 43)]


def test_a_room_stanza_is_counted_and_goes_to_the_hook():
    taken = []
    stream, xmlstream = sm_stream(on_room_stanza=taken.append)
    stanza = room_stanza()
    incoming._process_incoming(stream, xmlstream, (stanza, None))
    assert taken == [stanza] and stream._sm_inbound_ctr == 42


def test_a_failing_hook_costs_the_stanza_not_the_stream():
    stream, xmlstream = sm_stream(on_room_stanza=mock.Mock(side_effect=RuntimeError("bug")))
    incoming._process_incoming(stream, xmlstream, (room_stanza(), None))  # does not raise
    assert stream._sm_inbound_ctr == 42


def test_the_daemon_handles_what_was_taken_before_the_ack_answer():
    """The hook runs before an <r/> is answered (so what the daemon sends for the stanzas
    before it goes first) and once at the end of what was taken in one go."""
    seen = []
    stream, xmlstream = sm_stream(on_taken=lambda: seen.append("hook"))
    xmlstream.send_xso.side_effect = lambda xso: seen.append(f"answer {as_sent(xso).counter}")
    stream._incoming_queue.put_nowait((aioxmpp.nonza.SMRequest(), None))
    stream._incoming_queue.put_nowait(("another stanza", None))
    with mock.patch.object(incoming, "_orig_process_incoming", handled(seen)):
        incoming._process_incoming(stream, xmlstream, ("a room message", None))
    assert seen == ["a room message", "hook", "answer 42", "another stanza", "hook"]


def test_a_failing_taken_hook_does_not_stop_the_stream():
    stream, xmlstream = sm_stream(on_taken=mock.Mock(side_effect=RuntimeError("bug")))
    with mock.patch.object(incoming, "_orig_process_incoming", lambda *a: None):
        incoming._process_incoming(stream, xmlstream, ("a stanza", None))  # does not raise
    assert stream._minimix_taking is False


def test_what_is_written_while_stanzas_are_taken_goes_out_in_one_write():
    """The daemon's relay for a room message and the <a/> for the <r/> after it: one TLS
    write (one record, one read for the server), not two."""
    relays = [b"<message>relay</message>"]
    transport = open_tls_transport()
    stream, xmlstream = sm_stream(on_taken=lambda: relays and transport.write(relays.pop()))
    xmlstream._transport = transport
    xmlstream.send_xso.side_effect = lambda xso: transport.write(b"<a/>")
    stream._incoming_queue.put_nowait((aioxmpp.nonza.SMRequest(), None))
    sent = []
    transport._send_wrap.send.side_effect = lambda buf: sent.append(bytes(buf)) or len(buf)
    with mock.patch.object(incoming, "_orig_process_incoming", lambda *a: None):
        incoming._process_incoming(stream, xmlstream, ("a room message", None))
    assert sent == [b"<message>relay</message><a/>"]


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
    """A stanza queued while the stanza loop does not run goes out only when it runs."""

    async def run():
        stream, xmlstream, token = queued_stream()
        stream._task.done.return_value = True  # not running: send_queued leaves it too
        compat.send_queued(stream)
        assert not xmlstream.send_xso.called and len(stream._active_queue) == 1

    asyncio.run(run())


def test_what_a_read_brought_is_taken_in_that_turn_when_the_loop_is_idle():
    async def run(locked: bool):
        xs, got = hooked_stream(frozenset({ROOM}))
        stream = aioxmpp.stream.StanzaStream(aioxmpp.JID.fromstr("me@example.org"))
        stream._xmlstream = xs
        stream._task = mock.Mock()
        stream._task.done.return_value = False
        taken = []
        compat.set_hooks(stream, compat.StreamHooks(
            rooms=frozenset({ROOM}), on_room_stanza=taken.append, on_taken=lambda: taken.append("handed over"),
        ))  # fmt: skip
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
