"""The per-room state machine: the one module that owns every room transition.

Modelled on h11's ``_state.py``: the transitions are data (:data:`TRANSITIONS`, a
table from ``(state, event type)`` to a handler and the states it may lead to),
events are frozen dataclasses, and a pair missing from the table raises
:class:`IllegalTransition`.  Every event that can come from the network or a timer
is handled in every state (a test checks the table is total for them), so no
sequence of server behaviour can crash a room; only internal events
(:class:`~minimix.core.events.JoinSlot`) can be illegal, and only through a bug.

A handler (core.room_steps) mutates the :class:`Room`, appends actions to the :class:`Ctx` and
returns the next state, which must be one its table entry names (else
:class:`IllegalTransition`: a bug).  So the table alone says every move a room can
make; ``make diagram`` draws it (docs/room-machine.svg).  :func:`handle` adds one
``room state`` note per change of state (room=, from=, to=, reason=, retry_in=).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from minimix.core import actions as A
from minimix.core.events import (
    Disconnected,
    JoinSlot,
    OccupantGone,
    PresenceError,
    ReservedNickFound,
    RoomEvent,
    SelfAvailable,
    SelfPingAnswered,
    SelfUnavailable,
    TimerFired,
    Unwanted,
    Wanted,
)
from minimix.core.room_state import Ctx, Room, RoomState
from minimix.core.room_steps import (
    _after_leave,
    _disconnected,
    _gone,
    _same,
    any_self_available_accept,
    backoff_timer,
    backoff_wanted,
    gave_up_self_available,
    gave_up_wanted,
    joined_error,
    joined_occupant_gone,
    joined_ping_answered,
    joined_self_available,
    joined_self_unavailable,
    joined_timer,
    joined_unwanted,
    joined_wanted,
    joining_error,
    joining_reserved,
    joining_self_available,
    joining_self_unavailable,
    joining_timer,
    joining_unwanted,
    joining_wanted,
    leaving_self_unavailable,
    leaving_timer,
    leaving_unwanted,
    leaving_wanted,
    waiting_slot,
    waiting_wanted,
)

__all__ = ["STAY", "TRANSITIONS", "Ctx", "IllegalTransition", "Room", "RoomState", "Transition", "go", "handle"]


class IllegalTransition(Exception):
    """An event arrived in a state that has no transition for it, or a handler led where
    the table does not say it may (a bug)."""


Handler = Callable[[Room, RoomEvent, Ctx], RoomState]


@dataclass(frozen=True, slots=True)
class Transition:
    """One entry of the table: what handles the event, and every state it may lead to
    (none named: the room stays in its state and nothing happens)."""

    handler: Handler
    targets: frozenset[RoomState] = frozenset()


def go(handler: Handler, *targets: RoomState) -> Transition:
    return Transition(handler, frozenset(targets))


def handle(room: Room, event: RoomEvent, ctx: Ctx) -> list[A.Action]:
    """The room's move on this event, as the table says; the actions it takes."""
    if isinstance(event, TimerFired):
        if event.kind not in room.armed:
            return ctx.actions  # a timer disarmed after it had already fired
        del room.armed[event.kind]
    transition = TRANSITIONS.get((room.state, type(event)))
    if transition is None:
        raise IllegalTransition(f"{type(event).__name__} in state {room.state.value}")
    before = room.state
    after = transition.handler(room, event, ctx)
    if after not in transition.targets and not (after is before and not transition.targets):
        raise IllegalTransition(
            f"{transition.handler.__name__}: {type(event).__name__} in state {before.value} led to "
            f"{after.value}, which the table does not name"
        )
    if after is not before:
        room.enter(after, ctx)
        # One line per room and change; the routine step into JOINING only at debug, so a
        # start with 1,000 rooms logs 1,000 joins rather than 2,000 lines.
        level = {RoomState.GAVE_UP: "warning", RoomState.JOINING: "debug"}.get(after, "info")
        fields: dict[str, object] = {"room": room.jid, "from": before.value, "to": after.value}
        if ctx.reason:
            fields["reason"] = ctx.reason
        if ctx.retry_in is not None:
            fields["retry_in"] = round(ctx.retry_in, 1)
        if after is RoomState.JOINED:
            fields["nick"] = room.nick
        ctx.note(level, "room state", **fields)
    return ctx.actions


