"""Nothing the core keeps grows without bound, whatever the rooms and the clients do."""

from __future__ import annotations

from minimix.core import actions as A
from minimix.core.catchup import HELD_MAX
from minimix.core.events import (
    CatchUpDone,
    CatchUpPage,
    ClientPresence,
    ExpiryDue,
    KnownMessages,
    RelaysAcked,
    RoomMessage,
)
from minimix.core.ledger_records import ClientsForgotten, CursorMoved, CursorsForgotten, Logged

from .test_bounce import NOW, ROOM, joined_engine, of
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
    assert ROOM not in engine.catchups.held
    # the archive's answer, late, is stale now: nothing more is relayed or held
    assert engine.handle(CatchUpPage(ROOM, (archived(1),), catch_up.token), NOW + 6) == []
    assert engine.handle(CatchUpDone(ROOM, (archived(2),), mam=True, token=catch_up.token), NOW + 7) == []
    assert relayed_texts(engine.handle(live(HELD_MAX), NOW + 8)) == [f"[r1] bob: live {HELD_MAX}"]


def test_a_message_without_ids_is_known_by_a_fixed_size_key_not_by_its_text():
    engine = joined_engine()
    engine.catchups.mam[ROOM] = False
    body = "x" * 200_000
    (store,) = of(engine.handle(RoomMessage(ROOM, "bob", body, message_id="m1", ref="<m/>"), NOW + 1), Logged)
    assert store.key.startswith("msg#") and len(store.key) == 36
    again = RoomMessage(ROOM, "bob", body, message_id="m1", ref="<m/>", history=True, stamp=NOW)
    assert engine.handle(again, NOW + 2) == []  # the same message, in the history of a later join


def test_keys_an_older_minimix_logged_still_match_after_an_upgrade():
    """Its keys were the message's ids and text themselves: read back before a room's
    history is asked again, they must still keep what was relayed from being relayed twice."""
    engine = joined_engine()
    engine.catchups.mam[ROOM] = False
    engine.handle(KnownMessages(ROOM, ("msg:bob:m1:hello:None", "oid:o2", "sid:s3")), NOW)
    history = [
        RoomMessage(ROOM, "bob", "hello", message_id="m1", ref="<1/>", history=True, stamp=NOW - 3),
        RoomMessage(ROOM, "bob", "two", origin_id="o2", message_id="x", ref="<2/>", history=True, stamp=NOW - 2),
        RoomMessage(ROOM, "bob", "three", stanza_id="s3", ref="<3/>", history=True, stamp=NOW - 1),
    ]
    for msg in history:
        assert engine.handle(msg, NOW + 1) == [], msg.body
    new = RoomMessage(ROOM, "bob", "new", message_id="m4", ref="<4/>", history=True, stamp=NOW)
    assert relayed_texts(engine.handle(new, NOW + 1)) == ["[r1] bob: new"]


DAY = 86400.0


def with_clients_gone(*clients: str):
    """A joined engine: each client had a relay of m1, then went away."""
    engine = joined_engine()
    for client in clients:
        engine.handle(ClientPresence(client, True), NOW)
    engine.router.globs = {"*": "all"}
    (relay,) = of(engine.handle(RoomMessage(ROOM, "bob", "m1", stanza_id="s1", ref="<1/>"), NOW + 1), A.Relay)
    engine.handle(RelaysAcked(tuple(r for _, r in relay.deliveries)), NOW + 2)
    for client in clients:
        engine.handle(ClientPresence(client, False), NOW + 3)
    return engine


def test_clients_away_for_long_lose_their_cursors_then_everything_but_their_settings():
    engine = with_clients_gone("r-1", "r-2", "r-3")
    led, router = engine.ledger, engine.router
    router.settings["r-2"] = router.settings_of("r-2").with_keyword("pizza", True)
    assert {k for k, _ in led.cursors} >= {"r-1", "r-2", "r-3"}
    now = NOW + 30 * DAY
    led.away_at.update({"r-1": now - 2 * DAY, "r-2": now - 11 * DAY, "r-3": now - DAY / 2})
    actions = engine.handle(ExpiryDue(DAY), now)
    assert CursorsForgotten(("r-1",)) in actions and ClientsForgotten(("r-2",)) in actions
    assert {k for k, _ in led.cursors} == {"r-3", "phone", "laptop"}
    assert "r-1" in led.away and "r-2" not in led.away  # r-1's mark stays
    assert "pizza" in router.settings["r-2"].keywords
    assert engine.handle(ExpiryDue(DAY), now) == []  # done: the ledger and its store agree


def test_a_client_back_is_never_forgotten():
    engine = with_clients_gone("r-1")
    engine.handle(ClientPresence("r-1", True), NOW + 40 * DAY)
    assert engine.handle(ExpiryDue(DAY), NOW + 40 * DAY) == []


def test_a_client_whose_cursors_went_gets_its_playback_from_its_mark():
    """Everything before its mark is pruned by the time its cursors go: nothing it is owed
    goes with them."""
    engine = with_clients_gone("r-1")
    engine.handle(RoomMessage(ROOM, "bob", "m2", stanza_id="s2", ref="<2/>"), NOW + 4)
    mark = engine.ledger.away["r-1"]
    engine.handle(ExpiryDue(DAY), NOW + 2 * DAY)
    (load,) = of(engine.handle(ClientPresence("r-1", True), NOW + 2 * DAY), A.LoadPlayback)
    assert (load.cursors, load.default) == ({}, mark)


def test_a_client_whose_cursors_went_starts_one_again_with_its_next_relay():
    engine = with_clients_gone("r-1")
    engine.handle(ExpiryDue(DAY), NOW + 2 * DAY)
    engine.handle(ClientPresence("r-1", True), NOW + 2 * DAY)
    actions = engine.handle(RoomMessage(ROOM, "bob", "m9", stanza_id="s9", ref="<9/>"), NOW + 2 * DAY + 1)
    (relay,) = of(actions, A.Relay)
    assert CursorMoved("r-1", ROOM, relay.seq - 1) in relay.changes
