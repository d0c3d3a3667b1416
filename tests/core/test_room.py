"""The room machine, transition by transition (table-driven)."""

import random

import pytest

from minimix.core import actions as A
from minimix.core.events import (
    EXTERNAL_ROOM_EVENTS,
    JoinSlot,
    OccupantGone,
    PingOutcome,
    PresenceError,
    ReservedNickFound,
    SelfAvailable,
    SelfPingAnswered,
    SelfUnavailable,
    TimerFired,
    TimerKind,
    Unwanted,
    Wanted,
)
from minimix.core.policy import RoomPolicy
from minimix.core.room import TRANSITIONS, Ctx, IllegalTransition, Room, RoomState, handle
from minimix.core.types import Want

R = "room@muc.example"
S = RoomState
POLICY = RoomPolicy(backoff_jitter=0.0)


def ctx(now=1000.0, policy=POLICY):
    return Ctx(now, policy, random.Random(0))


ALICE = Want("alice")


def room_in(state: S, *, nick="alice", want=ALICE, **kw) -> Room:
    room = Room(R, want=want, state=state, nick=nick if state in (S.JOINING, S.JOINED, S.LEAVING) else None)
    for key, value in kw.items():
        setattr(room, key, value)
    return room


def step(room, event, now=1000.0, policy=POLICY):
    c = ctx(now, policy)
    actions = handle(room, event, c)
    return [a for a in actions if not isinstance(a, A.Note)], [a for a in actions if isinstance(a, A.Note)]


def kinds(actions):
    return [type(a).__name__ for a in actions]


def test_table_is_total_for_external_events():
    for state in S:
        if state is S.GONE:
            continue
        for event_type in EXTERNAL_ROOM_EVENTS:
            assert (state, event_type) in TRANSITIONS, (state, event_type)


def test_internal_event_in_wrong_state_is_illegal():
    with pytest.raises(IllegalTransition):
        handle(room_in(S.JOINED), JoinSlot(R), ctx())


def test_waiting_slot_sends_join_and_arms_timeout():
    room = room_in(S.WAITING, want=Want("alice", "pw"))
    actions, notes = step(room, JoinSlot(R))
    assert room.state is S.JOINING
    assert actions == [A.Join(R, "alice", "pw"), A.Arm(R, TimerKind.JOIN_TIMEOUT, 1060.0)]
    assert notes[0].fields == {"room": R, "from": "waiting", "to": "joining"}


def test_join_succeeds():
    room = room_in(S.JOINING, armed={TimerKind.JOIN_TIMEOUT: 1060.0})
    actions, notes = step(room, SelfAvailable(R, "alice", frozenset({110})))
    assert room.state is S.JOINED
    assert kinds(actions) == ["Disarm", "Arm"]  # join timeout off, self-ping on
    assert actions[1].kind is TimerKind.SELF_PING
    assert 1300.0 <= actions[1].at <= 1330.0  # idle time + up to a tenth of it (stagger)
    assert notes[-1].fields["to"] == "joined"


@pytest.mark.parametrize(
    ("condition", "state", "action_kinds", "reason_part"),
    [
        ("forbidden", S.GAVE_UP, ["DisableAutojoin"], "banned"),
        ("not-authorized", S.GAVE_UP, [], "password"),
        ("registration-required", S.GAVE_UP, [], "members-only"),
        ("item-not-found", S.BACKOFF, ["Arm"], "join failed (item-not-found)"),
        ("service-unavailable", S.BACKOFF, ["Arm"], "service-unavailable"),
        ("remote-server-timeout", S.BACKOFF, ["Arm"], "remote-server-timeout"),
        ("not-allowed", S.BACKOFF, ["Arm"], "not-allowed"),
    ],
)
def test_join_errors(condition, state, action_kinds, reason_part):
    room = room_in(S.JOINING, armed={TimerKind.JOIN_TIMEOUT: 1060.0})
    actions, _ = step(room, PresenceError(R, "alice", condition))
    assert room.state is state
    assert [k for k in kinds(actions) if k != "Disarm"] == action_kinds
    assert reason_part in room.reason
    assert TimerKind.JOIN_TIMEOUT not in room.armed