# -- the table ----------------------------------------------------------------------
# Every move a room can make.  STAY: the event changes nothing in that state (a late or
# irrelevant answer); go(handler, *targets): the handler decides among those states.

W, J, IN, L, B, G, GONE = (
    RoomState.WAITING,
    RoomState.JOINING,
    RoomState.JOINED,
    RoomState.LEAVING,
    RoomState.BACKOFF,
    RoomState.GAVE_UP,
    RoomState.GONE,
)

STAY = Transition(_same)

TRANSITIONS: dict[tuple[RoomState, type[RoomEvent]], Transition] = {
    (W, JoinSlot): go(waiting_slot, J),
    (W, Wanted): go(waiting_wanted, W),
    (W, Unwanted): go(_gone, GONE),
    (W, SelfAvailable): go(any_self_available_accept, L, IN, G),
    (W, SelfUnavailable): STAY,
    (W, PresenceError): STAY,
    (W, OccupantGone): STAY,
    (W, TimerFired): STAY,
    (W, SelfPingAnswered): STAY,
    (W, ReservedNickFound): STAY,
    (W, Disconnected): STAY,
    (J, Wanted): go(joining_wanted, J),
    (J, Unwanted): go(joining_unwanted, L),
    (J, SelfAvailable): go(joining_self_available, IN, L, G),
    (J, SelfUnavailable): go(joining_self_unavailable, J, B, G),
    (J, PresenceError): go(joining_error, W, J, B, G),
    (J, OccupantGone): STAY,
    (J, TimerFired): go(joining_timer, J, B),
    (J, SelfPingAnswered): STAY,
    (J, ReservedNickFound): go(joining_reserved, J, B),
    (J, Disconnected): go(_disconnected, W),
    (IN, Wanted): go(joined_wanted, IN, L),
    (IN, Unwanted): go(joined_unwanted, L),
    (IN, SelfAvailable): go(joined_self_available, IN),
    (IN, SelfUnavailable): go(joined_self_unavailable, IN, B, G),
    (IN, PresenceError): go(joined_error, IN),
    (IN, OccupantGone): go(joined_occupant_gone, IN),
    (IN, TimerFired): go(joined_timer, IN),
    (IN, SelfPingAnswered): go(joined_ping_answered, IN, W),
    (IN, ReservedNickFound): STAY,
    (IN, Disconnected): go(_disconnected, W),
    (L, Wanted): go(leaving_wanted, L),
    (L, Unwanted): go(leaving_unwanted, L),
    (L, SelfAvailable): STAY,
    (L, SelfUnavailable): go(leaving_self_unavailable, L, W, GONE),
    (L, PresenceError): go(_after_leave, W, GONE),
    (L, OccupantGone): STAY,
    (L, TimerFired): go(leaving_timer, L, W, GONE),
    (L, SelfPingAnswered): STAY,
    (L, ReservedNickFound): STAY,
    (L, Disconnected): go(_after_leave, W, GONE),
    (B, Wanted): go(backoff_wanted, B, W),
    (B, Unwanted): go(_gone, GONE),
    (B, SelfAvailable): go(any_self_available_accept, L, IN, G),
    (B, SelfUnavailable): STAY,
    (B, PresenceError): STAY,
    (B, OccupantGone): STAY,
    (B, TimerFired): go(backoff_timer, B, W),
    (B, SelfPingAnswered): STAY,
    (B, ReservedNickFound): STAY,
    (B, Disconnected): STAY,
    (G, Wanted): go(gave_up_wanted, G, W),
    (G, Unwanted): go(_gone, GONE),
    (G, SelfAvailable): go(gave_up_self_available, G),
    (G, SelfUnavailable): STAY,
    (G, PresenceError): STAY,
    (G, OccupantGone): STAY,
    (G, TimerFired): STAY,
    (G, SelfPingAnswered): STAY,
    (G, ReservedNickFound): STAY,
    (G, Disconnected): STAY,
}
