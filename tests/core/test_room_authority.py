"""A room's times and ids come only from the room: its archive, the history it replays at a
join, its stanza-id on groupchat.  What an occupant writes into his own message (a <delay/>
dated 2999, a stanza-id claimed on a private message) moves neither a room's cursor nor
the time a message is logged with."""

from __future__ import annotations

from minimix.core import actions as A
from minimix.core.events import CatchUpDone, RoomMessage
from minimix.core.ledger_records import Logged

from .test_bounce import NOW, ROOM, joined_engine, of
from .test_catch_up_pages import rejoined

YEAR_2999 = 32472144000.0


def stored(actions) -> Logged:
    (store,) = of(actions, Logged)
    return store


def test_a_live_line_dated_2999_is_logged_and_relayed_when_it_came():
    engine = joined_engine()
    actions = engine.handle(RoomMessage(ROOM, "bob", "hi", stanza_id="s1", ref="<m/>", stamp=YEAR_2999), NOW + 1)
    assert stored(actions).stamp == NOW + 1
    assert stored(actions).room_cursor == ("s1", NOW + 1)
    assert engine.catchups.cursor[ROOM] == ("s1", NOW + 1)
    assert {r.stamp for r in of(actions, A.Relay)} == {NOW + 1}


def test_a_private_message_never_moves_the_room_cursor_nor_claims_a_logged_id():
    engine = joined_engine()
    before = engine.catchups.cursor[ROOM]
    pm = RoomMessage(ROOM, "bob", "psst", private=True, stanza_id="forged", ref="<m/>", stamp=YEAR_2999)
    actions = engine.handle(pm, NOW + 1)
    store = stored(actions)
    assert (store.stanza_id, store.room_cursor, store.stamp) == (None, None, NOW + 1)
    assert not of(actions, A.SaveRoom)
    assert engine.catchups.cursor[ROOM] == before


def test_the_room_s_own_times_are_kept_but_never_later_than_now():
    engine, _ = rejoined()
    past, future = NOW - 50, NOW + 10_000
    page = (
        RoomMessage(ROOM, "bob", "a", stanza_id="a", ref="<a/>", stamp=past, archived=True),
        RoomMessage(ROOM, "bob", "b", stanza_id="b", ref="<b/>", stamp=future, archived=True),
    )
    actions = engine.handle(CatchUpDone(ROOM, page, mam=True), NOW + 5)
    assert [s.stamp for s in of(actions, Logged)] == [past, NOW + 5]
    assert engine.catchups.cursor[ROOM] == ("b", NOW + 5)


def test_history_replayed_at_a_join_keeps_the_room_s_time_clamped_to_now():
    engine = joined_engine()
    engine.catchups.mam[ROOM] = False
    old = RoomMessage(ROOM, "bob", "old", ref="<o/>", stamp=NOW - 30, history=True)
    assert stored(engine.handle(old, NOW + 1)).room_cursor == (None, NOW - 30)
    odd = RoomMessage(ROOM, "bob", "odd", ref="<d/>", stamp=YEAR_2999, history=True)
    assert stored(engine.handle(odd, NOW + 2)).room_cursor == (None, NOW + 2)
    live = RoomMessage(ROOM, "bob", "live", ref="<l/>", stamp=NOW - 30)  # a live one's own delay
    assert stored(engine.handle(live, NOW + 3)).room_cursor == (None, NOW + 3)
    assert engine.history_since(ROOM) == NOW + 3


def test_a_first_look_at_an_archive_whose_clock_is_ahead_starts_from_now():
    engine = joined_engine()
    engine.catchups.cursor.clear()
    engine.catchups.provisional.clear()
    engine.catchups.provisional[ROOM] = engine.catchups.cursor[ROOM] = (None, NOW)
    actions = engine.handle(CatchUpDone(ROOM, mam=True, head=("h", YEAR_2999)), NOW + 1)
    assert of(actions, A.SaveRoom) == [A.SaveRoom(ROOM, cursor=("h", NOW + 1))]