def test_ban_keeps_bookmark_when_configured():
    room = room_in(S.JOINING)
    actions, _ = step(room, PresenceError(R, "alice", "forbidden"), policy=RoomPolicy(on_ban="keep-bookmark"))
    assert room.state is S.GAVE_UP and "DisableAutojoin" not in kinds(actions)


def test_nick_conflict_tries_fallbacks_then_backs_off():
    room = room_in(S.JOINING)
    for expected in ("alice_", "alice__", "alice___"):
        actions, _ = step(room, PresenceError(R, "alice", "conflict"))
        assert room.state is S.JOINING
        assert actions[0] == A.Join(R, expected, None)
    step(room, PresenceError(R, "alice___", "conflict"))
    assert room.state is S.BACKOFF


def test_fallback_nick_is_regained_when_holder_leaves():
    room = room_in(S.JOINING, fallback=1)
    room.nick = "alice_"
    actions, _ = step(room, SelfAvailable(R, "alice_", frozenset({110})))
    assert room.state is S.JOINED
    assert TimerKind.REGAIN in room.armed  # regain every nick_regain_interval_s
    actions, _ = step(room, OccupantGone(R, "alice"))
    assert A.ChangeNick(R, "alice") in actions
    assert room.pending_nick == "alice"
    step(room, SelfUnavailable(R, "alice_", frozenset({110, 303}), new_nick="alice"))
    step(room, SelfAvailable(R, "alice", frozenset({110})))
    assert room.nick == "alice" and room.pending_nick is None
    assert TimerKind.REGAIN not in room.armed


def test_regain_timer_retries_and_gives_up_when_service_ignores():
    room = room_in(S.JOINED, nick="alice_", armed={TimerKind.REGAIN: 1060.0})
    actions, _ = step(room, TimerFired(R, TimerKind.REGAIN), now=1060.0)
    assert A.ChangeNick(R, "alice") in actions
    actions, _ = step(room, PresenceError(R, "alice", "conflict"), now=1061.0)
    assert room.pending_nick is None and TimerKind.REGAIN in room.armed
    step(room, TimerFired(R, TimerKind.REGAIN), now=1121.0)
    assert room.pending_nick == "alice"
    # no answer for a whole interval: the service ignores us, stop asking
    actions, _ = step(room, TimerFired(R, TimerKind.REGAIN), now=1181.0)
    assert room.regain_futile and "ChangeNick" not in kinds(actions)


def test_not_acceptable_asks_for_the_reserved_nick():
    room = room_in(S.JOINING)
    actions, _ = step(room, PresenceError(R, "alice", "not-acceptable"))
    assert actions == [A.QueryReservedNick(R)]
    actions, _ = step(room, ReservedNickFound(R, "Alice Liddell"))
    assert actions[0] == A.Join(R, "Alice Liddell", None)
    step(room, PresenceError(R, "Alice Liddell", "not-acceptable"))
    assert room.state is S.BACKOFF  # asked once already


def test_join_timeout_backs_off_and_late_answer_is_accepted():
    room = room_in(S.JOINING, armed={TimerKind.JOIN_TIMEOUT: 1060.0})
    step(room, TimerFired(R, TimerKind.JOIN_TIMEOUT), now=1060.0)
    assert room.state is S.BACKOFF
    step(room, SelfAvailable(R, "alice", frozenset({110})), now=1061.0)
    assert room.state is S.JOINED and TimerKind.REJOIN not in room.armed


