"""Catch-up: what a room said while the account was not in it, from the room's archive.

For every room minimix keeps the room archive's id of the last message it saw (the room's
cursor, with its time).  After every (re)join it asks the archive (XEP-0313) for what came
after, and holds the room's live messages back until the answer is in, so everything is
taken in order and once.  A room without an archive is asked for its history since the
cursor's time in the join instead (XEP-0045 §7.2.15).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from minimix.core import actions as A
from minimix.core.events import CatchUpDone, CatchUpPage, RoomMessage

Take = Callable[[RoomMessage, float], list[A.Action]]
# Live messages held back in a room while its archive is read, at most: beyond, the
# catch-up is given up (an archive that slow, a room that busy) and they go out at once.
HELD_MAX = 1_000


def room_label(room: str) -> str:
    return room.split("@", 1)[0]


class CatchUps:
    def __init__(self, take: Take, tell: Callable[[str, str], list[A.Action]], *, catchup_max: int = 500) -> None:
        self._take = take  # logs and relays one message (the router's)
        self._tell = tell  # (room, text) → a notice to the clients that follow the room
        self.catchup_max = catchup_max
        # The last archive id seen, with its time; (None, time) where there is no id to go by:
        # a first join not yet looked at, an archive that was empty then, a room without one.
        self.cursor: dict[str, tuple[str | None, float]] = {}
        self.mam: dict[str, bool] = {}  # does the room keep an archive (unknown: absent)
        self.provisional: dict[str, tuple[None, float]] = {}  # first joins' cursors
        self.held: dict[str, list[RoomMessage]] = {}  # live messages, held back while catching up
        self.tokens: dict[str, int] = {}  # room → its current CatchUp's token
        self.count = 0

    def restore(self, rooms: Mapping[str, tuple[str | None, float | None, bool | None]]) -> None:
        for room, (last_id, last_stamp, mam) in rooms.items():
            if last_stamp is not None:
                self.cursor[room] = (last_id, last_stamp)
            if mam is not None:
                self.mam[room] = mam

    def joined(self, room: str, now: float) -> list[A.Action]:
        """Joined (again): fetch from the room's archive what came after our cursor, and hold
        live messages back until then, so everything arrives in order and once.

        A first join has nothing to catch up, but gets a cursor at once: from now (a time
        cursor), until its first look at the archive says where the archive ends.  Stopped
        before that look, the next start still catches up from here."""
        cursor = self.cursor.get(room)
        actions: list[A.Action] = []
        if cursor is None:
            self.cursor[room] = self.provisional[room] = (None, now)
            actions.append(A.SaveRoom(room, cursor=(None, now)))
        if self.mam.get(room) is False:
            return actions  # no archive: the join asked for the history since our cursor instead
        if cursor is not None:  # a first join has nothing to catch up: nothing to hold back
            self.held[room] = []
        self.count += 1
        self.tokens[room] = self.count
        return [*actions, A.CatchUp(room, cursor, self.catchup_max, self.count)]

    def hold(self, msg: RoomMessage, now: float) -> list[A.Action] | None:
        """Hold a live message back while its room is caught up (after the archive's, to keep
        the order): None if the room is not catching up, else what holding it takes."""
        held = self.held.get(msg.room)
        if held is None or msg.archived:
            return None
        held.append(msg)
        return self._give_up(msg.room, now) if len(held) >= HELD_MAX else []

    def _give_up(self, room: str, now: float) -> list[A.Action]:
        """Too much live traffic held back while the room's archive is read: what the
        archive still has to give is given up (its answer, late, is stale now), and the
        live messages go out, in order."""
        self.tokens.pop(room, None)
        held = self.held.pop(room)
        actions: list[A.Action] = [A.Note("warning", "catch-up given up: too many live messages held back meanwhile",
                                          {"room": room, "held": len(held)})]
        for msg in held:
            actions += self._take(msg, now)
        return actions

    def history_since(self, room: str) -> float | None:
        """For a room without an archive: catch up with the join's history since this time."""
        if self.mam.get(room) is False and room in self.cursor:
            return self.cursor[room][1]
        return None

    def noted(self, msg: RoomMessage, stamp: float) -> tuple[str | None, float] | None:
        """A message of the room was taken: the room's cursor is after it (returned, to be
        saved), or None.  Only the room's own ids count, never a private message's."""
        if msg.private:
            return None
        if msg.stanza_id:
            self.cursor[msg.room] = (msg.stanza_id, stamp)
        elif self.mam.get(msg.room) is False:
            # No archive, no ids: the next join asks for the history since this message.
            self.cursor[msg.room] = (None, stamp)
        else:
            return None
        return self.cursor[msg.room]

    def _stale(self, room: str, token: int | None) -> bool:
        """An answer to a catch-up that is not the room's current one: a session before
        asked, and its failure (or its late pages) must not end or feed the new one."""
        return token is not None and self.tokens.get(room) != token

    def page(self, ev: CatchUpPage, now: float) -> list[A.Action]:
        if ev.room not in self.held or self._stale(ev.room, ev.token):
            return []  # not (or no longer) catching up there: the session that asked is gone
        actions: list[A.Action] = []
        for msg in ev.messages:
            actions += self._take(msg, now)
        return actions

    def done(self, ev: CatchUpDone, now: float) -> list[A.Action]:
        if self._stale(ev.room, ev.token):
            return []
        self.tokens.pop(ev.room, None)
        actions: list[A.Action] = []
        if ev.mam is not None and self.mam.get(ev.room) is not ev.mam:
            self.mam[ev.room] = ev.mam
            actions.append(A.SaveRoom(ev.room, mam=ev.mam))
        provisional = self.provisional.pop(ev.room, None)
        if (
            provisional is not None
            and self.cursor.get(ev.room) == provisional  # no live message since
            and ev.head is not None
            and ev.error is None
            and not ev.messages
        ):
            # A first join's look: start from the archive's newest message (an exact id);
            # an empty archive, or none, keeps the time cursor of the join.
            head = (ev.head[0], min(ev.head[1], now))  # (a room's clock ahead of ours)
            self.cursor[ev.room] = head
            actions.append(A.SaveRoom(ev.room, cursor=head))
        for msg in ev.messages:
            actions += self._take(msg, now)
        if ev.more:
            actions += self._tell(ev.room, f"[{room_label(ev.room)}] {ev.more} more messages in {ev.room} not shown")
        if ev.messages or ev.streamed or ev.error:
            fields = {"room": ev.room, "messages": ev.streamed + len(ev.messages), "more": ev.more}
            if ev.error:
                fields["error"] = ev.error
            actions.append(A.Note("warning" if ev.error else "info", "caught up", fields))
        for msg in self.held.pop(ev.room, []):
            actions += self._take(msg, now)
        return actions

    def session_lost(self) -> None:
        self.held.clear()  # the archive still has what was held back
        self.tokens.clear()  # answers to that session's catch-ups are stale
