"""What happened: the events the core reacts to (frozen dataclasses).

The edge (``minimix.xmpp``) turns stanzas into these; timers post
:class:`TimerFired`.  Per-room events carry the bare room JID as ``room``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from minimix.core.types import RawItem


class TimerKind(enum.Enum):
    JOIN_TIMEOUT = "join-timeout"
    LEAVE_TIMEOUT = "leave-timeout"
    REJOIN = "rejoin"
    REGAIN = "regain"
    SELF_PING = "self-ping"
    PRESENCE = "presence"  # account-level (room ""): mirror the user's presence into the rooms
    CATCH_UP = "catch-up"  # ask a room's archive again for what a failed catch-up left owed (core.catchup)


class PingOutcome(enum.Enum):
    """How XEP-0410 §4 says to read the answer to a self-ping."""

    JOINED = "joined"  # result, service-unavailable, feature-not-implemented
    NICK_CHANGED = "nick-changed"  # item-not-found: joined, but not under the nick we pinged
    UNDECIDED = "undecided"  # remote-server-*, timeout: ask again later
    GONE = "gone"  # not-acceptable and every other error: we are not in the room


@dataclass(frozen=True, slots=True)
class RoomEvent:
    room: str


@dataclass(frozen=True, slots=True)
class Wanted(RoomEvent):
    """The bookmarks ask for this room with this nick and password."""

    nick: str
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Unwanted(RoomEvent):
    """No bookmark with autojoin names this room (any more), or minimix is stopping."""

    reason: str = "bookmark removed or autojoin off"
    status: str | None = None  # the status text of our unavailable presence, if any


@dataclass(frozen=True, slots=True)
class JoinSlot(RoomEvent):
    """Internal: the aggregate grants a waiting room one of the join slots."""


@dataclass(frozen=True, slots=True)
class SelfAvailable(RoomEvent):
    """Available presence for our own occupant (status 110, or from our occupant JID)."""

    nick: str
    codes: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class SelfUnavailable(RoomEvent):
    """Unavailable presence for our own occupant: leave, kick, ban, nick change, destroy."""

    nick: str
    codes: frozenset[int] = frozenset()
    reason: str | None = None
    actor: str | None = None
    new_nick: str | None = None  # with 303
    destroyed: bool = False
    venue: str | None = None  # alternate venue of a destroyed room


@dataclass(frozen=True, slots=True)
class PresenceError(RoomEvent):
    """A presence of type error from the room: our join or nick change was refused."""

    nick: str | None
    condition: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class OccupantGone(RoomEvent):
    """Another occupant left or changed nick: ``nick`` is free now."""

    nick: str


@dataclass(frozen=True, slots=True)
class Disconnected(RoomEvent):
    """The XMPP session is gone (not merely suspended): the room no longer knows us."""


@dataclass(frozen=True, slots=True)
class TimerFired(RoomEvent):
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class SelfPingAnswered(RoomEvent):
    outcome: PingOutcome
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ReservedNickFound(RoomEvent):
    """Answer to the disco#info query on node ``x-roomuser-item`` (XEP-0045 §7.12)."""

    nick: str | None


EXTERNAL_ROOM_EVENTS: tuple[type[RoomEvent], ...] = (
    Wanted,
    Unwanted,
    SelfAvailable,
    SelfUnavailable,
    PresenceError,
    OccupantGone,
    TimerFired,
    SelfPingAnswered,
    ReservedNickFound,
    Disconnected,
)
"""Events that can reach a room in any state: the room machine handles each in every state."""


