"""The LedgerStore contract, run on both backends: the SQLite store the daemon runs on and
the in-memory one the delivery model runs on (soju tests its database interface on two
backends the same way).  A store keeps what the ledger's changes say, as they say it."""

from __future__ import annotations

import pytest

from minimix.core.ledger_records import (
    Acked,
    AnswersReceipts,
    Away,
    CursorMoved,
    Flight,
    InFlight,
    LedgerState,
    Logged,
    Pushed,
    PushesForgotten,
    Settled,
)
from minimix.core.memstore import MemoryLedgerStore
from minimix.store import FILENAME, Store

ROOM = "r@muc.example"


@pytest.fixture(params=["sqlite", "memory"])
def backend(request, tmp_path):
    """(a store, a function that gives the same store as a restart would)."""
    if request.param == "memory":
        store = MemoryLedgerStore()
        yield store, lambda: store
        return
    path = tmp_path / FILENAME
    opened = [Store(path)]

    def reopen():
        opened[-1].close()
        opened.append(Store(path))
        return opened[-1]

    yield opened[0], reopen
    opened[-1].close()


def logged(seq: int, room: str = ROOM, stanza_id: str | None = "auto", stamp: float = 1000.0,
           body: str = "hi", key: str | None = None) -> Logged:
    sid = f"s{seq}" if stanza_id == "auto" else stanza_id
    return Logged(seq, room, sid, "bob", False, stamp + seq, body, None, f"[r] bob: {body}", f"<m{seq}/>", key)


def test_an_empty_store_loads_an_empty_state(backend):
    store, _ = backend
    assert store.load() == LedgerState()


def test_every_change_is_kept_as_it_says(backend):
    store, reopen = backend
    store.apply([
        logged(1), logged(2),
        CursorMoved("phone", ROOM, 0),
        InFlight("mmx-1", "phone", ROOM, 1, ("sm-a", 17)),
        InFlight("mmx-2", "phone", ROOM, 2),
        InFlight("mmx-3", "laptop", ROOM, 2),
        Acked(("mmx-1", "unknown")),
        Settled(("mmx-3",)),
        CursorMoved("laptop", ROOM, 2),
        Away("tablet", 1),
        Away("phone", 2),
        Away("phone", None),
        AnswersReceipts("phone", True),
        AnswersReceipts("laptop", True),
        AnswersReceipts("laptop", False),
    ])
    state = reopen().load()
    assert state == LedgerState(
        last_seq=2,
        cursors={("phone", ROOM): 0, ("laptop", ROOM): 2},
        away={"tablet": 1},
        flights={"mmx-1": Flight("phone", ROOM, 1, True, ("sm-a", 17)), "mmx-2": Flight("phone", ROOM, 2)},
        receipts=frozenset({"phone"}),
    )


def test_a_cursor_is_set_to_what_the_change_says_back_or_forward(backend):
    """No max() or min() in the store: the ledger decides (a bounce moves a cursor back)."""
    store, reopen = backend
    store.apply([CursorMoved("phone", ROOM, 500), CursorMoved("phone", ROOM, 9)])
    assert reopen().load().cursors == {("phone", ROOM): 9}


def test_a_rooms_archive_id_is_logged_once(backend):
    store, reopen = backend
    store.apply([logged(1), Logged(2, ROOM, "s1", "eve", False, 2.0, "again", None, "t", "<m/>"), logged(3)])
    found, more = reopen().messages_after({}, 0, 10)
    assert [(m.seq, m.body) for m in found] == [(1, "hi"), (3, "hi")] and more == 0


def test_the_log_is_read_after_each_rooms_cursor_page_by_page(backend):
    store, reopen = backend
    other = "o@muc.example"
    store.apply([logged(s, ROOM if s % 2 else other) for s in range(1, 11)])
    store = reopen()
    found, more = store.messages_after({ROOM: 5}, 2, 3)
    assert [m.seq for m in found] == [4, 6, 7] and more == 1
    found, more = store.messages_after({ROOM: 5}, 2, 3, after=7)
    assert [m.seq for m in found] == [8, 9, 10] and more == 0
    m = found[0]
    assert (m.room, m.nick, m.private, m.body, m.text, m.ref) == (other, "bob", False, "hi", "[r] bob: hi", "<m8/>")


def test_keys_of_a_rooms_messages_since_a_time(backend):
    store, reopen = backend
    store.apply([logged(1, key="k1"), logged(2, key="k2"), logged(3, "o@muc.example", key="k3"), logged(4)])
    assert sorted(reopen().keys_since(ROOM, 1001.5)) == ["k2"]


def test_keys_of_a_rooms_messages_after_one_of_the_log_come_oldest_first(backend):
    store, reopen = backend
    store.apply([logged(s, key=f"k{s}") for s in (4, 2, 3, 1)] + [logged(5, "o@muc.example", key="k5")])
    assert reopen().keys_since(ROOM, 0.0, after=1) == ["k2", "k3", "k4"]


def test_a_rooms_gap_is_kept_until_it_closes(backend):
    """What a room's archive still owes (a catch-up failed), with the log's message it
    opened after, beside the room's cursor and whether it keeps an archive."""
    store, reopen = backend
    store.set_room_cursor(ROOM, "s1", 1000.0)
    store.set_room_gap(ROOM, 7)
    store.set_room_gap("o@muc.example", 9)
    store.set_room_gap("o@muc.example", None)
    store = reopen()
    assert store.room_gaps() == {ROOM: 7}
    assert store.room_states()[ROOM] == ("s1", 1000.0, None)
    store.set_room_gap(ROOM, None)
    assert reopen().room_gaps() == {}


def test_pruning_keeps_the_newest_message_so_the_sequence_goes_on(backend):
    """A week of silence in every room prunes the whole log; the next start must not give
    new messages numbers at or below the clients' cursors (they would count as delivered)."""
    store, reopen = backend
    store.apply([logged(1), logged(2), logged(3), CursorMoved("phone", ROOM, 3)])
    assert store.prune(5000.0) == 2
    state = reopen().load()
    assert state.last_seq == 3 and state.cursors == {("phone", ROOM): 3}


def test_stored_mentions_are_kept_forgotten_and_pruned_with_their_message(backend):
    store, reopen = backend
    store.apply([logged(1), logged(2), logged(3), Pushed(("phone", "watch"), ROOM, 1), Pushed(("phone",), ROOM, 2)])
    assert reopen().load().pushed == {"phone": {1: ROOM, 2: ROOM}, "watch": {1: ROOM}}
    store = reopen()
    store.apply([PushesForgotten("phone", (2,))])
    assert reopen().load().pushed == {"phone": {1: ROOM}, "watch": {1: ROOM}}
    store = reopen()
    store.prune(before=1000.0 + 1.5)  # message 1 goes: nothing left to skip
    assert reopen().load().pushed == {}


def test_a_read_marker_is_found_by_its_archive_id_with_what_came_after(backend):
    store, _ = backend
    private = Logged(3, ROOM, None, "bob", True, 1003.0, "psst", None, "[r] bob (private): psst", "<m3/>")
    store.apply([logged(1), logged(2), private, logged(4), logged(5, room="other@muc.example")])
    assert store.read_position(ROOM, "s2") == (2, 1)  # a private message is not the room's
    assert store.read_position(ROOM, "s5") is None  # another room's id
    assert store.read_position(ROOM, "nope") is None
