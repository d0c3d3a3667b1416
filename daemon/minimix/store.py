"""The store: one SQLite file in the state dir, written only by the app's loop.

WAL mode, the schema version in ``PRAGMA user_version``, migrations as numbered SQL.
A store that cannot be opened or read is moved aside with a clear log line and a fresh
one is made: the daemon never refuses to start because of its cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from minimix.core.relay import ClientSettings, Mode

FILENAME = "minimix.sqlite3"
ACK_MARK_FILENAME = "sm-acked"
DELETE_BATCH = 500  # relay ids per statement (SQLite allows 32766 parameters)

MIGRATIONS: list[str] = [
    # 1: per-client relay settings
    """
    CREATE TABLE client (
        resource TEXT PRIMARY KEY,
        default_mode TEXT,
        keywords TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE client_room (
        resource TEXT NOT NULL,
        room TEXT NOT NULL,
        mode TEXT NOT NULL,
        PRIMARY KEY (resource, room)
    );
    """,
    # 2: the message log (for playback), room archive cursors, delivery cursors, relays in
    # flight and the XEP-0198 session they went out on (for exactly-once after a crash)
    """
    CREATE TABLE message (
        seq INTEGER PRIMARY KEY,
        room TEXT NOT NULL,
        stanza_id TEXT,
        nick TEXT,
        private INTEGER NOT NULL DEFAULT 0,
        stamp REAL NOT NULL,
        body TEXT,
        subject TEXT,
        text TEXT NOT NULL,
        xml TEXT NOT NULL
    );
    CREATE UNIQUE INDEX message_room_stanza_id ON message (room, stanza_id) WHERE stanza_id IS NOT NULL;
    CREATE INDEX message_stamp ON message (stamp);
    CREATE TABLE room_state (
        room TEXT PRIMARY KEY,
        last_stanza_id TEXT,
        last_stamp REAL,
        mam INTEGER
    );
    CREATE TABLE cursor (
        client TEXT NOT NULL,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (client, room)
    );
    CREATE TABLE client_seen (
        client TEXT PRIMARY KEY,
        offline_since INTEGER
    );
    CREATE TABLE inflight (
        relay_id TEXT PRIMARY KEY,
        client TEXT NOT NULL,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sm_id TEXT,
        sm_seq INTEGER
    );
    CREATE TABLE sm_session (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        sm_id TEXT NOT NULL,
        inbound INTEGER NOT NULL
    );
    """,
    # 3: each message's de-duplication key, for rooms whose history is asked again after
    # a restart (rooms without an archive: no ids to go by)
    """
    ALTER TABLE message ADD COLUMN key TEXT;
    CREATE INDEX message_room_stamp ON message (room, stamp)
    """,
    # 4: the clients seen answering a relay's receipt request (XEP-0184)
    """
    ALTER TABLE client_seen ADD COLUMN receipts INTEGER NOT NULL DEFAULT 0
    """,
    # 5: relays the server has acknowledged, still in flight for their receipt
    """
    ALTER TABLE inflight ADD COLUMN acked INTEGER NOT NULL DEFAULT 0
    """,
]


class Store:
    def __init__(self, path: Path | str, *, on_reset: Callable[[str, Path], None] | None = None) -> None:
        """Open (or create) the store at ``path`` (``":memory:"`` for tests).

        ``on_reset(reason, moved_to)`` is called when an unusable file was moved aside.
        """
        self.path = path
        self._grouping = False
        self._cursor_rows: set[tuple[str, str]] | None = None  # see _cursor_keys
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            if str(path) == ":memory:":
                raise
            moved = Path(f"{path}.corrupt-{int(time.time())}")
            Path(path).rename(moved)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            if on_reset is not None:
                on_reset(str(exc), moved)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None)  # autocommit; explicit transactions
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this minimix")
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # -- client settings ------------------------------------------------------------------

    def load_clients(self) -> dict[str, ClientSettings]:
        rooms: dict[str, dict[str, Mode]] = {}
        for resource, room, mode in self.db.execute("SELECT resource, room, mode FROM client_room"):
            rooms.setdefault(resource, {})[room] = Mode(mode)
        clients: dict[str, ClientSettings] = {}
        for resource, default, keywords in self.db.execute(
            "SELECT resource, default_mode, keywords FROM client"
        ):
            clients[resource] = ClientSettings(
                Mode(default) if default else None, rooms.pop(resource, {}), tuple(json.loads(keywords))
            )
        for resource, modes in rooms.items():
            clients[resource] = ClientSettings(None, modes, ())
        return clients

    def save_client(self, resource: str, settings: ClientSettings) -> None:
        db = self.db
        with self._transaction():
            db.execute(
                "INSERT INTO client (resource, default_mode, keywords) VALUES (?, ?, ?) "
                "ON CONFLICT (resource) DO UPDATE SET default_mode = excluded.default_mode, "
                "keywords = excluded.keywords",
                (resource, settings.default.value if settings.default else None, json.dumps(list(settings.keywords))),
            )
            db.execute("DELETE FROM client_room WHERE resource = ?", (resource,))
            db.executemany(
                "INSERT INTO client_room (resource, room, mode) VALUES (?, ?, ?)",
                [(resource, room, mode.value) for room, mode in settings.rooms.items()],
            )


    # -- the message log ---------------------------------------------------------------------

    def max_seq(self) -> int:
        return self.db.execute("SELECT coalesce(max(seq), 0) FROM message").fetchone()[0]

    def store_message(self, m: StoredMessage) -> bool:
        """Append a room message (and move the room's archive cursor); False if known."""
        with self._transaction():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO message (seq, room, stanza_id, nick, private, stamp, body, "
                "subject, text, xml, key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (m.seq, m.room, m.stanza_id, m.nick, int(m.private), m.stamp, m.body, m.subject, m.text,
                 m.xml, m.key),
            )
            if m.stanza_id:
                self._set_room_cursor(m.room, m.stanza_id, m.stamp)
            return cur.rowcount == 1

    def messages_after(self, cursors: dict[str, int], default: int, limit: int) -> tuple[list[StoredMessage], int]:
        """Messages after each room's cursor (``default`` for other rooms), oldest first: at
        most ``limit`` of them, and how many more there are."""
        low = min([*cursors.values(), default])
        rows = self.db.execute(
            "SELECT seq, room, stanza_id, nick, private, stamp, body, subject, text, xml "
            "FROM message WHERE seq > ? ORDER BY seq",
            (low,),
        )
        found, more = [], 0
        for row in rows:
            if row[0] <= cursors.get(row[1], default):
                continue
            if len(found) < limit:
                found.append(StoredMessage(row[0], row[1], row[2], row[3], bool(row[4]), *row[5:]))
            else:
                more += 1
        return found, more

    def keys_since(self, room: str, since: float) -> list[str]:
        """The de-duplication keys of a room's messages logged since ``since``."""
        return [
            key
            for (key,) in self.db.execute(
                "SELECT key FROM message WHERE room = ? AND stamp >= ? AND key IS NOT NULL", (room, since)
            )
        ]

    def prune(self, before: float) -> int:
        with self._transaction():
            return self.db.execute("DELETE FROM message WHERE stamp < ?", (before,)).rowcount

    # -- rooms ---------------------------------------------------------------------------------

    def room_states(self) -> dict[str, tuple[str | None, float | None, bool | None]]:
        return {
            room: (last_id, last_stamp, None if mam is None else bool(mam))
            for room, last_id, last_stamp, mam in self.db.execute(
                "SELECT room, last_stanza_id, last_stamp, mam FROM room_state"
            )
        }

    def set_room_cursor(self, room: str, stanza_id: str, stamp: float) -> None:
        with self._transaction():
            self._set_room_cursor(room, stanza_id, stamp)

    def _set_room_cursor(self, room: str, stanza_id: str, stamp: float) -> None:
        self.db.execute(
            "INSERT INTO room_state (room, last_stanza_id, last_stamp) VALUES (?, ?, ?) "
            "ON CONFLICT (room) DO UPDATE SET last_stanza_id = excluded.last_stanza_id, "
            "last_stamp = excluded.last_stamp",
            (room, stanza_id, stamp),
        )

    def set_room_mam(self, room: str, mam: bool) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO room_state (room, mam) VALUES (?, ?) "
                "ON CONFLICT (room) DO UPDATE SET mam = excluded.mam",
                (room, int(mam)),
            )

    # -- delivery ------------------------------------------------------------------------------

    def cursors(self) -> dict[tuple[str, str], int]:
        return {(c, r): s for c, r, s in self.db.execute("SELECT client, room, seq FROM cursor")}

    def offline_since(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT client, offline_since FROM client_seen WHERE offline_since IS NOT NULL"))

    def receipt_clients(self) -> set[str]:
        return {c for (c,) in self.db.execute("SELECT client FROM client_seen WHERE receipts")}

    def set_answers_receipts(self, client: str, answers: bool) -> None:
        self._set_client_seen(client, "receipts", int(answers))

    def set_offline_since(self, client: str, seq: int | None) -> None:
        self._set_client_seen(client, "offline_since", seq)

    def _set_client_seen(self, client: str, column: str, value: int | None) -> None:
        """One column of a client's client_seen row (the others kept)."""
        assert column in ("receipts", "offline_since")
        with self._transaction():
            self.db.execute(
                f"INSERT INTO client_seen (client, {column}) VALUES (?, ?) "
                f"ON CONFLICT (client) DO UPDATE SET {column} = excluded.{column}",
                (client, value),
            )

    def relays_sent(self, rows: list[tuple[str, str, str, int, str | None, int | None]],
                    inbound: tuple[str, int] | None) -> None:
        """Relays about to go out: (relay_id, client, room, seq, sm_id, sm_seq); committed
        before they are sent, with the XEP-0198 session's inbound counter."""
        with self._transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO inflight (relay_id, client, room, seq, sm_id, sm_seq) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            known = self._cursor_keys()
            for _, client, room, seq, _, _ in rows:  # a client's first relay in a room
                if (client, room) not in known:
                    self.db.execute(
                        "INSERT OR IGNORE INTO cursor (client, room, seq) VALUES (?, ?, ?)", (client, room, seq - 1)
                    )
                    known.add((client, room))
            if inbound is not None:
                self.db.execute(
                    "INSERT INTO sm_session (one, sm_id, inbound) VALUES (1, ?, ?) ON CONFLICT (one) "
                    "DO UPDATE SET sm_id = excluded.sm_id, inbound = excluded.inbound",
                    inbound,
                )

    def relays_delivered(self, relay_ids: list[str]) -> None:
        """The server has these relays: move each client's cursor in their room past them."""
        with self._transaction():
            done: dict[tuple[str, str], int] = {}  # (client, room) -> the highest seq
            for start in range(0, len(relay_ids), DELETE_BATCH):
                batch = relay_ids[start : start + DELETE_BATCH]
                for client, room, seq in self.db.execute(
                    f"DELETE FROM inflight WHERE relay_id IN ({', '.join('?' * len(batch))}) "
                    "RETURNING client, room, seq",
                    batch,
                ).fetchall():
                    done[client, room] = max(seq, done.get((client, room), seq))
            self.db.executemany(
                "INSERT INTO cursor (client, room, seq) VALUES (?, ?, ?) ON CONFLICT (client, room) "
                "DO UPDATE SET seq = max(seq, excluded.seq)",
                [(client, room, seq) for (client, room), seq in done.items()],
            )
            self._cursor_keys().update(done)

    def _cursor_keys(self) -> set[tuple[str, str]]:
        """The (client, room) pairs that have a cursor row (read once; rows are never deleted)."""
        if self._cursor_rows is None:
            self._cursor_rows = {(c, r) for c, r in self.db.execute("SELECT client, room FROM cursor")}
        return self._cursor_rows

    def rewind_cursor(self, client: str, room: str, seq: int) -> None:
        """Move a client's cursor in a room back to ``seq`` (a relay bounced): never forward."""
        with self._transaction():
            self.db.execute(
                "INSERT INTO cursor (client, room, seq) VALUES (?, ?, ?) ON CONFLICT (client, room) "
                "DO UPDATE SET seq = min(seq, excluded.seq)",
                (client, room, seq),
            )
            self._cursor_keys().add((client, room))

    def relays_lost(self, relay_ids: list[str]) -> None:
        with self._transaction():
            self.db.executemany("DELETE FROM inflight WHERE relay_id = ?", [(r,) for r in relay_ids])

    def inflight(self) -> list[tuple[str, str, str, int, str | None, int | None, bool]]:
        """(relay_id, client, room, seq, sm_id, sm_seq, acked by the server)."""
        return [(*row[:6], bool(row[6])) for row in self.db.execute(
            "SELECT relay_id, client, room, seq, sm_id, sm_seq, acked FROM inflight"
        )]

    def relays_acked(self, relay_ids: list[str]) -> None:
        """The server has these relays; their receipts are due (they stay in flight)."""
        with self._transaction():
            self.db.executemany("UPDATE inflight SET acked = 1 WHERE relay_id = ?", [(r,) for r in relay_ids])

    def sm_session(self) -> tuple[str, int] | None:
        row = self.db.execute("SELECT sm_id, inbound FROM sm_session").fetchone()
        return (row[0], row[1]) if row else None

    def forget_sm_session(self) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM sm_session")

    # -- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def grouped(self) -> Iterator[None]:
        """Writes made inside are committed together, once, at the end (one WAL write
        instead of one per call).  The caller must not let anything written inside reach
        the network before the end: the app groups what it does between two awaits."""
        self._grouping = True
        try:
            yield
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._cursor_rows = None  # it may name rows rolled back
            raise
        finally:
            self._grouping = False
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._grouping:  # committed by grouped(); each call still all or nothing
            if not self.db.in_transaction:
                self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("SAVEPOINT call")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK TO call")
                self.db.execute("RELEASE call")
                self._cursor_rows = None  # it may name rows rolled back
                raise
            self.db.execute("RELEASE call")
            return
        if self.db.in_transaction:  # nested: part of the caller's transaction
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            self._cursor_rows = None  # it may name rows rolled back
            raise
        self.db.execute("COMMIT")


class AckMark:
    """The XEP-0198 count of received stanzas we last acknowledged, and its session's id:
    a small file beside the store, rewritten in place before every acknowledgement goes out.

    After a crash, the start-up probe must quote the server a count it will accept:
    Prosody refuses a resumption whose count is below what we already acknowledged, and
    then closes the stream without saying how many of our stanzas it had.  The count saved
    with the relays in the store lags behind (the stream acknowledges what arrives after
    the last relay, often several times a second); committing it to SQLite before every
    acknowledgement would cost more than the relay.  One ``pwrite`` of a few bytes costs
    a microsecond and survives the process being killed (the page cache has it).
    """

    SIZE = 256  # "<count> <session id>", padded with spaces: one write, in place

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._last: tuple[str, int] | None = None

    def read(self) -> tuple[str, int] | None:
        """(session id, count) as last written, or None (no file, or not ours)."""
        try:
            text = self.path.read_bytes()[: self.SIZE].decode("ascii")
            count, sm_id = text.split()
            if not sm_id or not count.isdigit():
                return None
            return sm_id, int(count) & 0xFFFFFFFF
        except (OSError, ValueError):
            return None

    def write(self, sm_id: str, count: int) -> None:
        if self._last == (sm_id, count):
            return
        record = f"{count} {sm_id}".encode("ascii", "replace")
        if len(record) >= self.SIZE:  # no such session id in practice; never a wrong one
            record = b""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.pwrite(self._fd, record.ljust(self.SIZE), 0)
        self._last = (sm_id, count)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    seq: int
    room: str
    stanza_id: str | None
    nick: str | None
    private: bool
    stamp: float
    body: str | None
    subject: str | None
    text: str  # the relay's fallback body
    xml: str  # the original stanza, as it is forwarded
    key: str | None = None  # what de-duplicates it
