"""XEP-0184: for a client that answers receipts, a relay is delivered when its receipt
comes, not when the server acknowledged it; one the client never answered before it went
away is owed again at its next playback.  A client that never answered one keeps the
server's acknowledgement as delivery."""

from __future__ import annotations

from minimix.core import actions as A
from minimix.core.events import ClientPresence, RelayReceived, RelaysAcked, SessionLost
from minimix.core.ledger_records import Acked, AnswersReceipts, CursorMoved, Settled

from .test_bounce import NOW, ROOM, joined_engine, of, say


def answering_engine():
    """The phone has answered the receipt of a first relay (message 1)."""
    engine = joined_engine()
    first = say(engine, 1)
    engine.handle(RelaysAcked(tuple(first.values())), NOW + 1)
    learnt = engine.handle(RelayReceived("phone", first["phone"]), NOW + 1)
    assert learnt == [AnswersReceipts("phone", True)]  # kept across restarts; the relay was settled
    assert engine.ledger.receipts == {"phone"}
    return engine


def test_the_receipt_moves_the_cursor_not_the_servers_ack():
    engine = answering_engine()
    relays = say(engine, 2)
    acked = engine.handle(RelaysAcked(tuple(relays.values())), NOW + 2)
    assert acked == [CursorMoved("laptop", ROOM, 2), Settled((relays["laptop"],)), Acked((relays["phone"],))]
    # the laptop: delivered by the ack; the phone: acked by the server, its receipt due
    assert engine.ledger.cursors[("phone", ROOM)] == 1
    assert engine.ledger.cursors[("laptop", ROOM)] == 2
    done = engine.handle(RelayReceived("phone", relays["phone"]), NOW + 3)
    assert done == [CursorMoved("phone", ROOM, 2), Settled((relays["phone"],))]
    assert engine.ledger.cursors[("phone", ROOM)] == 2


def test_a_receipt_before_the_servers_ack_is_delivery():
    engine = answering_engine()
    relay = say(engine, 2)["phone"]
    assert engine.handle(RelayReceived("phone", relay), NOW + 2) == [CursorMoved("phone", ROOM, 2), Settled((relay,))]
    assert engine.handle(RelaysAcked((relay,)), NOW + 3) == []
    assert engine.ledger.cursors[("phone", ROOM)] == 2


def test_relays_never_answered_are_owed_when_the_client_goes():
    engine = answering_engine()
    relays = [say(engine, n)["phone"] for n in (2, 3)]
    engine.handle(RelaysAcked(tuple(relays)), NOW + 4)
    gone = engine.handle(ClientPresence("phone", False), NOW + 5)
    assert Settled(tuple(relays)) in gone and not of(gone, CursorMoved)
    (load,) = of(engine.handle(ClientPresence("phone", True), NOW + 6), A.LoadPlayback)
    assert load.cursors == {ROOM: 1}  # messages 2 and 3 come again


def test_receipts_due_when_the_session_is_lost_count_as_delivered():
    engine = answering_engine()
    relay = say(engine, 2)["phone"]
    engine.handle(RelaysAcked((relay,)), NOW + 2)
    lost = engine.handle(SessionLost(), NOW + 3)
    assert CursorMoved("phone", ROOM, 2) in lost and Settled((relay,)) in lost
    assert engine.ledger.cursors[("phone", ROOM)] == 2


def test_only_the_client_a_relay_was_for_can_answer_it():
    engine = answering_engine()
    relays = say(engine, 2)
    engine.handle(RelaysAcked(tuple(relays.values())), NOW + 2)
    assert engine.handle(RelayReceived("laptop", relays["phone"]), NOW + 3) == []
    assert engine.handle(RelayReceived("phone", "mmx-unknown"), NOW + 3) == []
    assert engine.ledger.cursors[("phone", ROOM)] == 1
    assert engine.ledger.receipts == {"phone"}  # the laptop answered nothing of its own


def test_a_relay_the_server_took_after_its_client_left_is_owed():
    """Owed as the client goes (not at the server's ack, which a crash could beat)."""
    engine = answering_engine()
    relay = say(engine, 2)["phone"]
    gone = engine.handle(ClientPresence("phone", False), NOW + 3)  # before the server's ack came
    assert Settled((relay,)) in gone and not of(gone, CursorMoved)
    assert engine.handle(RelaysAcked((relay,)), NOW + 4) == []
    assert engine.ledger.cursors[("phone", ROOM)] == 1


def test_a_client_that_stops_answering_receipts_is_not_waited_for_forever(monkeypatch):
    from minimix.core import ledger

    monkeypatch.setattr(ledger, "AWAITING_MAX", 3)
    engine = answering_engine()
    relays = [say(engine, n)["phone"] for n in range(2, 7)]  # five, none answered
    actions = engine.handle(RelaysAcked(tuple(relays)), NOW + 7)
    assert Settled(tuple(relays[:2])) in actions  # the oldest, past the bound: delivered
    assert CursorMoved("phone", ROOM, 3) in actions
    assert len(engine.ledger.awaiting) == 3
    assert engine.ledger.cursors[("phone", ROOM)] == 3
    assert "phone" not in engine.ledger.receipts  # the server's ack again, until a receipt
    assert AnswersReceipts("phone", False) in actions
