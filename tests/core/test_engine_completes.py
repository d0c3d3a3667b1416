"""The engine completes what the rooms, the presence mirror and the commands ask for with
what only it knows (the bookmarks, the rooms' archives, which rooms it is in): the app
that carries the actions out decides nothing."""

from __future__ import annotations

import random

from minimix.core import actions as A
from minimix.core.engine import HISTORY_SLACK_S, Engine
from minimix.core.events import (
    CatchUpDone,
    ClientPresence,
    PepBookmarksLoaded,
    SelfAvailable,
    SelfUnavailable,
    SessionEstablished,
    SessionLost,
    TimerFired,
    TimerKind,
)
from minimix.core.types import RawItem, Source

ROOM, VENUE = "old@muc.example", "new@muc.example"
NOW = 1000.0


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def engine_in(*rooms: str) -> Engine:
    engine = Engine(default_nick="alice", rng=random.Random(1))
    engine.handle(SessionEstablished(), NOW)
    engine.handle(PepBookmarksLoaded(tuple(RawItem(r, Source.PEP, r, autojoin="true", nick="al") for r in rooms)), NOW)
    for room in rooms:
        engine.handle(SelfAvailable(room, "al", frozenset({110})), NOW)
    return engine


def destroyed(venue: str) -> SelfUnavailable:
    return SelfUnavailable(ROOM, "al", frozenset({110}), reason="moving", destroyed=True, venue=venue)


def test_a_destroyed_rooms_bookmark_moves_to_its_venue():
    engine = engine_in(ROOM)
    (write,) = of(engine.handle(destroyed(VENUE), NOW + 1), A.WriteBookmark)
    assert write == A.WriteBookmark(ROOM, engine.bookmark(ROOM), "room destroyed: moving", venue=VENUE)


def test_a_venue_the_user_has_a_bookmark_for_keeps_it_and_the_old_one_only_loses_autojoin():
    engine = engine_in(ROOM, VENUE)
    (write,) = of(engine.handle(destroyed(VENUE), NOW + 1), A.WriteBookmark)
    assert (write.room, write.autojoin, write.venue) == (ROOM, False, None)
    assert "bookmarked already" in write.reason


def test_a_room_named_as_its_own_venue_only_loses_autojoin():
    engine = engine_in(ROOM)
    (write,) = of(engine.handle(destroyed(ROOM), NOW + 1), A.WriteBookmark)
    assert (write.autojoin, write.venue) == (False, None) and "the room itself" in write.reason


def test_a_room_without_an_archive_joins_with_its_history_since_the_cursor_keys_read_first():
    engine = engine_in(ROOM)
    engine.handle(CatchUpDone(ROOM, mam=False), NOW + 1)
    actions = engine.handle(SessionLost(), NOW + 2) + engine.handle(SessionEstablished(), NOW + 3)
    since = engine.history_since(ROOM)
    assert since is not None
    keys, join = of(actions, A.LoadKeys), of(actions, A.Join)
    assert keys == [A.LoadKeys(ROOM, since - HISTORY_SLACK_S)] and join[0].history_since == since
    assert actions.index(keys[0]) < actions.index(join[0])


def test_the_users_presence_goes_to_the_rooms_we_are_in():
    engine = engine_in(ROOM, VENUE)
    engine.handle(SelfUnavailable(VENUE, "al", frozenset({110, 307})), NOW + 1)  # kicked from one
    engine.handle(ClientPresence("phone", True, "away", "lunch"), NOW + 1)
    (mirror,) = of(engine.handle(TimerFired("", TimerKind.PRESENCE), NOW + 4), A.MirrorPresence)
    assert mirror == A.MirrorPresence("away", "lunch", ((ROOM, "al"),))
