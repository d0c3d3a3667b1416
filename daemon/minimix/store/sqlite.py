"""What the store keeps: the clients' settings, the message log, the rooms' catch-up
cursors and the delivery ledger's state (core.ledger's LedgerStore), in the SQLite file
of :class:`~minimix.store.database.Database`."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
from minimix.core.relay import ClientSettings, Mode
from minimix.store.bounds import kept
from minimix.store.database import Database


class Store(Database):
    # -- client settings ------------------------------------------------------------------

    def load_clients(self) -> dict[str, ClientSettings]:
        rooms: dict[str, dict[str, Mode]] = {}
        for resource, room, mode in self._read("SELECT resource, room, mode FROM client_room"):
            rooms.setdefault(resource, {})[room] = Mode(mode)
        clients: dict[str, ClientSettings] = {}
        for resource, default, keywords in self._read(
            "SELECT resource, default_mode, keywords FROM client"
        ):
            clients[resource] = ClientSettings(
                Mode(default) if default else None, rooms.pop(resource, {}), tuple(json.loads(keywords))
            )
        for resource, modes in rooms.items():
            clients[resource] = ClientSettings(None, modes, ())
        return clients

    def save_client(self, resource: str, settings: ClientSettings) -> None:
        with self._transaction(writes_only=True):
            self._exec(
                "INSERT INTO client (resource, default_mode, keywords) VALUES (?, ?, ?) "
                "ON CONFLICT (resource) DO UPDATE SET default_mode = excluded.default_mode, "
                "keywords = excluded.keywords",
                (resource, settings.default.value if settings.default else None, json.dumps(list(settings.keywords))),
            )
            self._exec("DELETE FROM client_room WHERE resource = ?", (resource,))
            self._execmany(
                "INSERT INTO client_room (resource, room, mode) VALUES (?, ?, ?)",
                [(resource, room, mode.value) for room, mode in settings.rooms.items()],
            )


    # -- the message log ---------------------------------------------------------------------

    def messages_after(
        self, cursors: Mapping[str, int], default: int, limit: int, after: int = 0
    ) -> tuple[list[Stored], int]:
        """Messages after each room's cursor (``default`` for other rooms) and after
        ``after``, oldest first: at most ``limit`` of them, and 1 if there are more, else 0
        (the next page starts after the last one)."""
        low = max(min([*cursors.values(), default]), after)
        rows = self._read(
            "SELECT seq, room, nick, private, stamp, body, subject, text, xml FROM message WHERE seq > ? ORDER BY seq",
            (low,),
        )
        found: list[Stored] = []
        for row in rows:
            if row[0] <= cursors.get(row[1], default):
                continue
            if len(found) == limit:
                return found, 1
            found.append(Stored(row[0], row[1], row[2], bool(row[3]), *row[4:]))
        return found, 0

    def keys_since(self, room: str, since: float, after: int = 0) -> list[str]:
        """The de-duplication keys of a room's messages logged since ``since`` and after the
        log's message ``after``, the oldest first."""
        return [
            key
            for (key,) in self._read(
                "SELECT key FROM message WHERE room = ? AND stamp >= ? AND seq > ? AND key IS NOT NULL ORDER BY seq",
                (room, since, after),
            )
        ]

    def prune(self, before: float) -> int:
        """Forget messages logged before ``before``, but never the newest: the log's sequence
        goes on from it after a restart (a store pruned empty would start again at 1, below
        every client's cursor, and what came next would count as delivered)."""
        with self._transaction():
            pruned = self._exec(
                "DELETE FROM message WHERE stamp < ? AND seq < (SELECT max(seq) FROM message)", (before,)
            ).rowcount
            # a message pruned is played back to no one: nothing to skip
            self._exec("DELETE FROM pushed WHERE NOT EXISTS (SELECT 1 FROM message WHERE message.seq = pushed.seq)")
            return pruned

    def read_position(self, room: str, stanza_id: str) -> tuple[int, int] | None:
        """Where a room's message with this archive id is in the log, and how many of the
        room's (not private) messages come after it; None if it is not in the log."""
        row = self._read("SELECT seq FROM message WHERE room = ? AND stanza_id = ?", (room, stanza_id)).fetchone()
        if row is None:
            return None
        (after,) = self._read(
            "SELECT count(*) FROM message WHERE room = ? AND seq > ? AND NOT private", (room, row[0])
        ).fetchone()
        return row[0], after

    # -- rooms ---------------------------------------------------------------------------------

    def room_states(self) -> dict[str, tuple[str | None, float | None, bool | None]]:
        return {
            room: (last_id, last_stamp, None if mam is None else bool(mam))
            for room, last_id, last_stamp, mam in self._read(
                "SELECT room, last_stanza_id, last_stamp, mam FROM room_state"
            )
        }

    def set_room_cursor(self, room: str, stanza_id: str | None, stamp: float) -> None:
        with self._transaction(writes_only=True):
            self._exec(_ROOM_CURSOR_SQL, (room, stanza_id, stamp))

    def room_gaps(self) -> dict[str, int]:
        """The rooms whose archive still owes what came after their cursor: the log's last
        message when that began."""
        return dict(self._read("SELECT room, gap_after FROM room_state WHERE gap_after IS NOT NULL"))

    def set_room_gap(self, room: str, after: int | None) -> None:
        with self._transaction(writes_only=True):
            self._exec(
                "INSERT INTO room_state (room, gap_after) VALUES (?, ?) "
                "ON CONFLICT (room) DO UPDATE SET gap_after = excluded.gap_after",
                (room, after),
            )

    def set_room_mam(self, room: str, mam: bool) -> None:
        with self._transaction(writes_only=True):
            self._exec(
                "INSERT INTO room_state (room, mam) VALUES (?, ?) "
                "ON CONFLICT (room) DO UPDATE SET mam = excluded.mam",
                (room, int(mam)),
            )

    # -- the delivery ledger (core.ledger's LedgerStore) --------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        """Persist the ledger's changes, in order, as they say (runs of one kind in one
        statement).  The store interprets nothing: the ledger says each value.  A logged
        message moves its room's cursor in the same write, and is kept within the log's
        bounds (see :func:`kept`)."""
        with self._transaction(writes_only=True):
            for kind, group in itertools.groupby(changes, type):
                run = list(group)
                if kind is Logged:
                    run = [kept(c) for c in run]
                    self._execmany(_CHANGE_SQL[kind], [_CHANGE_ROWS[kind](c) for c in run])
                    if cursors := [(c.room, *c.room_cursor) for c in run if c.room_cursor]:
                        self._execmany(_ROOM_CURSOR_SQL, cursors)
                elif kind in _FORGET_SQL:
                    clients = [(client,) for c in run for client in c.clients]
                    for sql in _FORGET_SQL[kind]:
                        self._execmany(sql, clients)
                elif kind is Pushed:
                    self._execmany(_CHANGE_SQL[kind], [(client, c.seq, c.room) for c in run for client in c.clients])
                elif kind is PushesForgotten:
                    self._execmany(_CHANGE_SQL[kind], [(c.client, seq) for c in run for seq in c.seqs])
                elif kind is Acked or kind is Settled:
                    self._execmany(_CHANGE_SQL[kind], [(r,) for c in run for r in c.relay_ids])
                else:
                    self._execmany(_CHANGE_SQL[kind], [_CHANGE_ROWS[kind](c) for c in run])

    def load(self) -> LedgerState:
        flights = {
            relay_id: Flight(client, room, seq, bool(acked), (sm_id, sm_seq) if sm_id is not None else None)
            for relay_id, client, room, seq, sm_id, sm_seq, acked in self._read(
                "SELECT relay_id, client, room, seq, sm_id, sm_seq, acked FROM inflight"
            )
        }
        pushed: dict[str, dict[int, str]] = {}
        for client, seq, room in self._read("SELECT client, seq, room FROM pushed"):
            pushed.setdefault(client, {})[seq] = room
        away = list(self._read("SELECT client, offline_since, away_since FROM client_seen WHERE offline_since IS NOT NULL"))
        return LedgerState(
            last_seq=self._read("SELECT coalesce(max(seq), 0) FROM message").fetchone()[0],
            cursors={(c, r): s for c, r, s in self._read("SELECT client, room, seq FROM cursor")},
            away={c: seq for c, seq, _ in away},
            away_at={c: at for c, _, at in away if at is not None},
            flights=flights,
            receipts=frozenset(c for (c,) in self._read("SELECT client FROM client_seen WHERE receipts")),
            pushed=pushed,
        )

    def record_stream(self, sm_id: str, inbound: int) -> None:
        """The XEP-0198 session relays go out on, and our inbound count then (what a crash
        probe asks the server about)."""
        with self._transaction(writes_only=True):
            self._exec(
                "INSERT INTO sm_session (one, sm_id, inbound) VALUES (1, ?, ?) ON CONFLICT (one) "
                "DO UPDATE SET sm_id = excluded.sm_id, inbound = excluded.inbound",
                (sm_id, inbound),
            )

    def sm_session(self) -> tuple[str, int] | None:
        row = self._read("SELECT sm_id, inbound FROM sm_session").fetchone()
        return (row[0], row[1]) if row else None

    def forget_sm_session(self) -> None:
        with self._transaction(writes_only=True):
            self._exec("DELETE FROM sm_session")


_ROOM_CURSOR_SQL = (
    "INSERT INTO room_state (room, last_stanza_id, last_stamp) VALUES (?, ?, ?) ON CONFLICT (room) "
    "DO UPDATE SET last_stanza_id = excluded.last_stanza_id, last_stamp = excluded.last_stamp"
)
_CHANGE_SQL: dict[type, str] = {
    Logged: "INSERT OR IGNORE INTO message (seq, room, stanza_id, nick, private, stamp, body, subject, text, xml, "
            "key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    CursorMoved: "INSERT INTO cursor (client, room, seq) VALUES (?, ?, ?) "
                 "ON CONFLICT (client, room) DO UPDATE SET seq = excluded.seq",
    InFlight: "INSERT OR REPLACE INTO inflight (relay_id, client, room, seq, sm_id, sm_seq, acked) "
              "VALUES (?, ?, ?, ?, ?, ?, 0)",
    Acked: "UPDATE inflight SET acked = 1 WHERE relay_id = ?",
    Settled: "DELETE FROM inflight WHERE relay_id = ?",
    Pushed: "INSERT OR REPLACE INTO pushed (client, seq, room) VALUES (?, ?, ?)",
    PushesForgotten: "DELETE FROM pushed WHERE client = ? AND seq = ?",
    Away: "INSERT INTO client_seen (client, offline_since, away_since) VALUES (?, ?, ?) ON CONFLICT (client) "
          "DO UPDATE SET offline_since = excluded.offline_since, away_since = excluded.away_since",
    AnswersReceipts: "INSERT INTO client_seen (client, receipts) VALUES (?, ?) "
                     "ON CONFLICT (client) DO UPDATE SET receipts = excluded.receipts",
}
_CHANGE_ROWS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    Logged: lambda c: (c.seq, c.room, c.stanza_id, c.nick, int(c.private), c.stamp, c.body, c.subject, c.text,
                       c.ref, c.key),
    CursorMoved: lambda c: (c.client, c.room, c.seq),
    InFlight: lambda c: (c.relay_id, c.client, c.room, c.seq, *(c.wire or (None, None))),
    Away: lambda c: (c.client, c.seq, c.at if c.seq is not None else None),
    AnswersReceipts: lambda c: (c.client, int(c.answers)),
}
_FORGET_SQL: dict[type, tuple[str, ...]] = {
    CursorsForgotten: ("DELETE FROM cursor WHERE client = ?", "DELETE FROM inflight WHERE client = ?",
                       "DELETE FROM pushed WHERE client = ?"),
    ClientsForgotten: ("DELETE FROM cursor WHERE client = ?", "DELETE FROM inflight WHERE client = ?",
                       "DELETE FROM pushed WHERE client = ?", "DELETE FROM client_seen WHERE client = ?"),
}
