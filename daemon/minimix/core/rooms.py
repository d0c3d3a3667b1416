"""All rooms together: the reconciler, the session, and the join pipeline.

:func:`plan` is the reconciler: desired rooms (from the bookmarks) against the
rooms' current wants → the events that make them agree.  It is pure and
idempotent: once its events are applied, planning again yields nothing.  It runs
after every bookmark change and after every fresh session, so start-up, resyncs,
live edits and shutdown (``plan({}, …)``: leave everything) are one code path.

:class:`Rooms` routes events to the per-room machines and runs the join
pipeline: joins are pipelined with bounded concurrency
(``RoomPolicy.join_concurrency`` in flight), never one at a time, and only while
a session is up.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from minimix.core import actions as A
from minimix.core import room as machine
from minimix.core.events import Disconnected, JoinSlot, RoomEvent, Unwanted, Wanted
from minimix.core.policy import RoomPolicy
from minimix.core.room import Ctx, Room, RoomState
from minimix.core.types import Want


def plan(
    wants: Mapping[str, Want], rooms: Mapping[str, Room], *, unwanted: Unwanted | None = None
) -> list[RoomEvent]:
    """The events that bring ``rooms`` in line with ``wants``."""
    events: list[RoomEvent] = []
    for jid, want in wants.items():
        room = rooms.get(jid)
        if room is None or room.want != want:
            events.append(Wanted(jid, want.nick, want.password))
    for jid, room in rooms.items():
        if room.want is not None and jid not in wants:
            events.append(Unwanted(jid) if unwanted is None else replace(unwanted, room=jid))
    return events


BURST = 20  # more rooms than this joining at once: one "rooms joined" line instead of one each


class Rooms:
    """Every room's machine, and the rules that span rooms."""

    def __init__(self, policy: RoomPolicy | None = None, rng: random.Random | None = None) -> None:
        self.policy = policy or RoomPolicy()
        self.rng = rng or random.Random()
        self.rooms: dict[str, Room] = {}
        self.online = False
        self._waiting: dict[str, None] = {}  # rooms in WAITING, in arrival order
        self._joining: set[str] = set()
        self._states: dict[str, RoomState] = {}  # the state each room was indexed with
        self._counts: dict[RoomState, int] = dict.fromkeys(RoomState, 0)
        self._burst = 0  # rooms joined in the current mass join (logged as one line)
        self.just_joined: list[str] = []  # rooms that became JOINED; the engine drains it
        self.just_left: list[str] = []  # rooms that were JOINED and are no longer; the same

    # -- inputs ------------------------------------------------------------------------

    def reconcile(
        self, wants: Mapping[str, Want], now: float, *, unwanted: Unwanted | None = None
    ) -> list[A.Action]:
        """``unwanted``: the event (reason, leave status) for rooms no longer wanted."""
        actions: list[A.Action] = []
        for event in plan(wants, self.rooms, unwanted=unwanted):
            actions += self._feed(event, now)
        return actions + self._pump(now)

    def handle(self, event: RoomEvent, now: float) -> list[A.Action]:
        """An event for one room; events for rooms we do not keep are ignored."""
        if event.room not in self.rooms:
            return []
        return self._feed(event, now) + self._pump(now)

    def session_established(self, now: float) -> list[A.Action]:
        self.online = True
        return self._pump(now)

    def session_lost(self, now: float) -> list[A.Action]:
        self.online = False
        actions: list[A.Action] = []
        for jid in list(self.rooms):
            actions += self._feed(Disconnected(jid), now)
        return actions

    def touch(self, room: str, now: float) -> None:
        if (r := self.rooms.get(room)) is not None:
            r.touch(now)

    # -- views -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Room]:
        return iter(self.rooms.values())

    def get(self, room: str) -> Room | None:
        return self.rooms.get(room)

    def count(self, state: RoomState) -> int:
        return self._counts[state]

    @property
    def wanted(self) -> int:
        """Rooms the bookmarks ask for (every room but those being left)."""
        return len(self.rooms) - self._counts[RoomState.LEAVING]

    @property
    def busy(self) -> bool:
        """True while joins or leaves are in flight."""
        return bool(self._counts[RoomState.JOINING] or self._counts[RoomState.LEAVING])

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "room": r.jid,
                "state": r.state.value,
                "nick": r.nick,
                "wanted_nick": r.wanted_nick,
                "reason": r.reason,
                "retry_at": r.retry_at,
            }
            for r in sorted(self.rooms.values(), key=lambda r: r.jid)
        ]

    # -- internals ---------------------------------------------------------------------

    def _feed(self, event: RoomEvent, now: float) -> list[A.Action]:
        room = self.rooms.get(event.room)
        if room is None:
            room = self.rooms[event.room] = Room(event.room)
            self._waiting[event.room] = None
        before = room.state
        ctx = Ctx(now, self.policy, self.rng)
        actions = machine.handle(room, event, ctx)
        self._index(room)
        if room.state is RoomState.JOINED and before is not RoomState.JOINED:
            self.just_joined.append(room.jid)
            actions = self._joined(actions)
        elif before is RoomState.JOINED and room.state is not RoomState.JOINED:
            self.just_left.append(room.jid)
        return actions

    def _joined(self, actions: list[A.Action]) -> list[A.Action]:
        """A start with many rooms logs one line for the lot, not one per room."""
        if len(self._waiting) + len(self._joining) + self._burst > BURST:
            self._burst += 1
            actions = [
                A.Note("debug", a.event, a.fields) if isinstance(a, A.Note) and a.fields.get("to") == "joined" else a
                for a in actions
            ]
        if self._burst and not self._waiting and not self._joining:
            actions.append(A.Note("info", "rooms joined", {"rooms": self._burst}))
            self._burst = 0
        return actions

    def _index(self, room: Room) -> None:
        jid, state = room.jid, room.state
        old = self._states.get(jid)
        if old is not state:
            if old is not None:
                self._counts[old] -= 1
            self._counts[state] += 1
            self._states[jid] = state
        if state is RoomState.WAITING:
            self._waiting.setdefault(jid, None)
        else:
            self._waiting.pop(jid, None)
        if state is RoomState.JOINING:
            self._joining.add(jid)
        else:
            self._joining.discard(jid)
        if state is RoomState.GONE:
            del self.rooms[jid]
            del self._states[jid]
            self._counts[state] -= 1

    def _pump(self, now: float) -> list[A.Action]:
        actions: list[A.Action] = []
        while self.online and self._waiting and len(self._joining) < self.policy.join_concurrency:
            jid = next(iter(self._waiting))
            actions += self._feed(JoinSlot(jid), now)
        return actions
