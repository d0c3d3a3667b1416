"""The edge's own events: what only the app cares about (the connection's state, for the
log and STATUS=; when to fetch the bookmarks again; traffic that keeps a room alive).  The
core's events are in core.events."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    error: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class LoginFailed:
    error: str


@dataclass(frozen=True, slots=True)
class StreamSuspended:
    error: str


@dataclass(frozen=True, slots=True)
class StreamResumed:
    pass


@dataclass(frozen=True, slots=True)
class ClientStopped:
    error: str | None


@dataclass(frozen=True, slots=True)
class CapsQueried:
    """The server asked for our capabilities: from now on it pushes bookmark changes."""


@dataclass(frozen=True, slots=True)
class BookmarkPush:
    """Whether the server pushes every bookmark change (it announces #compat) or must be polled."""

    complete: bool


@dataclass(frozen=True, slots=True)
class RoomActivity:
    """Traffic from a room: it knows we are there."""

    room: str
