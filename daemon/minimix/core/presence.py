"""The user's clients as the server shows them, and the account's presence in the rooms.

Only resources of the account itself reach the core as clients (the edge drops everything
else).  Which of them are online decides who gets relays; the most available of them is
what the account's occupant shows in every room (mod_minimix's README lists outgoing
presence as unsolved: minimix mirrors it, debounced).
"""

from __future__ import annotations

from dataclasses import dataclass

from minimix.core import actions as A
from minimix.core.events import ClientPresence, TimerKind

PRESENCE_DEBOUNCE_S = 2.0
# How available each show is, for "the most available of the user's clients".
AVAILABILITY = {"chat": 5, "available": 4, "away": 3, "dnd": 2, "xa": 1}


@dataclass(slots=True)
class Online:
    show: str = "available"
    status: str | None = None
    priority: int = 0


class Presence:
    def __init__(self, offline_status: str = "not connected") -> None:
        self.offline_status = offline_status
        self.online: dict[str, Online] = {}
        self.mirrored: tuple[str, str | None] | None = None
        self.armed = False

    def __contains__(self, client: str) -> bool:
        return client in self.online

    def __iter__(self):  # noqa: ANN204 - the online clients, in the order they came
        return iter(self.online)

    def seen(self, ev: ClientPresence, now: float) -> tuple[list[A.Action], bool, bool]:
        """A client's presence: (actions, it came online, it went offline)."""
        actions = self._arm(now)
        if ev.available:
            back = ev.resource not in self.online
            self.online[ev.resource] = Online(ev.show, ev.status, ev.priority)
            return actions, back, False
        return actions, False, self.online.pop(ev.resource, None) is not None

    def server_delivers(self) -> bool:
        """Whether the server hands what comes to the account's bare JID to a resource now
        (one of the user's clients with a priority of 0 or more), rather than storing it."""
        return any(o.priority >= 0 for o in self.online.values())

    def _arm(self, now: float) -> list[A.Action]:
        if self.armed:
            return []
        self.armed = True
        return [A.Arm("", TimerKind.PRESENCE, now + PRESENCE_DEBOUNCE_S)]

    def due(self) -> list[A.Action]:
        """The debounce timer fired: show the rooms the user's presence if it changed."""
        self.armed = False
        wanted = self.aggregate()
        if wanted == self.mirrored:
            return []
        self.mirrored = wanted
        return [A.MirrorPresence(*wanted)]

    def aggregate(self) -> tuple[str, str | None]:
        if not self.online:
            return "xa", self.offline_status
        best = max(self.online.values(), key=lambda o: AVAILABILITY.get(o.show, 0))
        return best.show, best.status

    def session_established(self, now: float) -> list[A.Action]:
        """A new session: the rooms see the mirrored presence in our join presences."""
        return self._arm(now)

    def session_lost(self) -> None:
        """The server sends every client's presence again after login."""
        self.online.clear()
