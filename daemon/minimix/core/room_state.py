"""One room's state, as the room machine (core.room) keeps it: the state it is in, what
the bookmarks want of it, and the few facts its handlers need (timers armed, nick asked
for, kicks counted)."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from minimix.core import actions as A
from minimix.core.events import TimerKind
from minimix.core.policy import RoomPolicy
from minimix.core.types import Want


class RoomState(enum.Enum):
    WAITING = "waiting"  # wanted, nothing in flight: offline, or queued for a join slot
    JOINING = "joining"  # join presence sent, waiting for our self-presence or an error
    JOINED = "joined"
    LEAVING = "leaving"  # unavailable sent, waiting for the room to confirm
    BACKOFF = "backoff"  # a rejoin timer is armed
    GAVE_UP = "gave-up"  # stopped until the bookmark changes
    GONE = "gone"  # terminal: the aggregate forgets the room


@dataclass(slots=True)
class Ctx:
    """What a handler may use and produce: the time, the policy, jitter, actions."""

    now: float
    policy: RoomPolicy
    rng: random.Random
    actions: list[A.Action] = field(default_factory=list)
    reason: str | None = None  # why this transition happens (for the state note)
    retry_in: float | None = None

    def emit(self, action: A.Action) -> None:
        self.actions.append(action)

    def note(self, level: str, event: str, **fields: object) -> None:
        self.actions.append(A.Note(level, event, dict(fields)))


@dataclass(slots=True)
class Room:
    """One room's state.  Mutable; only the room machine's handlers change it (core.room_steps)."""

    jid: str
    want: Want | None = None
    state: RoomState = RoomState.WAITING
    nick: str | None = None  # our nick in the room, or the nick being tried while joining
    joined_password: str | None = None
    pending_nick: str | None = None  # our nick change in flight
    fallback: int = 0  # fallback nicks tried in the current join
    reserved_nick: str | None = None  # from x-roomuser-item, after a 406
    reserved_asked: bool = False
    regain_futile: bool = False  # the service kept our nick on a regain attempt
    stale_join: bool = False  # the bookmark changed while a join was in flight
    failures: int = 0  # consecutive failed joins: drives the backoff
    kicks: tuple[float, ...] = ()
    reason: str | None = None  # why BACKOFF / GAVE_UP
    retry_at: float | None = None
    armed: dict[TimerKind, float] = field(default_factory=dict)
    last_activity: float = 0.0
    ping_in_flight: bool = False

    def touch(self, now: float) -> None:
        """Traffic from the room: it knows we are there (postpones the self-ping)."""
        self.last_activity = now

    @property
    def wanted_nick(self) -> str | None:
        return self.want.nick if self.want else None

    # -- helpers for handlers ----------------------------------------------------

    def enter(self, state: RoomState, ctx: Ctx) -> None:
        """Leaving the old state: drop the timers that belong to it."""
        self.state = state
        keep = {
            RoomState.JOINING: {TimerKind.JOIN_TIMEOUT},
            RoomState.JOINED: {TimerKind.REGAIN, TimerKind.SELF_PING},
            RoomState.LEAVING: {TimerKind.LEAVE_TIMEOUT},
            RoomState.BACKOFF: {TimerKind.REJOIN},
        }.get(state, set())
        for kind in [k for k in self.armed if k not in keep]:
            self.disarm(kind, ctx)
        if state is not RoomState.JOINED:
            self.pending_nick = None
            self.ping_in_flight = False
        if state is not RoomState.BACKOFF:
            self.retry_at = None
        if state in (RoomState.WAITING, RoomState.JOINING, RoomState.JOINED):
            self.reason = None

    def arm(self, kind: TimerKind, at: float, ctx: Ctx) -> None:
        self.armed[kind] = at
        ctx.emit(A.Arm(self.jid, kind, at))

    def disarm(self, kind: TimerKind, ctx: Ctx) -> None:
        if self.armed.pop(kind, None) is not None:
            ctx.emit(A.Disarm(self.jid, kind))
