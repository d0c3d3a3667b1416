"""A first join looks where the room's archive ends only once no room is joining: the joins
of a start with many new rooms go first, the archive queries after them."""

from __future__ import annotations

import random

from minimix.core import actions as A
from minimix.core.engine import Engine
from minimix.core.events import CatchUpDone, PepBookmarksLoaded, SelfAvailable, SessionEstablished
from minimix.core.policy import RoomPolicy
from minimix.core.types import RawItem, Source

ROOMS = tuple(f"r{i}@muc.example" for i in range(5))


def engine(join_concurrency: int) -> Engine:
    return Engine(
        default_nick="alice",
        policy=RoomPolicy(join_concurrency=join_concurrency),
        rng=random.Random(1),
    )


def start(e: Engine) -> list[A.Action]:
    e.handle(SessionEstablished(), 0.0)
    items = tuple(RawItem(r, Source.PEP, r, autojoin="true", nick="alice") for r in ROOMS)
    return e.handle(PepBookmarksLoaded(items), 0.0)


def catch_ups(actions: list[A.Action]) -> list[str]:
    return [a.room for a in actions if isinstance(a, A.CatchUp)]


def test_first_looks_wait_until_no_room_is_joining():
    e = engine(join_concurrency=2)
    joins = [a.room for a in start(e) if isinstance(a, A.Join)]
    assert len(joins) == 2
    seen: list[str] = []
    joined = 0
    while joins:
        room = joins.pop(0)
        actions = e.handle(SelfAvailable(room, "alice", frozenset({110})), 1.0)
        joined += 1
        joins += [a.room for a in actions if isinstance(a, A.Join)]
        seen += catch_ups(actions)
        if joined < len(ROOMS):
            assert seen == [], "no archive query while rooms are still joining"
    assert sorted(seen) == sorted(ROOMS), "every first join looks at its archive, once"


def test_a_room_left_before_its_first_look_is_not_looked_at():
    e = engine(join_concurrency=5)
    start(e)
    for room in ROOMS[:-1]:
        e.handle(SelfAvailable(room, "alice", frozenset({110})), 1.0)
    # the bookmarks change: the first room is no longer wanted
    items = tuple(RawItem(r, Source.PEP, r, autojoin="true", nick="alice") for r in ROOMS[1:])
    e.handle(PepBookmarksLoaded(items), 2.0)
    actions = e.handle(SelfAvailable(ROOMS[-1], "alice", frozenset({110})), 3.0)
    assert ROOMS[0] not in catch_ups(actions)
    assert sorted(catch_ups(actions)) == sorted(ROOMS[1:])


def test_after_the_last_join_every_room_gets_its_cursor():
    e = engine(join_concurrency=5)
    start(e)
    for room in ROOMS[:-1]:
        e.handle(SelfAvailable(room, "alice", frozenset({110})), 1.0)
    actions = e.handle(SelfAvailable(ROOMS[-1], "alice", frozenset({110})), 1.0)
    for action in actions:
        if isinstance(action, A.CatchUp):
            e.handle(CatchUpDone(action.room, mam=True, head=("id-1", 1.0)), 1.0)
    assert e.catchups.cursor[ROOMS[0]] == ("id-1", 1.0)


def saved_cursors(actions: list[A.Action]) -> dict[str, object]:
    return {a.room: a.cursor for a in actions if isinstance(a, A.SaveRoom) and a.cursor is not None}


def test_a_first_join_gets_a_time_cursor_at_once():
    """Stopped before the first look at the archive, the next start still catches up from the
    join (by time) instead of treating the room as new and missing what came meanwhile.  The
    cursor is in memory at once; it is saved with the looks, once no room is joining."""
    e = engine(join_concurrency=5)
    start(e)
    actions = e.handle(SelfAvailable(ROOMS[0], "alice", frozenset({110})), 7.0)
    assert e.catchups.cursor[ROOMS[0]] == (None, 7.0)
    assert saved_cursors(actions) == {}  # the other rooms are still joining
    for n, room in enumerate(ROOMS[1:], start=1):
        actions = e.handle(SelfAvailable(room, "alice", frozenset({110})), 7.0 + n)
    assert saved_cursors(actions) == {room: (None, 7.0 + n) for n, room in enumerate(ROOMS)}


def test_the_first_look_turns_the_time_cursor_into_the_archive_id():
    e = engine(join_concurrency=5)
    start(e)
    e.handle(SelfAvailable(ROOMS[0], "alice", frozenset({110})), 7.0)
    actions = e.handle(CatchUpDone(ROOMS[0], mam=True, head=("id-9", 6.0)), 8.0)
    assert saved_cursors(actions) == {ROOMS[0]: ("id-9", 6.0)}
    # an empty archive keeps the join's time cursor
    e.handle(SelfAvailable(ROOMS[1], "alice", frozenset({110})), 7.5)
    actions = e.handle(CatchUpDone(ROOMS[1], mam=True, head=None), 8.0)
    assert ROOMS[1] not in saved_cursors(actions)
    assert e.catchups.cursor[ROOMS[1]] == (None, 7.5)


def test_a_live_message_before_the_first_look_wins():
    from minimix.core.events import RoomMessage

    e = engine(join_concurrency=5)
    start(e)
    e.handle(SelfAvailable(ROOMS[0], "alice", frozenset({110})), 7.0)
    e.handle(RoomMessage(ROOMS[0], "bob", "hi", stanza_id="id-10", message_id="m10", ref="<m/>"), 7.2)
    actions = e.handle(CatchUpDone(ROOMS[0], mam=True, head=("id-9", 6.0)), 8.0)
    assert ROOMS[0] not in saved_cursors(actions)
    assert e.catchups.cursor[ROOMS[0]] == ("id-10", 7.2)