def test_kicks_rejoin_with_backoff_then_give_up():
    room = room_in(S.JOINED)
    delays = []
    now = 1000.0
    for _ in range(2):
        actions, _ = step(room, SelfUnavailable(R, "alice", frozenset({110, 307}), actor="mod"), now=now)
        assert room.state is S.BACKOFF
        at = room.retry_at
        delays.append(at - now)
        step(room, TimerFired(R, TimerKind.REJOIN), now=at)
        step(room, JoinSlot(R), now=at)
        step(room, SelfAvailable(R, "alice", frozenset({110})), now=at)
        now = at + 1
    assert delays == [10.0, 20.0]
    step(room, SelfUnavailable(R, "alice", frozenset({110, 307})), now=now)
    assert room.state is S.GAVE_UP and "kicked 3 times" in room.reason


def test_old_kicks_are_forgotten():
    room = room_in(S.JOINED, kicks=(0.0, 10.0))
    step(room, SelfUnavailable(R, "alice", frozenset({110, 307})), now=5000.0)
    assert room.state is S.BACKOFF


def test_kick_rejoin_off_gives_up():
    room = room_in(S.JOINED)
    step(room, SelfUnavailable(R, "alice", frozenset({110, 307})), policy=RoomPolicy(kick_rejoin=False))
    assert room.state is S.GAVE_UP


def test_kick_with_333_is_a_technical_removal():
    room = room_in(S.JOINED)
    step(room, SelfUnavailable(R, "alice", frozenset({110, 307, 333})))
    assert room.state is S.BACKOFF and "technical" in room.reason and room.kicks == ()


@pytest.mark.parametrize(
    ("codes", "state", "action_kinds"),
    [
        ({110, 301}, S.GAVE_UP, ["DisableAutojoin"]),
        ({110, 321}, S.GAVE_UP, []),
        ({110, 322}, S.GAVE_UP, []),
        ({110, 332}, S.BACKOFF, ["Arm"]),
        ({110}, S.BACKOFF, ["Arm"]),
    ],
)
def test_removals(codes, state, action_kinds):
    room = room_in(S.JOINED)
    actions, _ = step(room, SelfUnavailable(R, "alice", frozenset(codes)))
    assert room.state is state
    assert [k for k in kinds(actions) if k != "Disarm"] == action_kinds


def test_destroyed_room_with_venue_moves_the_bookmark():
    room = room_in(S.JOINED)
    actions, _ = step(room, SelfUnavailable(R, "alice", destroyed=True, venue="new@muc.example", reason="moving"))
    assert A.MoveBookmark(R, "new@muc.example", "room destroyed: moving") in actions
    assert room.state is S.GAVE_UP


def test_destroyed_room_without_venue_disables_autojoin():
    room = room_in(S.JOINED)
    actions, _ = step(room, SelfUnavailable(R, "alice", destroyed=True))
    assert A.DisableAutojoin(R, "room destroyed") in actions


def test_created_room_is_destroyed_again():
    room = room_in(S.JOINING)
    actions, _ = step(room, SelfAvailable(R, "alice", frozenset({110, 201})))
    assert room.state is S.GAVE_UP
    assert kinds(actions)[:1] == ["DestroyRoom"]


def test_created_room_is_kept_when_allowed():
    room = room_in(S.JOINING)
    step(room, SelfAvailable(R, "alice", frozenset({110, 201})), policy=RoomPolicy(allow_create=True))
    assert room.state is S.JOINED


def test_gave_up_stays_until_bookmark_changes():
    room = room_in(S.GAVE_UP, reason="banned")
    step(room, Wanted(R, "alice"))
    assert room.state is S.GAVE_UP
    step(room, Wanted(R, "alice2"))
    assert room.state is S.WAITING


def test_unwanted_while_joined_leaves():
    room = room_in(S.JOINED, armed={TimerKind.SELF_PING: 1300.0})
    actions, _ = step(room, Unwanted(R))
    assert room.state is S.LEAVING
    assert actions[0] == A.Leave(R, "alice", None)
    assert A.Disarm(R, TimerKind.SELF_PING) in actions
    step(room, SelfUnavailable(R, "alice", frozenset({110})))
    assert room.state is S.GONE


