"""What to do: the actions the core asks the edge and the app to carry out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minimix.core.events import TimerKind
from minimix.core.types import Bookmark


@dataclass(frozen=True, slots=True)
class Action:
    pass


@dataclass(frozen=True, slots=True)
class Join(Action):
    room: str
    nick: str
    password: str | None = None
    # a room without an archive: ask for its history since this time (the engine fills it in)
    history_since: float | None = None


@dataclass(frozen=True, slots=True)
class LoadKeys(Action):
    """Read back the de-duplication keys of a room's messages logged since ``since`` and
    after the log's message ``after`` (its history, or its archive, is asked for again):
    they come back as KnownMessages."""

    room: str
    since: float
    after: int = 0


@dataclass(frozen=True, slots=True)
class Leave(Action):
    room: str
    nick: str
    status: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeNick(Action):
    room: str
    nick: str


@dataclass(frozen=True, slots=True)
class SelfPing(Action):
    room: str
    nick: str


@dataclass(frozen=True, slots=True)
class QueryReservedNick(Action):
    room: str


@dataclass(frozen=True, slots=True)
class DestroyRoom(Action):
    """Destroy a room we created by accident (status 201): XEP-0045 §10.9."""

    room: str
    reason: str


# The room machine and the chat commands say what should happen to a bookmark
# (DisableAutojoin, MoveBookmark, UpdateBookmark); the engine, which holds the bookmarks,
# turns each into the WriteBookmark the edge carries out.


@dataclass(frozen=True, slots=True)
class DisableAutojoin(Action):
    """Rewrite the room's bookmark with autojoin=false, keeping every other field."""

    room: str
    reason: str


@dataclass(frozen=True, slots=True)
class MoveBookmark(Action):
    """Replace the room's bookmark by one for ``venue`` (same nick, name, extensions)."""

    room: str
    venue: str
    reason: str


@dataclass(frozen=True, slots=True)
class Arm(Action):
    room: str
    kind: TimerKind
    at: float


@dataclass(frozen=True, slots=True)
class Disarm(Action):
    room: str
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class Note(Action):
    """A line for the log: the core decides what to say, the app says it."""

    level: str  # "debug" | "info" | "warning" | "error"
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Relay(Action):
    """Forward a room message to some of the user's clients (one stanza each)."""

    room: str
    deliveries: tuple[tuple[str, str], ...]  # (resource, id of the relay stanza)
    text: str  # the readable fallback body: "[room] nick: text"
    ref: object  # the original stanza, forwarded whole
    private: bool = False
    seq: int | None = None  # its place in the message log (None: not logged)
    stamp: float | None = None  # the original's time, for the <delay/>
    # The ledger's changes (core.ledger_records.Change) that must be on record before it goes out:
    # the relays in flight, a client's first cursor in the room.  The edge adds where each
    # relay stands on the wire.
    changes: tuple[Action, ...] = ()


@dataclass(frozen=True, slots=True)
class Store(Action):
    """Send a room message to the account's bare JID, for the server to store (offline
    storage and the account's archive; its push module wakes a phone): the message selected
    a ``mentions`` client that is away, and no resource would get it from the server now.
    As a relay: the readable fallback, the original forwarded whole.  ``push_id`` is the
    stanza's id; the server's ack of it comes back in RelaysAcked."""

    room: str
    push_id: str
    text: str
    ref: object
    seq: int
    stamp: float
    clients: tuple[str, ...]  # the away clients it stands in for


@dataclass(frozen=True, slots=True)
class FindRead(Action):
    """Find a read marker's archive id in the log: the answer comes back as ReadAt (nothing
    comes back for an id the log does not have)."""

    room: str
    stanza_id: str


@dataclass(frozen=True, slots=True)
class Reply(Action):
    """Answer one of the user's clients (a chat message, or the ad-hoc result for ``token``)."""

    resource: str
    text: str
    token: object = None


@dataclass(frozen=True, slots=True)
class SendToRoom(Action):
    """Post in a room for one of the user's clients (``nick``: a private message)."""

    room: str
    text: str
    origin_id: str
    nick: str | None = None
    reply_to: tuple[str, str] | None = None  # XEP-0461 (occupant JID, archive id) of the original


@dataclass(frozen=True, slots=True)
class UpdateBookmark(Action):
    """Change (or create) a room's bookmark; None leaves a field as it is."""

    room: str
    autojoin: bool | None = None
    nick: str | None = None


@dataclass(frozen=True, slots=True)
class WriteBookmark(Action):
    """Write ``room``'s bookmark (``bookmark``: as it is now, None for a new one) with these
    changes; None leaves a field as it is.  ``venue``: move it to that room."""

    room: str
    bookmark: Bookmark | None
    reason: str
    autojoin: bool | None = None
    nick: str | None = None
    venue: str | None = None


@dataclass(frozen=True, slots=True)
class SaveClient(Action):
    resource: str
    settings: object  # minimix.core.relay.ClientSettings


@dataclass(frozen=True, slots=True)
class MirrorPresence(Action):
    """Show the user's presence on the account's occupant in every room it is in."""

    show: str
    status: str | None
    rooms: tuple[tuple[str, str], ...] = ()  # (room, our nick there): filled in by the engine


@dataclass(frozen=True, slots=True)
class SaveRoom(Action):
    """Remember a room's archive cursor and/or whether it keeps an archive."""

    room: str
    cursor: tuple[str | None, float] | None = None  # (archive id or None, time)
    mam: bool | None = None


@dataclass(frozen=True, slots=True)
class SaveGap(Action):
    """Remember that a room's archive still owes what came after the room's cursor (a
    catch-up failed): the messages logged after the log's message ``after`` may be among
    what it gives then.  None: it owes nothing any more."""

    room: str
    after: int | None


@dataclass(frozen=True, slots=True)
class CatchUp(Action):
    """Ask the room's archive for what came after ``after`` (newest ``limit``)."""

    room: str
    after: tuple[str | None, float] | None  # (archive id or None, time); None: first join
    limit: int
    token: int = 0  # comes back with its pages and its CatchUpDone (a stale answer is ignored)


@dataclass(frozen=True, slots=True)
class LoadPlayback(Action):
    """Read what a returning client has not had: per room after its cursor."""

    client: str
    cursors: dict[str, int]
    default: int  # for rooms without a cursor
    limit: int
    after: int = 0  # a page after the first: only what comes after this message
