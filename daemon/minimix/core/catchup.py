"""Catch-up: what a room said while the account was not in it, from the room's archive.

For every room minimix keeps the room archive's id of the last message it saw (the room's
cursor, with its time).  After every (re)join it asks the archive (XEP-0313) for what came
after, and holds the room's live messages back until the answer is in, so everything is
taken in order and once.  A room without an archive is asked for its history since the
cursor's time in the join instead (XEP-0045 §7.2.15).

A catch-up that fails (the archive's error, or no answer in time) or is given up (too many
live messages held back meanwhile) leaves the room with a gap: the archive still owes what
came after the cursor.  The live messages go out and live traffic flows on, but the cursor
stays at the start of the gap (in the store too, with the gap), and the archive is asked
again after a while (:data:`RETRY_S`), while the room is joined; a rejoin's catch-up asks
too.  What the log has had since the gap opened is known first (its keys read back), so
what came live meanwhile is not taken twice; once the archive has answered, the cursor is
at the newest of what was taken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from minimix.core import actions as A
from minimix.core.events import CatchUpDone, CatchUpPage, RoomMessage, TimerKind
from minimix.core.router import dedup_key, said_at

Take = Callable[[RoomMessage, float], list[A.Action]]
# Live messages held back in a room while its archive is read, at most: beyond, the
# catch-up is given up (an archive that slow, a room that busy) and they go out at once.
HELD_MAX = 1_000
# After a failed catch-up the archive is asked again after these waits, then every last one.
RETRY_S = (10.0, 30.0, 120.0, 300.0, 900.0)
# What came live since a gap opened is among the newest of the archive's answer for it: the
# retry asks for as many more messages, so that they do not crowd out what the gap owes, and
# knows their keys, to take none twice; up to this many (beyond, what the gap owes is out of
# reach: the notice counts it).  A bound on the keys kept and on the messages read at once.
GAP_KEYS_MAX = 5_000

Position = tuple[str | None, float]  # a room's cursor: (archive id or None, time)


@dataclass(slots=True)
class Gap:
    """What a room's archive still owes: whatever came after the room's cursor."""

    after_seq: int  # the log's last message when the gap opened: those after it may come again
    failures: int = 0
    retry_at: float | None = None  # when the archive is asked again (None: not armed)
    ahead: Position | None = None  # the newest live message taken meanwhile, past the answer's end
    answered: Position | None = None  # the last message of the archive's current answer
    known: frozenset[str] = frozenset()  # the keys of what the log has had since it opened
    asking: int | None = None  # the token of the catch-up that waits for those keys


def room_label(room: str) -> str:
    return room.split("@", 1)[0]


class CatchUps:
    def __init__(self, take: Take, tell: Callable[[str, str], list[A.Action]], last_seq: Callable[[], int], *,
                 catchup_max: int = 500) -> None:
        self._take = take  # logs and relays one message (the router's)
        self._tell = tell  # (room, text) → a notice to the clients that follow the room
        self._last_seq = last_seq  # the log's last message (the ledger's)
        self.catchup_max = catchup_max
        # The last archive id seen, with its time; (None, time) where there is no id to go by:
        # a first join not yet looked at, an archive that was empty then, a room without one.
        self.cursor: dict[str, Position] = {}
        self.mam: dict[str, bool] = {}  # does the room keep an archive (unknown: absent)
        self.provisional: dict[str, tuple[None, float]] = {}  # first joins' cursors
        self.held: dict[str, list[RoomMessage]] = {}  # live messages, held back while catching up
        self.tokens: dict[str, int] = {}  # room → its current CatchUp's token
        self.gaps: dict[str, Gap] = {}  # rooms whose archive still owes what came after the cursor
        self.count = 0

    def restore(self, rooms: Mapping[str, tuple[str | None, float | None, bool | None]],
                gaps: Mapping[str, int] | None = None) -> None:
        for room, (last_id, last_stamp, mam) in rooms.items():
            if last_stamp is not None:
                self.cursor[room] = (last_id, last_stamp)
            if mam is not None:
                self.mam[room] = mam
        for room, after_seq in (gaps or {}).items():
            self.gaps[room] = Gap(after_seq)

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
        else:
            self.provisional.pop(room, None)  # a first look never answered: this one is no look
        if self.mam.get(room) is False:
            return actions  # no archive: the join asked for the history since our cursor instead
        if cursor is not None:  # a first join has nothing to catch up: nothing to hold back
            self.held[room] = []
        return actions + self._ask(room, cursor)

    def retry(self, room: str) -> list[A.Action]:
        """The time to ask the room's archive again for what it owes (the room is joined).
        Live messages are not held back meanwhile: the archive failed before, it may again."""
        gap = self.gaps.get(room)
        if gap is None or room in self.tokens:
            return []
        gap.retry_at = None
        return self._ask(room, self.cursor.get(room))

    def _ask(self, room: str, cursor: Position | None) -> list[A.Action]:
        """The CatchUp from ``cursor``; with a gap open, once the keys of what the log has had
        since it opened are back (:meth:`known`: what came live meanwhile is in the archive's
        answer too)."""
        self.count += 1
        self.tokens[room] = self.count
        if (gap := self.gaps.get(room)) is not None:
            gap.answered, gap.asking = None, self.count
            return [A.LoadKeys(room, 0.0, after=gap.after_seq)]
        return [A.CatchUp(room, cursor, self.catchup_max, self.count)]

    def left(self, room: str) -> list[A.Action]:
        """The room is no longer joined: its catch-up's answer is stale (the archive still has
        what was held back), and the archive is not asked again until the next join."""
        self.tokens.pop(room, None)
        self.held.pop(room, None)
        gap = self.gaps.get(room)
        if gap is None or gap.retry_at is None:
            return []
        gap.retry_at = None
        return [A.Disarm(room, TimerKind.CATCH_UP)]

    def hold(self, msg: RoomMessage, now: float) -> list[A.Action] | None:
        """Hold a live message back while its room is caught up (after the archive's, to keep
        the order): None if the room is not catching up, else what holding it takes."""
        held = self.held.get(msg.room)
        if held is None or msg.archived:
            return None
        held.append(msg)
        return self._give_up(msg.room, now) if len(held) >= HELD_MAX else []

    def _give_up(self, room: str, now: float) -> list[A.Action]:
        """Too much live traffic held back while the room's archive is read: its answer,
        late, is stale now; what the archive still has to give is a gap, asked again later,
        and the live messages go out, in order."""
        self.tokens.pop(room, None)
        held = self.held.pop(room)
        actions, delay = self._failed(room, now)
        actions.append(A.Note("warning", "catch-up given up: too many live messages held back meanwhile",
                              {"room": room, "held": len(held), "retry_in": delay}))
        for msg in held:
            actions += self._take(msg, now)
        return actions

    def _failed(self, room: str, now: float) -> tuple[list[A.Action], float]:
        """The archive still owes what came after the cursor: the room has a gap (saved, from
        the log's last message on), and the archive is asked again after a wait."""
        actions: list[A.Action] = []
        gap = self.gaps.get(room)
        if gap is None:
            gap = self.gaps[room] = Gap(self._last_seq())
            actions.append(A.SaveGap(room, gap.after_seq))
        gap.failures += 1
        delay = RETRY_S[min(gap.failures, len(RETRY_S)) - 1]
        gap.retry_at = now + delay
        actions.append(A.Arm(room, TimerKind.CATCH_UP, gap.retry_at))
        return actions, delay

    def _close(self, room: str) -> list[A.Action]:
        """The archive has answered for the gap: the cursor goes to the newest of what was
        taken, the archive's last or, newer still, a live one past the answer's end."""
        gap = self.gaps.pop(room)
        actions: list[A.Action] = [A.SaveGap(room, None)]
        if (newest := gap.ahead or gap.answered) is not None:
            self.cursor[room] = newest
            actions.insert(0, A.SaveRoom(room, cursor=newest))
        return actions

    def history_since(self, room: str) -> float | None:
        """For a room without an archive: catch up with the join's history since this time."""
        if self.mam.get(room) is False and room in self.cursor:
            return self.cursor[room][1]
        return None

    def noted(self, msg: RoomMessage, stamp: float) -> Position | None:
        """A message of the room was taken: the room's cursor is after it (returned, to be
        saved), or None.  Only the room's own ids count, never a private message's.  While
        the archive owes a gap, the cursor stays at its start (a live message is only
        remembered, to be the cursor if it is newer than the archive's answer)."""
        if msg.private:
            return None
        if msg.stanza_id:
            position: Position = (msg.stanza_id, stamp)
        elif self.mam.get(msg.room) is False:
            # No archive, no ids: the next join asks for the history since this message.
            position = (None, stamp)
        else:
            return None
        if (gap := self.gaps.get(msg.room)) is not None:
            if not msg.archived:
                gap.ahead = position
            return None
        self.cursor[msg.room] = position
        return position

    def _stale(self, room: str, token: int | None) -> bool:
        """An answer to a catch-up that is not the room's current one: a session before
        asked, and its failure (or its late pages) must not end or feed the new one."""
        return token is not None and self.tokens.get(room) != token

    def _answering(self, room: str, messages: Sequence[RoomMessage], now: float) -> None:
        """The archive's answer for a gap: where it ends, and whether it reaches the live
        messages taken meanwhile (they were in the archive before it was asked)."""
        gap = self.gaps.get(room)
        if gap is None or not messages:
            return
        if gap.ahead is not None and any(m.stanza_id == gap.ahead[0] for m in messages):
            gap.ahead = None
        last = messages[-1]
        if last.stanza_id:
            gap.answered = (last.stanza_id, said_at(last, now))

    def known(self, room: str, keys: tuple[str, ...]) -> list[A.Action]:
        """The keys of what the log has had since the room's gap opened, the oldest first
        (read back before the archive is asked again): what came live meanwhile is in its
        answer too.  The router knows the last few hundred of a room's; these may be more."""
        gap = self.gaps[room]
        gap.known = frozenset(keys[-GAP_KEYS_MAX:])
        token, gap.asking = gap.asking, None
        if token is None or self.tokens.get(room) != token:
            return []  # (no catch-up waits for them)
        room_for = len(keys) if len(keys) <= GAP_KEYS_MAX else 0
        return [A.CatchUp(room, self.cursor.get(room), self.catchup_max + room_for, token)]

    def _new(self, room: str, messages: Sequence[RoomMessage]) -> Sequence[RoomMessage]:
        gap = self.gaps.get(room)
        if gap is None or not gap.known:
            return messages
        return [m for m in messages if dedup_key(m) not in gap.known]

    def page(self, ev: CatchUpPage, now: float) -> list[A.Action]:
        if ev.room not in self.tokens or self._stale(ev.room, ev.token):
            return []  # not (or no longer) catching up there: the session that asked is gone
        self._answering(ev.room, ev.messages, now)
        actions: list[A.Action] = []
        for msg in self._new(ev.room, ev.messages):
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
        self._answering(ev.room, ev.messages, now)
        for msg in self._new(ev.room, ev.messages):
            actions += self._take(msg, now)
        if ev.more:
            actions += self._tell(ev.room, f"[{room_label(ev.room)}] {ev.more} more messages in {ev.room} not shown")
        fields = {"room": ev.room, "messages": ev.streamed + len(ev.messages), "more": ev.more}
        if ev.error and provisional is None:  # (a first look's failure leaves nothing owed)
            failed, delay = self._failed(ev.room, now)
            actions += failed
            actions.append(A.Note("warning", "catch-up failed; asking the archive again later",
                                  {**fields, "error": ev.error, "retry_in": delay}))
        elif ev.room in self.gaps and not ev.error:
            actions += self._close(ev.room)
            actions.append(A.Note("info", "caught up", {**fields, "gap": "closed"}))
        elif ev.messages or ev.streamed or ev.error:
            if ev.error:
                fields["error"] = ev.error
            actions.append(A.Note("warning" if ev.error else "info", "caught up", fields))
        for msg in self.held.pop(ev.room, []):
            actions += self._take(msg, now)
        return actions

    def session_lost(self) -> None:
        self.held.clear()  # the archive still has what was held back
        self.tokens.clear()  # answers to that session's catch-ups are stale
