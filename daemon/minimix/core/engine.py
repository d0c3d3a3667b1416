"""The engine: the whole of minimix's decisions, as ``handle(event, now) -> actions``.

It holds the bookmarks (both stores) and the rooms, and turns every event into
actions: a bookmark change is resolved into wants and reconciled with the rooms;
a session event starts or stops the join pipeline; a room event goes to its room.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from minimix.core import actions as A
from minimix.core.bookmarks import Bookmark, BookmarkSet, wants
from minimix.core.clients import Clients
from minimix.core.commands import AddressCheck
from minimix.core.events import (
    CatchUpDone,
    CatchUpPage,
    ClientCommand,
    ClientPresence,
    ClientsAway,
    ClientText,
    KnownMessages,
    LegacyBookmarksLoaded,
    OccupantGone,
    OccupantLeft,
    OccupantPresent,
    PepBookmarkPublished,
    PepBookmarkRetracted,
    PepBookmarksLoaded,
    PlaybackLoaded,
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
from minimix.core.occupants import Occupant, Occupants
from minimix.core.policy import RoomPolicy
from minimix.core.room import RoomState
from minimix.core.rooms import Rooms

STOPPING = "minimix is stopping"

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
    KnownMessages,
    ClientsAway,
)
EVENTS = (RoomEvent, *ACCOUNT_EVENTS)
"""Every event the engine takes (the app hands it these and nothing else)."""
AccountEvent = (
    SessionEstablished | SessionLost | PepBookmarksLoaded | PepBookmarkPublished | PepBookmarkRetracted
    | LegacyBookmarksLoaded | OccupantPresent | OccupantLeft | ClientPresence | RoomMessage | ClientText
    | ClientCommand | CatchUpDone | CatchUpPage | PlaybackLoaded | RelaysAcked | RelayBounced
    | RelayReceived | KnownMessages | ClientsAway
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
        address_check: AddressCheck | None = None,
    ) -> None:
        self.default_nick = default_nick
        self.address_check = address_check  # the edge's stringprep of what commands bookmark
        rng = rng or random.Random()
        self.bookmarks = BookmarkSet()
        self.effective: dict[str, Bookmark] = {}
        self.rooms = Rooms(policy, rng)
        self.occupants = Occupants()
        self.clients = Clients(
            self, rng, dict(relay_globs or {}), offline_status, catchup_max=catchup_max, playback_max=playback_max
        )
        self.stopping = False
        # First joins' look at the archive (where it ends) and the saving of their cursor,
        # held while rooms are joining: joins go first, and a start with many new rooms
        # does not compete with them (the cursors are in memory at once).
        self._first_looks: dict[str, list[A.Action]] = {}

    def handle(self, event: AccountEvent | RoomEvent, now: float) -> list[A.Action]:
        actions = self._handle(event, now)
        while self.rooms.just_joined:  # joined (again): catch up from the room's archive
            room = self.rooms.just_joined.pop(0)
            joined = self.clients.room_joined(room, now)
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
                return self.clients.room_message(event, now)
            case TimerFired("", TimerKind.PRESENCE):
                return self.clients.presence_due()
            case ClientPresence():
                return self.clients.presence(event, now)
            case ClientText():
                return self.clients.text(event, now)
            case ClientCommand():
                return self.clients.command(event, now)
            case CatchUpDone():
                return self.clients.catch_up_done(event, now)
            case CatchUpPage():
                return self.clients.catch_up_page(event, now)
            case PlaybackLoaded():
                return self.clients.playback_loaded(event)
            case RelaysAcked():
                return self.clients.acked(event)
            case RelayBounced():
                return self.clients.bounced(event)
            case RelayReceived():
                return self.clients.received(event)
            case KnownMessages(room, keys):
                return self.clients.known(room, keys)
            case ClientsAway():
                return self.clients.expire(event, now)
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
                return self.clients.session_established(now) + self.rooms.session_established(now)
            case SessionLost():
                self.occupants.clear_all()
                settled = self.clients.session_lost()
                return [*settled, *self.rooms.session_lost(now)]
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

    def stop(self, now: float) -> list[A.Action]:
        """Leave every room (the daemon is shutting down); bookmarks no longer count."""
        self.stopping = True
        return self.rooms.reconcile({}, now, unwanted=Unwanted("", STOPPING, STOPPING))

    def restore(
        self,
        *,
        next_seq: int,
        rooms: Mapping[str, tuple[str | None, float | None, bool | None]],
        cursors: Mapping[tuple[str, str], int],
        offline_since: Mapping[str, int],
        receipts: Iterable[str] = (),
    ) -> dict[str, int]:
        """The state kept in the store, at start.  Returns the clients it marked as gone
        since the last message logged (to be saved)."""
        c = self.clients
        c.next_seq = next_seq
        for room, (last_id, last_stamp, mam) in rooms.items():
            if last_stamp is not None:
                c.room_cursor[room] = (last_id, last_stamp)
            if mam is not None:
                c.room_mam[room] = mam
        c.cursors.update(cursors)
        c.offline_since.update(offline_since)
        c.receipts.update(receipts)
        # A client known from the last run but not marked as gone was there when it ended:
        # whatever is logged from now on is owed to it, in every room, until it is seen
        # (it may be gone by now, and a room it never had a relay in has no cursor).
        marks = {}
        for client in sorted({*(k for k, _ in cursors), *c.settings, *receipts} - set(c.offline_since)):
            marks[client] = c.offline_since[client] = next_seq - 1
        return marks

    def configure(self, *, relay_globs: Mapping[str, str], offline_status: str, catchup_max: int,
                  playback_max: int) -> None:
        """The settings a reload changes at once (the constructor's, of the same names)."""
        c = self.clients
        c.globs, c.offline_status = dict(relay_globs), offline_status
        c.catchup_max, c.playback_max = catchup_max, playback_max

    def history_since(self, room: str) -> float | None:
        return self.clients.history_since(room)

    def refresh(self, now: float) -> list[A.Action]:
        """Reconcile again (the default nick or the policy changed)."""
        return self._bookmarks_changed(now)

    def bookmark(self, room: str) -> Bookmark | None:
        return self.effective.get(room)

    @property
    def loaded(self) -> bool:
        return self.bookmarks.pep_loaded or self.bookmarks.legacy_loaded

    def _loaded(self, store: str, count: int, now: float) -> list[A.Action]:
        actions = self._bookmarks_changed(now) + self.clients.bookmarks_loaded()
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
