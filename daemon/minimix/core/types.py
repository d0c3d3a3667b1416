"""Small types the core's modules share.  A leaf: it imports nothing of minimix, so no
import circle can run through it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Source(enum.Enum):
    """Where a bookmark is kept."""

    PEP = "xep-0402"
    LEGACY = "xep-0048"


@dataclass(frozen=True, slots=True)
class RawItem:
    """A bookmark as found on the server, before validation (see core.bookmarks)."""

    item_id: str
    source: Source
    room: str | None  # the normalised bare room JID; None if item_id is not one
    has_payload: bool = True
    autojoin: str | None = None
    name: str | None = None
    nick: str | None = None
    password: str | None = None
    nick_ok: bool = True  # False if the nick failed resourceprep
    room_error: str | None = None


@dataclass(frozen=True, slots=True)
class Bookmark:
    room: str
    autojoin: bool = False
    name: str | None = None
    nick: str | None = None
    password: str | None = None
    source: Source = Source.PEP
    item_id: str = ""

    def __repr__(self) -> str:  # never show the password
        pw = "set" if self.password else None
        return (
            f"Bookmark(room={self.room!r}, autojoin={self.autojoin}, nick={self.nick!r}, "
            f"name={self.name!r}, password={pw}, source={self.source.value})"
        )



@dataclass(frozen=True, slots=True)
class Want:
    """What the bookmarks ask of a room: to be in it, with this nick and password."""

    nick: str
    password: str | None = None


@dataclass(frozen=True, slots=True)
class RoomLine:
    """One room as the ``rooms`` command lists it."""

    jid: str
    state: str
    reason: str | None
    nick: str | None
    occupants: int


class RoomsView(Protocol):
    """What the relay, catch-up and chat parts of the core may know of the rooms: a
    read-only view (the engine gives it; they never change a room)."""

    def kept(self, room: str) -> bool:
        """minimix keeps this room (wanted, joining, joined, backing off…)."""

    def nick(self, room: str) -> str | None:
        """The nick the account holds (or is trying) in the room."""

    def nicks(self, room: str) -> list[str]:
        """The account's nicks in a room, for mentions: held, wanted, the bookmark's."""

    def occupied(self) -> list[str]:
        """The rooms the account is in (holds a nick in)."""

    def known(self) -> list[str]:
        """Every room the user may name: bookmarked or kept."""

    def bookmarks_loaded(self) -> bool: ...

    def summary(self) -> tuple[bool, int, int]:
        """(connected, rooms joined, rooms wanted)."""

    def lines(self) -> list[RoomLine]: ...
