"""The delivery ledger's own rules (the engine-level behaviour is in test_receipts.py,
test_bounce.py, test_playback.py and the Hypothesis model, test_delivery_properties.py)."""

import random
from dataclasses import replace

from minimix.core.ledger import Ledger
from minimix.core.ledger_records import (
    Acked,
    Away,
    CursorMoved,
    Flight,
    InFlight,
    LedgerState,
    Settled,
    reached_server,
)
from minimix.core.memstore import MemoryLedgerStore

ROOM = "a@muc"


def ledger() -> Ledger:
    return Ledger(random.Random(1))


def always(_client: str) -> bool:
    return True


def test_a_clients_first_relay_in_a_room_starts_its_cursor_just_before_it():
    led = ledger()
    _, first = led.send("phone", ROOM, 10)
    _, second = led.send("phone", ROOM, 11)
    assert [type(c) for c in first] == [CursorMoved, InFlight] and first[0] == CursorMoved("phone", ROOM, 9)
    assert [type(c) for c in second] == [InFlight]


def test_delivered_relays_move_the_cursor_to_the_highest_never_back():
    led = ledger()
    ids = {seq: led.send("phone", ROOM, seq)[0] for seq in range(10, 20)}
    changes = led.acked([ids[s] for s in reversed(range(10, 15))] + ["unknown"], True, always)
    assert changes == [CursorMoved("phone", ROOM, 14), Settled(tuple(ids[s] for s in reversed(range(10, 15))))]
    assert led.acked([ids[12]], True, always) == []  # settled already
    late = ledger()
    early, older = late.send("phone", ROOM, 500)[0], late.send("phone", ROOM, 12)[0]
    late.acked([early], True, always)
    assert late.acked([older], True, always) == [Settled((older,))]  # an older one acked late: the cursor stays
    assert late.cursors[("phone", ROOM)] == 500


def test_a_relay_lost_on_the_wire_only_leaves_the_flights():
    led = ledger()
    relay_id, _ = led.send("phone", ROOM, 10)
    assert led.acked([relay_id], False, always) == [Settled((relay_id,))]
    assert led.cursors == {("phone", ROOM): 9}


def test_a_relay_acked_by_the_server_to_a_receipt_client_waits_in_flight():
    led = ledger()
    led.receipts.add("phone")
    relay_id, _ = led.send("phone", ROOM, 10)
    assert led.acked([relay_id], True, always) == [Acked((relay_id,))]
    assert led.received("phone", relay_id) == [CursorMoved("phone", ROOM, 10), Settled((relay_id,))]


def test_settling_a_crash_trusts_the_servers_count_of_the_session_it_reports_on():
    flights = {
        "acked": Flight("laptop", ROOM, 5, acked=True),
        "in": Flight("phone", ROOM, 6, wire=("sm-a", 100)),
        "out": Flight("phone", ROOM, 7, wire=("sm-a", 101)),
        "other": Flight("tablet", ROOM, 6, wire=("sm-b", 1)),
        "unsent": Flight("tablet", ROOM, 8),
    }
    state = LedgerState(last_seq=8, cursors={("phone", ROOM): 5}, flights=flights)
    assert Ledger.needs_count(state)
    assert not Ledger.needs_count(LedgerState(flights={"acked": flights["acked"]}))
    changes = Ledger.settle(state, ("sm-a", 40), handled=100)
    assert changes == [CursorMoved("laptop", ROOM, 5), CursorMoved("phone", ROOM, 6), Settled(tuple(flights))]
    assert Ledger.settle(state, ("sm-a", 40), handled=None) == [CursorMoved("laptop", ROOM, 5), Settled(tuple(flights))]


def test_the_servers_count_wraps_at_two_to_the_32():
    near_end = Flight("phone", ROOM, 1, wire=("sm", 2**32 - 2))
    assert reached_server(near_end, ("sm", 0), handled=3)  # the count went past 2^32 since
    assert not reached_server(Flight("phone", ROOM, 1, wire=("sm", 4)), ("sm", 0), handled=3)


def test_a_restart_marks_the_clients_that_were_there_when_the_last_run_ended():
    store = MemoryLedgerStore()
    store.apply([CursorMoved("phone", ROOM, 3), CursorMoved("laptop", ROOM, 2), Away("laptop", 4)])
    led = ledger()
    marks = led.restore(replace(store.load(), last_seq=7), known=["tablet"])
    store.apply(marks)
    assert store.load().away == {"laptop": 4, "phone": 7, "tablet": 7}
    assert led.next_seq == 8
