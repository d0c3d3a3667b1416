"""The ledger's store in memory: the LedgerStore contract with nothing but dicts (and the
rooms' catch-up cursors, which a logged message moves with it).

The SQLite store (:mod:`minimix.store`) is the one the daemon runs on; this one runs the
delivery model's Hypothesis test fast, and the same contract tests run on both (soju tests
its database interface on two backends the same way).  It keeps what the changes say, as
they say it; the only rules it applies are the log's: a room's archive id is logged once,
and pruning keeps the newest message (the sequence goes on from it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from minimix.core.events import Stored
from minimix.core.ledger_records import (
    Acked,
    AnswersReceipts,
    Away,
    Change,
    ClientsForgotten,
    CursorMoved,
    CursorsForgotten,
    Flight,
    InFlight,
    LedgerState,
    Logged,
    Pushed,
    PushesForgotten,
    Settled,
)


class MemoryLedgerStore:
    def __init__(self) -> None:
        self.log: dict[int, Logged] = {}
        self._ids: set[tuple[str, str]] = set()  # (room, archive id) logged
        self.cursors: dict[tuple[str, str], int] = {}
        self.away: dict[str, int] = {}
        self.away_at: dict[str, float] = {}
        self.flights: dict[str, Flight] = {}
        self.receipts: set[str] = set()
        self.pushed: dict[str, dict[int, str]] = {}  # client → seq → room
        self.room_cursors: dict[str, tuple[str | None, float]] = {}  # catch-up's (Logged moves them too)
        self.room_mam: dict[str, bool] = {}
        self.room_gap: dict[str, int] = {}

    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            match change:
                case Logged(seq, room, stanza_id):
                    if stanza_id is None or (room, stanza_id) not in self._ids:
                        self.log[seq] = change
                        if stanza_id is not None:
                            self._ids.add((room, stanza_id))
                    if change.room_cursor is not None:
                        self.room_cursors[room] = change.room_cursor
                case CursorMoved(client, room, seq):
                    self.cursors[client, room] = seq
                case InFlight(relay_id, client, room, seq, wire):
                    self.flights[relay_id] = Flight(client, room, seq, False, wire)
                case Acked(relay_ids):
                    for relay_id in relay_ids:
                        if (flight := self.flights.get(relay_id)) is not None:
                            self.flights[relay_id] = replace(flight, acked=True)
                case Settled(relay_ids):
                    for relay_id in relay_ids:
                        self.flights.pop(relay_id, None)
                case Away(client, None):
                    self.away.pop(client, None)
                    self.away_at.pop(client, None)
                case Away(client, seq, at):
                    self.away[client] = seq
                    if at is not None:
                        self.away_at[client] = at
                case Pushed(clients, room, seq):
                    for client in clients:
                        self.pushed.setdefault(client, {})[seq] = room
                case PushesForgotten(client, seqs):
                    kept = self.pushed.get(client, {})
                    for seq in seqs:
                        kept.pop(seq, None)
                    if not kept:
                        self.pushed.pop(client, None)
                case AnswersReceipts(client, answers):
                    (self.receipts.add if answers else self.receipts.discard)(client)
                case CursorsForgotten(clients) | ClientsForgotten(clients):
                    gone = set(clients)
                    self.cursors = {k: v for k, v in self.cursors.items() if k[0] not in gone}
                    self.flights = {r: f for r, f in self.flights.items() if f.client not in gone}
                    self.pushed = {c: seqs for c, seqs in self.pushed.items() if c not in gone}
                    if isinstance(change, ClientsForgotten):
                        for client in gone:
                            self.away.pop(client, None)
                            self.away_at.pop(client, None)
                            self.receipts.discard(client)
                case _:
                    raise TypeError(f"not a ledger change: {change!r}")

    def load(self) -> LedgerState:
        return LedgerState(
            last_seq=max(self.log, default=0),
            cursors=dict(self.cursors),
            away=dict(self.away),
            away_at=dict(self.away_at),
            flights=dict(self.flights),
            receipts=frozenset(self.receipts),
            pushed={c: dict(seqs) for c, seqs in self.pushed.items()},
        )

    def set_room_cursor(self, room: str, stanza_id: str | None, stamp: float) -> None:
        self.room_cursors[room] = (stanza_id, stamp)

    def set_room_mam(self, room: str, mam: bool) -> None:
        self.room_mam[room] = mam

    def set_room_gap(self, room: str, after: int | None) -> None:
        if after is None:
            self.room_gap.pop(room, None)
        else:
            self.room_gap[room] = after

    def room_gaps(self) -> dict[str, int]:
        return dict(self.room_gap)

    def room_states(self) -> dict[str, tuple[str | None, float | None, bool | None]]:
        rooms = {*self.room_cursors, *self.room_mam}
        return {r: (*self.room_cursors.get(r, (None, None)), self.room_mam.get(r)) for r in rooms}

    def messages_after(
        self, cursors: Mapping[str, int], default: int, limit: int, after: int = 0
    ) -> tuple[list[Stored], int]:
        found: list[Stored] = []
        for seq in sorted(s for s in self.log if s > after):
            m = self.log[seq]
            if seq <= cursors.get(m.room, default):
                continue
            if len(found) == limit:
                return found, 1
            found.append(Stored(m.seq, m.room, m.nick, m.private, m.stamp, m.body, m.subject, m.text, m.ref))
        return found, 0

    def keys_since(self, room: str, since: float, after: int = 0) -> list[str]:
        return [m.key for seq, m in sorted(self.log.items())
                if m.room == room and m.stamp >= since and seq > after and m.key is not None]

    def prune(self, before: float) -> int:
        """Forget messages older than ``before``, but never the newest: the log's sequence
        goes on from it after a restart."""
        newest = max(self.log, default=None)
        old = [seq for seq, m in self.log.items() if m.stamp < before and seq != newest]
        for seq in old:
            m = self.log.pop(seq)
            if m.stanza_id is not None:
                self._ids.discard((m.room, m.stanza_id))
        for seqs in self.pushed.values():  # a message pruned is played back to no one
            for seq in [s for s in seqs if s not in self.log]:
                del seqs[seq]
        self.pushed = {c: seqs for c, seqs in self.pushed.items() if seqs}
        return len(old)

    def read_position(self, room: str, stanza_id: str) -> tuple[int, int] | None:
        """Where a room's message with this archive id is in the log, and how many of the
        room's (not private) messages come after it; None if it is not in the log."""
        found = [seq for seq, m in self.log.items() if m.room == room and m.stanza_id == stanza_id]
        if not found:
            return None
        after = sum(1 for seq, m in self.log.items() if m.room == room and not m.private and seq > found[0])
        return found[0], after