# -- account-level events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    """A fresh XMPP session (not a resumption): every room must be joined anew."""


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The session is gone for good (a suspension that could not be resumed)."""


@dataclass(frozen=True, slots=True)
class PepBookmarksLoaded:
    """All items of the XEP-0402 node (empty if the node does not exist)."""

    items: tuple[RawItem, ...]


@dataclass(frozen=True, slots=True)
class PepBookmarkPublished:
    item: RawItem


@dataclass(frozen=True, slots=True)
class PepBookmarkRetracted:
    item_id: str


@dataclass(frozen=True, slots=True)
class LegacyBookmarksLoaded:
    """The whole XEP-0048 list (private XML)."""

    items: tuple[RawItem, ...]


@dataclass(frozen=True, slots=True)
class OccupantPresent:
    """An available presence from an occupant (ourselves included)."""

    room: str
    nick: str
    jid: str | None = None
    role: str | None = None
    affiliation: str | None = None
    show: str = "available"


@dataclass(frozen=True, slots=True)
class OccupantLeft:
    """An unavailable presence from an occupant; ``new_nick`` with a nick change (303)."""

    room: str
    nick: str
    new_nick: str | None = None


# -- the user's own clients -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientPresence:
    """Presence of another resource of the account (one of the user's clients)."""

    resource: str
    available: bool
    show: str = "available"  # chat | available | away | xa | dnd
    status: str | None = None
    # Where the server delivers what comes to the account's bare JID: a resource with a
    # negative priority gets none of it (RFC 6121 §8.5.2.1), and with none >= 0 the server
    # stores it (offline storage, which wakes a phone on push).
    priority: int = 0


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """A message from a room: groupchat, or a private message to the account's occupant."""

    room: str
    nick: str | None
    body: str | None
    subject: str | None = None
    private: bool = False
    stanza_id: str | None = None  # the room's archive id (XEP-0359 by=room)
    origin_id: str | None = None
    message_id: str | None = None
    ref: object = None  # the stanza (serialised), opaque to the core: relays forward it whole
    # When the room says it was sent (its own <delay/>), else None.  Taken only from the
    # room's archive and from the history the room replays at a join; see router.said_at.
    stamp: float | None = None
    archived: bool = False  # from the room's archive (catch-up), not live
    history: bool = False  # replayed by the room at our join (a room without an archive)


@dataclass(frozen=True, slots=True)
class ClientText:
    """A chat message from one of the user's clients to the daemon."""

    resource: str
    text: str
    reply_to: str | None = None  # XEP-0461: the id of the relay it answers (quote removed)


@dataclass(frozen=True, slots=True)
class ClientCommand:
    """A command from one of the user's clients through an ad-hoc form (XEP-0050)."""

    resource: str
    command: object  # minimix.core.commands.Command
    token: object = None  # handed back with the reply


# -- catch-up, playback, delivery ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatchUpDone:
    """What the room's archive (MAM) had after our cursor, oldest first."""

    room: str
    messages: tuple[RoomMessage, ...] = ()
    more: int = 0  # beyond the catch-up limit, not fetched
    mam: bool | None = None  # does the room keep an archive (None: could not tell)
    head: tuple[str, float] | None = None  # the archive's newest id, when we had no cursor
    error: str | None = None
    streamed: int = 0  # messages already handed over in CatchUpPage events, before these
    token: int | None = None  # the CatchUp's: an answer to an older one (a session before) is ignored


@dataclass(frozen=True, slots=True)
class CatchUpPage:
    """A page of the room's archive, oldest first, while the catch-up goes on (paged
    forwards): taken at once; live messages stay held back until CatchUpDone."""

    room: str
    messages: tuple[RoomMessage, ...]
    token: int | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A message of the log, as playback reads it back."""

    seq: int
    room: str
    nick: str | None
    private: bool
    stamp: float
    body: str | None
    subject: str | None
    text: str
    ref: object  # the serialised original


@dataclass(frozen=True, slots=True)
class PlaybackLoaded:
    client: str
    messages: tuple[Stored, ...]
    more: int = 0


@dataclass(frozen=True, slots=True)
class RelaysAcked:
    """The server has these relays (XEP-0198 ack), or, ``delivered=False``, never will."""

    relay_ids: tuple[str, ...]
    delivered: bool = True


@dataclass(frozen=True, slots=True)
class RelayBounced:
    """One of the user's clients' sessions gave a relay back as undeliverable (an error
    message with the relay's id): the server had acknowledged it, but the session that
    was to get it ended without acknowledging it (Prosody bounces what a session had not
    acknowledged when it goes for good, e.g. replaced by a new login of the same resource;
    ejabberd too)."""

    resource: str
    relay_id: str


@dataclass(frozen=True, slots=True)
class PostRefused:
    """A room answered one of our posts (``origin_id``, said for one of the user's clients)
    with an error: to ``to``, the room or ``room/nick`` for a private message."""

    to: str
    origin_id: str
    condition: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class RelayReceived:
    """One of the user's clients answered a relay's receipt request (XEP-0184)."""

    resource: str
    relay_id: str


@dataclass(frozen=True, slots=True)
class KnownMessages:
    """Keys of a room's messages already logged (read back before asking for its history)."""

    room: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadUpTo:
    """The user has read a room up to the message with this archive id, on one of their
    clients (XEP-0490: an item of the account's own ``urn:xmpp:mds:displayed:0`` node)."""

    room: str
    stanza_id: str


@dataclass(frozen=True, slots=True)
class ReadAt:
    """Where a read marker stands in the log (the store found its archive id): the room's
    message ``seq``, and how many of the room's messages are logged after it."""

    room: str
    seq: int
    unread: int


@dataclass(frozen=True, slots=True)
class ExpiryDue:
    """The hourly prune: the core forgets what clients away for long no longer need
    (Ledger.expire), given how long the log keeps a message."""

    retention_s: float