def test_password_change_rejoins():
    room = room_in(S.JOINED, joined_password=None)
    actions, _ = step(room, Wanted(R, "alice", "new"))
    assert room.state is S.LEAVING and kinds(actions)[0] == "Leave"
    step(room, SelfUnavailable(R, "alice", frozenset({110})))
    assert room.state is S.WAITING
    actions, _ = step(room, JoinSlot(R))
    assert actions[0] == A.Join(R, "alice", "new")


def test_nick_change_in_bookmark_changes_nick():
    room = room_in(S.JOINED)
    actions, _ = step(room, Wanted(R, "bob"))
    assert actions[0] == A.ChangeNick(R, "bob")


def test_bookmark_change_during_join_is_settled_after():
    room = room_in(S.JOINING)
    step(room, Wanted(R, "bob"))
    actions, _ = step(room, SelfAvailable(R, "alice", frozenset({110})))
    assert A.ChangeNick(R, "bob") in actions


def test_self_ping_waits_for_silence():
    room = room_in(S.JOINED, last_activity=1000.0, armed={TimerKind.SELF_PING: 1300.0})
    room.touch(1200.0)
    actions, _ = step(room, TimerFired(R, TimerKind.SELF_PING), now=1300.0)
    assert kinds(actions) == ["Arm"] and actions[0].at >= 1500.0  # re-armed from the last traffic
    actions, _ = step(room, TimerFired(R, TimerKind.SELF_PING), now=actions[0].at)
    assert actions == [A.SelfPing(R, "alice")]


def test_self_ping_never_while_nick_change_pending():
    room = room_in(S.JOINED, pending_nick="bob", armed={TimerKind.SELF_PING: 1300.0})
    actions, _ = step(room, TimerFired(R, TimerKind.SELF_PING), now=1300.0)
    assert "SelfPing" not in kinds(actions)


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (PingOutcome.JOINED, S.JOINED),
        (PingOutcome.UNDECIDED, S.JOINED),
        (PingOutcome.GONE, S.WAITING),
        (PingOutcome.NICK_CHANGED, S.WAITING),
    ],
)
def test_self_ping_outcomes(outcome, state):
    room = room_in(S.JOINED, ping_in_flight=True)
    step(room, SelfPingAnswered(R, outcome))
    assert room.state is state
    if state is S.JOINED:
        assert TimerKind.SELF_PING in room.armed


def test_stale_timer_is_ignored():
    room = room_in(S.JOINED)
    actions, notes = step(room, TimerFired(R, TimerKind.REJOIN))
    assert actions == [] and notes == [] and room.state is S.JOINED


def test_gave_up_leaves_a_late_join():
    room = room_in(S.GAVE_UP)
    actions, _ = step(room, SelfAvailable(R, "alice", frozenset({110})))
    assert actions == [A.Leave(R, "alice", None)] and room.state is S.GAVE_UP


def test_a_handler_that_leads_where_the_table_does_not_say_is_a_bug(monkeypatch):
    """The table names every state an entry may lead to; anything else raises."""
    from minimix.core import room as room_module

    entry = TRANSITIONS[(S.JOINED, OccupantGone)]
    monkeypatch.setitem(
        room_module.TRANSITIONS, (S.JOINED, OccupantGone), room_module.go(lambda r, e, c: S.BACKOFF, S.JOINED)
    )
    with pytest.raises(IllegalTransition, match="led to backoff"):
        handle(room_in(S.JOINED), OccupantGone(R, "bob"), ctx())
    assert entry.targets == {S.JOINED}


def test_the_drawn_room_machine_is_the_table():
    """docs/room-machine.dot and .svg are drawn from TRANSITIONS (make diagram)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "docs" / "make_room_diagram.py"
    spec = importlib.util.spec_from_file_location("make_room_diagram", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.stale() == [], "the room diagram is stale: run `make diagram`"
