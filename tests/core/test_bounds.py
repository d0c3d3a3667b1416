"""Nothing the core keeps grows without bound, whatever the rooms and the clients do."""

from __future__ import annotations

from minimix.core import actions as A
from minimix.core.clients import HELD_MAX
from minimix.core.events import CatchUpDone, CatchUpPage, RoomMessage

from .test_bounce import NOW, ROOM, of
from .test_catch_up_pages import archived, rejoined, relayed_texts


def live(n: int) -> RoomMessage:
    return RoomMessage(ROOM, "bob", f"live {n}", stanza_id=f"l{n}", ref=f"<l{n}/>")


def test_live_traffic_held_back_during_a_catch_up_is_bounded_and_then_goes_out_in_order():
    engine, catch_up = rejoined()
    for n in range(HELD_MAX - 1):
        assert engine.handle(live(n), NOW + 4) == []  # held back: the archive's come first
    released = engine.handle(live(HELD_MAX - 1), NOW + 5)
    assert relayed_texts(released) == [f"[r1] bob: live {n}" for n in range(HELD_MAX)]
    assert [n.event for n in of(released, A.Note)] == ["catch-up given up: too many live messages held back meanwhile"]
    assert ROOM not in engine.clients.catching_up
    # the archive's answer, late, is stale now: nothing more is relayed or held
    assert engine.handle(CatchUpPage(ROOM, (archived(1),), catch_up.token), NOW + 6) == []
    assert engine.handle(CatchUpDone(ROOM, (archived(2),), mam=True, token=catch_up.token), NOW + 7) == []
    assert relayed_texts(engine.handle(live(HELD_MAX), NOW + 8)) == [f"[r1] bob: live {HELD_MAX}"]
