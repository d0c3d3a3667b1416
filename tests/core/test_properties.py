"""Hypothesis: the reconciler converges, and no sequence of events breaks the rooms' rules."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from minimix.core import actions as A
from minimix.core.backoff import nominal_delay
from minimix.core.events import (
    OccupantGone,
    PingOutcome,
    PresenceError,
    ReservedNickFound,
    SelfAvailable,
    SelfPingAnswered,
    SelfUnavailable,
    TimerFired,
    TimerKind,
)
from minimix.core.policy import RoomPolicy
from minimix.core.room import RoomState
from minimix.core.rooms import Rooms, plan
from minimix.core.types import Want

ROOMS = [f"r{i}@muc.example" for i in range(4)]
NICKS = ["alice", "al", "alice_"]
room_st = st.sampled_from(ROOMS)
want_st = st.builds(Want, st.sampled_from(NICKS), st.sampled_from([None, "pw", "pw2"]))
wants_st = st.dictionaries(room_st, want_st, max_size=len(ROOMS))


def apply_joins(rooms: Rooms, now: float) -> None:
    """Let every join and nick change in flight succeed (what a friendly server does)."""
    for room in list(rooms):
        if room.state is RoomState.JOINED and room.pending_nick:
            new = room.pending_nick
            rooms.handle(SelfUnavailable(room.jid, room.nick, frozenset({110, 303}), new_nick=new), now)
            rooms.handle(SelfAvailable(room.jid, new, frozenset({110})), now)
        elif room.state is RoomState.JOINING:
            rooms.handle(SelfAvailable(room.jid, room.nick, frozenset({110})), now)
        elif room.state is RoomState.LEAVING:
            rooms.handle(SelfUnavailable(room.jid, room.nick or "x", frozenset({110})), now)


@given(st.lists(wants_st, min_size=1, max_size=6))
def test_reconcile_converges_to_the_last_bookmark_set(sequence):
    rooms = Rooms(RoomPolicy(join_concurrency=2), random.Random(0))
    rooms.session_established(0.0)
    for wants in sequence:
        rooms.reconcile(wants, 1.0)
    final = sequence[-1]
    for _ in range(10):  # settle: joins answered, leaves confirmed, queued joins started
        apply_joins(rooms, 2.0)
        rooms.reconcile(final, 2.0)
    assert plan(final, rooms.rooms) == []
    assert rooms.reconcile(final, 3.0) == []  # idempotent: asking again does nothing
    assert {r.jid for r in rooms if r.state is RoomState.JOINED} == set(final)
    for jid, want in final.items():
        room = rooms.get(jid)
        assert room.nick == want.nick and room.joined_password == want.password


@given(wants_st, wants_st)
def test_plan_then_apply_yields_no_more_events(first, second):
    rooms = Rooms(rng=random.Random(0))
    rooms.reconcile(first, 0.0)
    rooms.reconcile(second, 0.0)
    assert plan(second, rooms.rooms) == []


CONDITIONS = ["conflict", "forbidden", "not-authorized", "item-not-found", "service-unavailable",
              "not-acceptable", "registration-required", "remote-server-timeout", "jid-malformed"]
CODES = [frozenset(c) for c in ({110}, {110, 307}, {110, 301}, {110, 321}, {110, 322}, {110, 332},
                                 {110, 307, 333}, {110, 303}, {110, 201}, {110, 210})]


class RoomsMachine(RuleBasedStateMachine):
    """Random server behaviour, timers and bookmark edits against the rules."""

    def __init__(self):
        super().__init__()
        self.policy = RoomPolicy(join_concurrency=2, kick_rejoin_max=3)
        self.rooms = Rooms(self.policy, random.Random(1))
        self.now = 1000.0
        self.timers: dict[tuple[str, TimerKind], float] = {}
        self.not_before: dict[str, float] = {}  # no join before this time (backoff)
        self.banned: set[str] = set()  # never joined again until the bookmark changes
        self.in_flight: set[str] = set()
        self.wants: dict[str, Want] = {}

    def run(self, actions):
        for action in actions:
            match action:
                case A.Arm(room, kind, at):
                    assert at >= self.now
                    self.timers[(room, kind)] = at
                case A.Disarm(room, kind):
                    self.timers.pop((room, kind), None)
                case A.Join(room, _, _):
                    assert room not in self.banned, f"rejoined banned {room}"
                    assert self.now >= self.not_before.get(room, 0.0) - 1e-9, "rejoined before its backoff"
                    self.in_flight.add(room)
                case A.DisableAutojoin(room, reason) if "banned" in reason or "forbidden" in reason:
                    self.banned.add(room)
        for room in self.rooms:
            if room.state is RoomState.JOINED:
                self.not_before.pop(room.jid, None)  # in again: the backoff is over
            if room.state is RoomState.BACKOFF and room.retry_at is not None:
                self.not_before[room.jid] = max(self.not_before.get(room.jid, 0.0), room.retry_at)
            if room.state is RoomState.GAVE_UP and room.reason and room.reason.startswith("banned"):
                self.banned.add(room.jid)

    def answered(self, room):
        self.in_flight.discard(room)

    @rule(wants=wants_st)
    def bookmarks(self, wants):
        for jid, want in wants.items():
            if self.wants.get(jid) != want:  # the bookmark changed: the rules reset
                self.banned.discard(jid)
                self.not_before.pop(jid, None)
        for jid in set(self.wants) - set(wants):
            self.banned.discard(jid)
            self.not_before.pop(jid, None)
        self.wants = dict(wants)
        self.run(self.rooms.reconcile(wants, self.now))

    @rule(up=st.booleans())
    def session(self, up):
        if up:
            self.run(self.rooms.session_established(self.now))
        else:
            self.in_flight.clear()
            self.run(self.rooms.session_lost(self.now))

    @rule(dt=st.floats(0.0, 400.0))
    def time_passes(self, dt):
        self.now += dt

    @precondition(lambda self: self.timers)
    @rule(data=st.data())
    def timer_fires(self, data):
        (room, kind), at = data.draw(st.sampled_from(sorted(self.timers.items(), key=lambda kv: kv[1])))
        self.now = max(self.now, at)
        del self.timers[(room, kind)]
        if kind is TimerKind.JOIN_TIMEOUT:
            self.answered(room)
        self.run(self.rooms.handle(TimerFired(room, kind), self.now))

    @rule(room=room_st, kind=st.sampled_from(TimerKind))
    def stale_timer(self, room, kind):
        if (room, kind) not in self.timers:
            self.run(self.rooms.handle(TimerFired(room, kind), self.now))

    @rule(room=room_st, nick=st.sampled_from(NICKS), codes=st.sampled_from(CODES))
    def self_available(self, room, nick, codes):
        self.answered(room)
        self.run(self.rooms.handle(SelfAvailable(room, nick, codes), self.now))

    @rule(room=room_st, nick=st.sampled_from(NICKS), codes=st.sampled_from(CODES),
          destroyed=st.booleans(), venue=st.sampled_from([None, "new@muc.example"]))
    def self_unavailable(self, room, nick, codes, destroyed, venue):
        self.answered(room)
        ev = SelfUnavailable(room, nick, codes, new_nick="al" if 303 in codes else None,
                             destroyed=destroyed, venue=venue)
        self.run(self.rooms.handle(ev, self.now))

    @rule(room=room_st, nick=st.sampled_from(NICKS), condition=st.sampled_from(CONDITIONS))
    def presence_error(self, room, nick, condition):
        self.answered(room)
        self.run(self.rooms.handle(PresenceError(room, nick, condition), self.now))

    @rule(room=room_st, nick=st.sampled_from(NICKS))
    def occupant_gone(self, room, nick):
        self.run(self.rooms.handle(OccupantGone(room, nick), self.now))

    @rule(room=room_st, outcome=st.sampled_from(PingOutcome))
    def ping_answer(self, room, outcome):
        self.run(self.rooms.handle(SelfPingAnswered(room, outcome), self.now))

    @rule(room=room_st, nick=st.sampled_from([None, "Alice L"]))
    def reserved(self, room, nick):
        self.run(self.rooms.handle(ReservedNickFound(room, nick), self.now))

    @invariant()
    def counts_match_states(self):
        for state in RoomState:
            if state is not RoomState.GONE:
                assert self.rooms.count(state) == sum(1 for r in self.rooms if r.state is state), state

    @invariant()
    def bounded_joins_in_flight(self):
        joining = sum(1 for r in self.rooms if r.state is RoomState.JOINING)
        assert joining <= self.policy.join_concurrency or not self.rooms.online

    @invariant()
    def only_wanted_rooms_join(self):
        for room in self.rooms:
            if room.state in (RoomState.WAITING, RoomState.JOINING, RoomState.JOINED, RoomState.BACKOFF):
                assert room.want is not None

    @invariant()
    def no_joins_while_offline(self):
        if not self.rooms.online:
            assert all(r.state is not RoomState.JOINING for r in self.rooms)

    @invariant()
    def timers_belong_to_their_state(self):
        expected = {
            RoomState.JOINING: {TimerKind.JOIN_TIMEOUT},
            RoomState.JOINED: {TimerKind.REGAIN, TimerKind.SELF_PING},
            RoomState.LEAVING: {TimerKind.LEAVE_TIMEOUT},
            RoomState.BACKOFF: {TimerKind.REJOIN},
        }
        for room in self.rooms:
            assert set(room.armed) <= expected.get(room.state, set()), (room.state, room.armed)
            if room.state is RoomState.BACKOFF:
                assert TimerKind.REJOIN in room.armed


RoomsMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestRooms = RoomsMachine.TestCase


@given(st.integers(1, 80), st.floats(0.1, 100), st.floats(1, 1000), st.floats(0, 1), st.randoms())
def test_backoff_is_never_shorter_than_nominal_and_never_beyond_cap(attempt, base, cap, jitter, rnd):
    from minimix.core.backoff import backoff_delay

    d = backoff_delay(attempt, base=base, cap=cap, jitter=jitter, rng=rnd)
    nominal = nominal_delay(attempt, base=base, cap=cap)
    assert nominal <= d <= nominal * (1 + jitter) + 1e-9
    assert nominal <= cap


def _joined_notes(n: int) -> list:
    rooms = Rooms(RoomPolicy(join_concurrency=50), random.Random(0))
    rooms.session_established(0.0)
    actions = rooms.reconcile({f"r{i}@muc": Want("a") for i in range(n)}, 0.0)
    for i in range(n):
        actions += rooms.handle(SelfAvailable(f"r{i}@muc", "a", frozenset({110})), 1.0)
    return [(a.level, a.event, a.fields.get("rooms")) for a in actions
            if isinstance(a, A.Note) and (a.fields.get("to") == "joined" or a.event == "rooms joined")]


def test_a_mass_join_is_logged_as_one_line():
    notes = _joined_notes(30)
    assert [n for n in notes if n[0] == "info"] == [("info", "rooms joined", 30)]


def test_a_few_joins_are_logged_each():
    assert _joined_notes(5) == [("info", "room state", None)] * 5
