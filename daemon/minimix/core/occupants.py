"""Who is in each room: kept current from every presence, leaves and renames included.

(mod_minimix's README: "you will never see anyone leave" — minimix does.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Occupant:
    nick: str
    jid: str | None = None  # the real JID, where the room shows it
    role: str | None = None
    affiliation: str | None = None
    show: str = "available"  # available | chat | away | xa | dnd


class Occupants:
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Occupant]] = {}

    def present(self, room: str, occupant: Occupant) -> None:
        self._rooms.setdefault(room, {})[occupant.nick] = occupant

    def gone(self, room: str, nick: str) -> None:
        self._rooms.get(room, {}).pop(nick, None)

    def renamed(self, room: str, old: str, new: str) -> None:
        occupants = self._rooms.get(room)
        if occupants is not None and (occupant := occupants.pop(old, None)) is not None:
            occupant.nick = new
            occupants[new] = occupant

    def clear(self, room: str) -> None:
        self._rooms.pop(room, None)

    def clear_all(self) -> None:
        self._rooms.clear()

    def of(self, room: str) -> dict[str, Occupant]:
        return self._rooms.get(room, {})

    def count(self, room: str) -> int:
        return len(self._rooms.get(room, ()))
