"""The engine: the whole of minimix's decisions, as ``handle(event, now) -> actions``.

It owns the parts of the core and routes each event to the one it concerns:

- the bookmarks (both stores), resolved into wants and reconciled with the rooms
  (core.bookmarks, core.rooms; each room is a state machine, core.room);
- who is in each room (core.occupants);
- the user's clients online, and the presence mirrored into the rooms (core.presence);
- catch-up from the rooms' archives (core.catchup);
- the relay router (core.router) and the delivery ledger (core.ledger): what each
  client has had;
- what the clients say: commands and replies (core.chat).

The parts other than the rooms see the rooms through a read-only view (core.types.RoomsView,
given by the engine): none of them changes a room.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace

from minimix.core import actions as A
from minimix.core.bookmarks import BookmarkSet, may_move, wants
from minimix.core.catchup import CatchUps
from minimix.core.chat import Chat
from minimix.core.commands import AddressCheck
from minimix.core.events import (
    CatchUpDone,
    CatchUpPage,
    ClientCommand,
    ClientPresence,
    ClientText,
    ExpiryDue,
    KnownMessages,
    LegacyBookmarksLoaded,
    OccupantGone,
    OccupantLeft,
    OccupantPresent,
    PepBookmarkPublished,
    PepBookmarkRetracted,
    PepBookmarksLoaded,
    PlaybackLoaded,
    PostRefused,
    ReadAt,
    ReadUpTo,
    RelayBounced,
    RelayReceived,
    RelaysAcked,
    RoomEvent,
    RoomMessage,
    SessionEstablished,
    SessionLost,
    TimerFired,
    TimerKind,
    Unwanted,
)
from minimix.core.ledger import Ledger
from minimix.core.ledger_records import Change, LedgerState
from minimix.core.occupants import Occupant, Occupants
from minimix.core.policy import RoomPolicy
from minimix.core.presence import Presence
from minimix.core.relay import ClientSettings
from minimix.core.room import RoomState
from minimix.core.rooms import Rooms
from minimix.core.router import Router
from minimix.core.types import Bookmark, RoomLine

STOPPING = "minimix is stopping"
HISTORY_SLACK_S = 5.0  # history "since" is inclusive and clocks differ: de-duplicate around it
_COMPLETED = (A.Join, A.DisableAutojoin, A.MoveBookmark, A.UpdateBookmark, A.MirrorPresence)

ACCOUNT_EVENTS = (
    SessionEstablished,
    SessionLost,
    PepBookmarksLoaded,
    PepBookmarkPublished,
    PepBookmarkRetracted,
    LegacyBookmarksLoaded,
    OccupantPresent,
    OccupantLeft,
    ClientPresence,
    RoomMessage,
    ClientText,
    ClientCommand,
    CatchUpDone,
    CatchUpPage,
    PlaybackLoaded,
    RelaysAcked,
    RelayBounced,
    RelayReceived,
    PostRefused,
    KnownMessages,
    ExpiryDue,
    ReadUpTo,
    ReadAt,
)
EVENTS = (RoomEvent, *ACCOUNT_EVENTS)
"""Every event the engine takes (the app hands it these and nothing else)."""
AccountEvent = (
    SessionEstablished | SessionLost | PepBookmarksLoaded | PepBookmarkPublished | PepBookmarkRetracted
    | LegacyBookmarksLoaded | OccupantPresent | OccupantLeft | ClientPresence | RoomMessage | ClientText
    | ClientCommand | CatchUpDone | CatchUpPage | PlaybackLoaded | RelaysAcked | RelayBounced
    | RelayReceived | PostRefused | KnownMessages | ExpiryDue | ReadUpTo | ReadAt
)


class Engine:
    def __init__(
        self,
        *,
        default_nick: str,
        policy: RoomPolicy | None = None,
        rng: random.Random | None = None,
        relay_globs: Mapping[str, str] | None = None,
        offline_status: str = "not connected",
        catchup_max: int = 500,
        playback_max: int = 200,
        offline_mentions: str = "store",
        address_check: AddressCheck | None = None,
    ) -> None:
        self.default_nick = default_nick
        rng = rng or random.Random()
        self.bookmarks = BookmarkSet()
        self.effective: dict[str, Bookmark] = {}
        self.rooms = Rooms(policy, rng)
        self.occupants = Occupants()
        view = _View(self)
        self.presence = Presence(offline_status)
        self.ledger = Ledger(rng, playback_max=playback_max)
        self.catchups = CatchUps(lambda m, now: self.router.take(m, now), lambda r, t: self.router.tell(r, t),
                                 lambda: self.ledger.next_seq - 1, catchup_max=catchup_max)
        self.router = Router(self.ledger, view, self.presence, self.catchups.noted, relay_globs,
                             self.presence.server_delivers)
        self.router.store_mentions = offline_mentions == "store"
        self.chat = Chat(self.router, self.ledger, view, address_check)
        self.deferred_playback: set[str] = set()  # clients back before the bookmarks were known
        self.stopping = False
        # First joins' look at the archive (where it ends) and the saving of their cursor,
        # held while rooms are joining: joins go first, and a start with many new rooms
        # does not compete with them (the cursors are in memory at once).
        self._first_looks: dict[str, list[A.Action]] = {}

    def handle(self, event: AccountEvent | RoomEvent, now: float) -> list[A.Action]:
        return self._complete(self._handled(event, now))

    def _handled(self, event: AccountEvent | RoomEvent, now: float) -> list[A.Action]:
        actions = self._handle(event, now)
        while self.rooms.just_left:  # no longer joined: its catch-up is over, or waits for the next join
            actions += self.catchups.left(self.rooms.just_left.pop(0))
        while self.rooms.just_joined:  # joined (again): catch up from the room's archive
            room = self.rooms.just_joined.pop(0)
            joined = self.catchups.joined(room, now)
            if any(isinstance(a, A.CatchUp) and a.after is None for a in joined):
                self._first_looks[room] = joined  # a first join: its cursor and its look
            else:
                actions += joined
        if self._first_looks and not self.rooms.count(RoomState.JOINING):
            looks, self._first_looks = self._first_looks, {}
            actions += [
                a
                for room, held in looks.items()
                for a in held
                if not isinstance(a, A.CatchUp) or self._joined(room)  # cursors saved anyway
            ]
        return actions

    def _joined(self, room: str) -> bool:
        state = self.rooms.get(room)
        return state is not None and state.state is RoomState.JOINED

    def _handle(self, event: AccountEvent | RoomEvent, now: float) -> list[A.Action]:
        match event:
            case RoomMessage():
                return self._room_message(event, now)
            case TimerFired("", TimerKind.PRESENCE):
                return self.presence.due()
            case TimerFired(room, TimerKind.CATCH_UP):
                return self.catchups.retry(room) if self.rooms.online and self._joined(room) else []
            case ClientPresence():
                return self._client_presence(event, now)
            case ClientText():
                return self.chat.text(event, now)
            case ClientCommand():
                return self.chat.command(event, now)
            case PostRefused():
                return self.chat.post_refused(event)
            case CatchUpDone():
                return self.catchups.done(event, now)
            case CatchUpPage():
                return self.catchups.page(event, now)
            case PlaybackLoaded(client, messages, more):
                if client not in self.presence:
                    self.ledger.drop_playback(client)
                    return []
                return self.ledger.play(client, messages, more, self.router.playback_wants(client),
                                        self.router.replay)
            case RelaysAcked(relay_ids, delivered):
                return self.ledger.acked(relay_ids, delivered, self.presence.__contains__)
            case RelayBounced(resource, relay_id):
                return self.ledger.bounced(resource, relay_id)
            case RelayReceived(resource, relay_id):
                return self.ledger.received(resource, relay_id)
            case KnownMessages(room, keys):
                if room in self.catchups.gaps:  # (a room without an archive has none)
                    return self.catchups.known(room, keys)
                return self.router.known(room, keys)
            case ReadUpTo(room, stanza_id):
                return [A.FindRead(room, stanza_id)]
            case ReadAt(room, seq, unread):
                self.router.read_at(room, seq, unread)
                return []
            case ExpiryDue(retention_s):
                return self.ledger.expire(now, retention_s, busy=self.presence)
            case RoomEvent():
                actions = self.rooms.handle(event, now)
                room = self.rooms.get(event.room)
                if room is None or room.state not in (RoomState.JOINING, RoomState.JOINED):
                    self.occupants.clear(event.room)
                return actions
            case OccupantPresent(room, nick, jid, role, affiliation, show):
                if room in self.rooms.rooms:
                    self.occupants.present(room, Occupant(nick, jid, role, affiliation, show))
                return []
            case OccupantLeft(room, nick, new_nick):
                if new_nick:
                    self.occupants.renamed(room, nick, new_nick)
                else:
                    self.occupants.gone(room, nick)
                return self.rooms.handle(OccupantGone(room, nick), now)
            case SessionEstablished():
                return self.presence.session_established(now) + self.rooms.session_established(now)
            case SessionLost():
                self.occupants.clear_all()
                self.presence.session_lost()
                self.deferred_playback.clear()
                self.catchups.session_lost()
                return [*self.ledger.session_lost(), *self.rooms.session_lost(now)]
            case PepBookmarksLoaded(items):
                self.bookmarks.load_pep(items)
                return self._loaded("xep-0402", len(items), now)
            case PepBookmarkPublished(item):
                self.bookmarks.publish(item)
            case PepBookmarkRetracted(item_id):
                if not self.bookmarks.retract(item_id):
                    return []
            case LegacyBookmarksLoaded(items):
                self.bookmarks.load_legacy(items)
                return self._loaded("xep-0048", len(items), now)
            case _:
                raise TypeError(f"not an engine event: {event!r}")
        return self._bookmarks_changed(now)

    def _room_message(self, msg: RoomMessage, now: float) -> list[A.Action]:
        room = self.rooms.get(msg.room)
        if room is None:
            return []
        room.touch(now)
        held = self.catchups.hold(msg, now)
        return held if held is not None else self.router.take(msg, now)

    def _client_presence(self, ev: ClientPresence, now: float) -> list[A.Action]:
        actions, back, gone = self.presence.seen(ev, now)
        if back and not self.loaded:
            self.deferred_playback.add(ev.resource)  # which rooms, which nicks: not known yet
        elif back and (load := self.ledger.came_back(ev.resource)) is not None:
            actions.append(load)
        if gone:
            # Gone without a receipt for what is in flight to it: it may never have had it
            # (a connection that died under it).  Owed again, at its next playback.
            actions += self.ledger.went_away(ev.resource, now)
        return actions

    def stop(self, now: float) -> list[A.Action]:
        """Leave every room (the daemon is shutting down); bookmarks no longer count."""
        self.stopping = True
        return self._complete(self.rooms.reconcile({}, now, unwanted=Unwanted("", STOPPING, STOPPING)))

    def _complete(self, actions: list[A.Action]) -> list[A.Action]:
        """What the rooms, the presence mirror and the commands ask for, completed with what
        only the engine knows: a room without an archive joins with its history since our
        cursor (the keys of what we logged since read back first, to take nothing twice);
        a bookmark is written from the bookmark as it is (a destroyed room's is moved to its
        venue unless the user has one there already, or it is the room itself); the
        presence goes to the rooms we are in."""
        if not any(isinstance(a, _COMPLETED) for a in actions):
            return actions
        out: list[A.Action] = []
        for a in actions:
            match a:
                case A.Join(room) if (since := self.catchups.history_since(room)) is not None:
                    out += [A.LoadKeys(room, since - HISTORY_SLACK_S), replace(a, history_since=since)]
                case A.DisableAutojoin(room, reason):
                    if (bookmark := self.bookmark(room)) is not None:
                        out.append(A.WriteBookmark(room, bookmark, reason, autojoin=False))
                case A.MoveBookmark(room, venue, reason):
                    if (bookmark := self.bookmark(room)) is None:
                        continue
                    if (kept := may_move(self.effective, room, venue)) is not None:
                        out.append(A.WriteBookmark(room, bookmark, f"{reason} ({kept})", autojoin=False))
                    else:
                        out.append(A.WriteBookmark(room, bookmark, reason, venue=venue))
                case A.UpdateBookmark(room, autojoin, nick):
                    out.append(A.WriteBookmark(room, self.bookmark(room), "asked by a client", autojoin, nick))
                case A.MirrorPresence():
                    joined = tuple((r.jid, r.nick) for r in self.rooms if r.state is RoomState.JOINED and r.nick)
                    out.append(replace(a, rooms=joined))
                case _:
                    out.append(a)
        return out

    def restore(
        self,
        ledger: LedgerState,
        *,
        rooms: Mapping[str, tuple[str | None, float | None, bool | None]] | None = None,
        settings: Mapping[str, ClientSettings] | None = None,
        now: float = 0.0,
        gaps: Mapping[str, int] | None = None,
    ) -> list[Change]:
        """The state kept in the store, at start (after the last run's relays are settled).
        Returns what the ledger marks anew (to be persisted): see Ledger.restore."""
        self.router.settings.update(settings or {})
        self.catchups.restore(rooms or {}, gaps)
        return self.ledger.restore(ledger, known=self.router.settings, now=now)

    def configure(self, *, relay_globs: Mapping[str, str], offline_status: str, catchup_max: int,
                  playback_max: int, offline_mentions: str = "store") -> None:
        """The settings a reload changes at once (the constructor's, of the same names)."""
        self.router.globs = dict(relay_globs)
        self.router.store_mentions = offline_mentions == "store"
        self.presence.offline_status = offline_status
        self.catchups.catchup_max = catchup_max
        self.ledger.playback_max = playback_max

    def history_since(self, room: str) -> float | None:
        return self.catchups.history_since(room)

    def refresh(self, now: float) -> list[A.Action]:
        """Reconcile again (the default nick or the policy changed)."""
        return self._complete(self._bookmarks_changed(now))

    def bookmark(self, room: str) -> Bookmark | None:
        return self.effective.get(room)

    @property
    def loaded(self) -> bool:
        return self.bookmarks.pep_loaded or self.bookmarks.legacy_loaded

    def _loaded(self, store: str, count: int, now: float) -> list[A.Action]:
        actions = self._bookmarks_changed(now)
        # The clients that came back before the bookmarks get their playback now.
        for client in sorted(self.deferred_playback):
            if client in self.presence and (load := self.ledger.came_back(client)) is not None:
                actions.append(load)
        self.deferred_playback.clear()
        autojoin = sum(1 for bm in self.effective.values() if bm.autojoin)
        note = A.Note("info", "bookmarks loaded", {"store": store, "items": count, "autojoin": autojoin})
        return [note, *actions]

    def _bookmarks_changed(self, now: float) -> list[A.Action]:
        self.effective, notes = self.bookmarks.resolve()
        actions: list[A.Action] = list(notes)
        if not self.stopping:
            actions += self.rooms.reconcile(self.wants(), now)
        return actions

    def wants(self) -> Mapping[str, object]:
        return wants(self.effective, self.default_nick)


class _View:
    """The rooms as the relay, catch-up and chat parts see them (core.types.RoomsView)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def kept(self, room: str) -> bool:
        return room in self._engine.rooms.rooms

    def nick(self, room: str) -> str | None:
        r = self._engine.rooms.get(room)
        return r.nick if r is not None else None

    def nicks(self, room: str) -> list[str]:
        engine = self._engine
        r = engine.rooms.get(room)
        bookmark = engine.bookmark(room)
        nicks = [r.nick, r.wanted_nick] if r is not None else []
        nicks.append(bookmark.nick if bookmark is not None and bookmark.nick else engine.default_nick)
        return [n for n in dict.fromkeys(nicks) if n]

    def occupied(self) -> list[str]:
        return [r.jid for r in self._engine.rooms if r.nick is not None]

    def known(self) -> list[str]:
        return sorted({*self._engine.effective, *self._engine.rooms.rooms})

    def bookmarks_loaded(self) -> bool:
        return self._engine.loaded

    def summary(self) -> tuple[bool, int, int]:
        rooms = self._engine.rooms
        joined = sum(1 for r in rooms if r.nick is not None and r.state is RoomState.JOINED)
        return rooms.online, joined, rooms.wanted

    def lines(self) -> list[RoomLine]:
        occupants = self._engine.occupants
        return [RoomLine(r.jid, r.state.value, r.reason, r.nick, occupants.count(r.jid))
                for r in sorted(self._engine.rooms, key=lambda r: r.jid)]
