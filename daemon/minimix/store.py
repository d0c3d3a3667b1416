"""The store: one SQLite file in the state dir, written only by the app's loop.

WAL mode, the schema version in ``PRAGMA user_version``, migrations as numbered SQL.

Beside it, the journal (``minimix.sqlite3.journal``): what the app writes while handling
a batch of events is appended there as one record before anything the batch sends goes
out, and committed to SQLite after.  The next start replays what SQLite lacks.

Nothing is thrown away because of an error that is not identified (docs/store.md):

- A store that is corrupt (SQLite says SQLITE_CORRUPT or SQLITE_NOTADB, or its integrity
  check fails) is moved aside with its WAL, shared memory and journal, and a fresh one is
  made.  Any other failure to open it (locked by another program, an I/O error, a full
  disk, no permission, a schema newer than this minimix) is a :class:`StoreError`: the
  daemon refuses to start and says why; the files stay as they are.
- A group that cannot be committed is tried again (``RETRY_DELAYS_S``) from its record;
  if it still fails, the store has failed (``failed``, a :class:`StoreError`) and refuses
  every further group and commit, so the journal's seq in SQLite never moves past it and
  the journal is kept: the next start replays it.  A group that cannot be replayed stops
  the start the same way, the journal kept whole.
- The journal is emptied only once what it holds is on disk in SQLite (a checkpoint).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import marshal
import os
import sqlite3
import struct
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from minimix.core.events import Stored
from minimix.core.ledger import (
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
    Settled,
)
from minimix.core.relay import ClientSettings, Mode

FILENAME = "minimix.sqlite3"
ACK_MARK_FILENAME = "sm-acked"
JOURNAL_MAX = 1 << 20  # bytes: the journal is emptied after a commit once it holds more
BUSY_TIMEOUT_S = 5.0  # how long a statement waits for a lock another program holds on the file
RETRY_DELAYS_S = (0.1, 0.5, 2.0)  # before each new try of a group that failed to commit
# The files of one store: the WAL and shared memory belong to the database, the journal's
# groups are writes to it.  Moved together; the WAL first (see Store._move_aside).
COMPANIONS = (".journal", "-wal", "-shm")

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
    # 6: the last group of the journal whose writes are in the database (see Store.grouped)
    """
    CREATE TABLE journal_state (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq INTEGER NOT NULL
    )
    """,
    # 7: times in the future are now.  An older minimix took an occupant's own <delay/> for
    # a message's time: a line dated 2999 was never pruned, and a room cursor in 2999
    # caught up nothing.
    """
    UPDATE message SET stamp = CAST(strftime('%s', 'now') AS REAL)
        WHERE stamp > CAST(strftime('%s', 'now') AS REAL);
    UPDATE room_state SET last_stamp = CAST(strftime('%s', 'now') AS REAL)
        WHERE last_stamp > CAST(strftime('%s', 'now') AS REAL)
    """,
    # 8: since when each client is away (see Ledger.expire); those away before this
    # version count from now
    """
    ALTER TABLE client_seen ADD COLUMN away_since REAL;
    UPDATE client_seen SET away_since = CAST(strftime('%s', 'now') AS REAL) WHERE offline_since IS NOT NULL
    """,
]


Statement = tuple[str, Any, bool]  # (sql, parameters, executemany)


class StoreError(Exception):
    """The store cannot be used; nothing was moved aside or deleted.  ``transient``: the
    cause may pass by itself (a lock another program holds, an I/O error, a full disk), so
    a later start may work; otherwise someone must act first, as the message says."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


# SQLite's primary result codes of a cause that may pass by itself (the others: a file
# that cannot be opened or written for good, a statement that can never succeed).
_TRANSIENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
              sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_INTERRUPT}
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# ... and the errno values of the same kind, for the journal's file
_TRANSIENT_ERRNO = {errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR, errno.ENOMEM}


class _IntegrityCheckFailed(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found the file damaged (it may not raise by itself)."""


def _result_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # extended codes: the low byte


def _is_corrupt(exc: BaseException) -> bool:
    """Whether SQLite itself says the file is damaged: the one reason to move it aside."""
    return isinstance(exc, _IntegrityCheckFailed) or _result_code(exc) in _CORRUPT


def store_error(exc: BaseException, doing: str) -> StoreError:
    """``exc`` (an :class:`sqlite3.Error` or :class:`OSError`) as a :class:`StoreError`."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError):
        return StoreError(f"{doing}: {exc}", transient=exc.errno in _TRANSIENT_ERRNO)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return StoreError(f"{doing}: {exc} ({name})", transient=_result_code(exc) in _TRANSIENT)


class Journal:
    """The store's groups of writes, each appended here before what depends on it goes out
    (one ``write`` of a few KB: the page cache has it when the process is killed), and
    committed to SQLite after (see :meth:`Store.grouped`).  A record is its length, its
    CRC-32 and ``(seq, statements)`` in :mod:`marshal`'s format (2 us for a relay's group,
    where JSON takes 11); a torn last record (killed while writing it) fails its CRC and
    is ignored: nothing that depended on it went out.  The file is the daemon's own, in
    its private state dir, and what it reads back is checked to be statements."""

    HEADER = struct.Struct("<II")

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.size = 0

    def append(self, seq: int, statements: list[Statement]) -> None:
        payload = marshal.dumps((seq, statements))
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self.size = os.fstat(self._fd).st_size
        record = self.HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        written = os.write(self._fd, record)
        self.size += written
        if written != len(record):  # a short write (a full disk): not on record
            raise OSError(f"journal: {written} of {len(record)} bytes written")

    def records(self) -> Iterator[tuple[int, list[Statement]]]:
        """The whole records, in order; stops at the first that is not (a torn tail)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        at, header = 0, self.HEADER.size
        while at + header <= len(data):
            length, crc = self.HEADER.unpack_from(data, at)
            payload = data[at + header : at + header + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            try:
                seq, statements = marshal.loads(payload)
                checked = [(sql, params, bool(many)) for sql, params, many in statements
                           if isinstance(sql, str) and isinstance(params, tuple | list)]
            except (EOFError, ValueError, TypeError):
                return
            if not isinstance(seq, int) or len(checked) != len(statements):
                return
            yield seq, checked
            at += header + length

    def clear(self) -> None:
        if self._fd is None:
            with contextlib.suppress(FileNotFoundError):
                os.truncate(self.path, 0)
        else:
            os.ftruncate(self._fd, 0)
        self.size = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Store:
    def __init__(self, path: Path | str, *, on_reset: Callable[[str, Path], None] | None = None) -> None:
        """Open (or create) the store at ``path`` (``":memory:"`` for tests), and bring into
        it what its journal holds that it does not (the writes of a run killed before it
        committed them): ``replayed`` says how many groups that was.

        ``on_reset(reason, moved_to)`` is called when a corrupt file was moved aside.
        Raises :class:`StoreError` when the store cannot be used (see the module's doc).
        """
        self.path = path
        self._grouping = False
        self._group: list[Statement] | None = None  # the writes of the group being made
        self._call: list[Statement] | None = None  # ... and of the call being made in it
        self._pending: tuple[int, list[Statement]] | None = None  # a journaled group not committed yet
        self._deferred: list[Statement] = []  # its writes not run yet (see _transaction)
        self._deferring = False
        self.failed: StoreError | None = None  # a group could not be committed: no group or commit more
        self.journal = None if str(path) == ":memory:" else Journal(f"{path}.journal")
        self.journal_error: str | None = None  # why the journal was given up (commits before sends then)
        try:
            self.db = self._open()
        except sqlite3.Error as exc:
            if str(path) == ":memory:" or not _is_corrupt(exc):
                raise store_error(exc, f"cannot open the store {path}") from None
            moved = self._move_aside()
            if on_reset is not None:
                on_reset(str(exc), moved)
            try:
                self.db = self._open()
            except sqlite3.Error as again:
                raise store_error(again, f"cannot make a new store {path}") from None
        self._journal_seq = 0
        try:
            self.replayed = self._replay()
        except BaseException as exc:
            self.db.close()
            if isinstance(exc, sqlite3.Error):
                raise store_error(exc, f"cannot read the store {path}") from None
            raise

    def _move_aside(self) -> Path:
        """Rename the corrupt store and its companions to ``<name>.corrupt-<time>...``, for a
        post-mortem (SQLite opens the moved file with its moved WAL).  The companions go
        first: a WAL or a journal left behind would be applied to the fresh store."""
        stamp = int(time.time())
        moved = Path(f"{self.path}.corrupt-{stamp}")
        while any(Path(f"{moved}{suffix}").exists() for suffix in ("", *COMPANIONS)):
            stamp += 1
            moved = Path(f"{self.path}.corrupt-{stamp}")
        for suffix in (*COMPANIONS, ""):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").rename(f"{moved}{suffix}")
        return moved

    def _replay(self) -> int:
        """Apply the journal's groups the database does not have yet; then empty it (once
        they are on disk).  A group that cannot be applied, or a journal that cannot be
        read, is a :class:`StoreError`: the journal is kept whole for the next try."""
        row = self.db.execute("SELECT seq FROM journal_state").fetchone()
        self._journal_seq = row[0] if row else 0
        if self.journal is None:
            return 0
        applied, replayed = self._journal_seq, 0
        try:
            records = list(self.journal.records())
        except OSError as exc:
            raise store_error(exc, f"cannot read the journal {self.journal.path}") from None
        for seq, statements in records:
            self._journal_seq = max(self._journal_seq, seq)
            if seq > applied:
                self._apply_retrying(seq, statements, f"cannot replay group {seq} of the journal {self.journal.path}")
                replayed += 1
        self._empty_journal()
        return replayed

    def _apply(self, seq: int | None, statements: list[Statement]) -> None:
        """One group's writes, from its record, in a transaction of their own."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params, many in statements:
                (self.db.executemany if many else self.db.execute)(sql, params)
            if seq is not None:
                self._set_journal_seq(seq)
            self.db.execute("COMMIT")
        except BaseException:
            self._abandon()
            raise

    def _apply_retrying(self, seq: int | None, statements: list[Statement], doing: str) -> None:
        """:meth:`_apply`, tried again after each of ``RETRY_DELAYS_S``; then ``failed``."""
        for delay in (0.0, *RETRY_DELAYS_S):
            time.sleep(delay)
            try:
                self._apply(seq, statements)
            except sqlite3.Error as exc:
                error = exc
            else:
                return
        self.failed = store_error(error, doing)
        raise self.failed

    def _empty_journal(self) -> None:
        """Empty the journal once SQLite has on disk all it holds.  With ``synchronous=NORMAL``
        a commit is in the WAL but not synced: a checkpoint syncs the WAL before it copies
        it, and the database after.  One that could not copy every frame (another program
        reading) leaves the journal for a later commit; so does an error."""
        assert self.journal is not None
        try:
            busy, frames, copied = self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return
        if not busy and frames == copied:
            self.journal.clear()

    def _set_journal_seq(self, seq: int) -> None:
        self.db.execute(
            "INSERT INTO journal_state (one, seq) VALUES (1, ?) ON CONFLICT (one) DO UPDATE SET seq = excluded.seq",
            (seq,),
        )

    def _exec(self, sql: str, params: Any = ()) -> sqlite3.Cursor | None:
        """A write.  In a journaled group it is recorded for the journal, and a call that only
        writes (``_transaction(writes_only=True)``) leaves it to run at :meth:`commit`: None."""
        if self._call is not None:
            self._call.append((sql, params, False))
            if self._deferring:
                return None
        return self.db.execute(sql, params)

    def _execmany(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        if self._call is not None:
            self._call.append((sql, rows, True))
            if self._deferring:
                return
        self.db.executemany(sql, rows)

    def _read(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._flush()  # what is recorded first: a read sees every write before it
        return self.db.execute(sql, params)

    def _flush(self) -> None:
        """Run the writes recorded and left for later, in the group's transaction."""
        if not self._deferred:
            return
        deferred, self._deferred = self._deferred, []
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
        for sql, params, many in deferred:
            (self.db.executemany if many else self.db.execute)(sql, params)

    def _open(self) -> sqlite3.Connection:
        # autocommit (explicit transactions)
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise _IntegrityCheckFailed(f"integrity check failed: {check}")
            self._migrate(db, self.path)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection, path: Path | str) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):  # a downgrade: this minimix cannot know what it would lose
            raise StoreError(
                f"the store {path} has schema version {version}, newer than this minimix knows "
                f"({len(MIGRATIONS)}): it was written by a newer minimix; run that again (the store "
                "is left as it is)", transient=False)
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
        """Commit what is pending and close; a failed store only closes (its journal kept)."""
        try:
            if self.failed is None:
                self.commit()
        finally:
            if self.journal is not None:
                self.journal.close()
            self.db.close()

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

    def keys_since(self, room: str, since: float) -> list[str]:
        """The de-duplication keys of a room's messages logged since ``since``."""
        return [
            key
            for (key,) in self._read(
                "SELECT key FROM message WHERE room = ? AND stamp >= ? AND key IS NOT NULL", (room, since)
            )
        ]

    def prune(self, before: float) -> int:
        """Forget messages logged before ``before``, but never the newest: the log's sequence
        goes on from it after a restart (a store pruned empty would start again at 1, below
        every client's cursor, and what came next would count as delivered)."""
        with self._transaction():
            return self._exec(
                "DELETE FROM message WHERE stamp < ? AND seq < (SELECT max(seq) FROM message)", (before,)
            ).rowcount

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
        away = list(self._read("SELECT client, offline_since, away_since FROM client_seen WHERE offline_since IS NOT NULL"))
        return LedgerState(
            last_seq=self._read("SELECT coalesce(max(seq), 0) FROM message").fetchone()[0],
            cursors={(c, r): s for c, r, s in self._read("SELECT client, room, seq FROM cursor")},
            away={c: seq for c, seq, _ in away},
            away_at={c: at for c, _, at in away if at is not None},
            flights=flights,
            receipts=frozenset(c for (c,) in self._read("SELECT client FROM client_seen WHERE receipts")),
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

    # -- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def grouped(self, *, journaled: bool = False) -> Iterator[None]:
        """Writes made inside are committed together, once (one WAL write instead of one
        per call).  The caller must not let anything written inside reach the network
        before that: the app groups what it does between two awaits.

        ``journaled``: the group is on record once it is appended to the journal, at the
        end; it is committed to SQLite only by :meth:`commit`, which the caller calls once
        what depends on the group has gone out.  The journal's append is what must come
        before the sends: a crash after it loses nothing (the next start replays the group
        into SQLite), and it is one ``write``, where SQLite would run each statement and
        then write every page they touched: 0.1 to 0.2 ms before each relay.  Calls that
        only write are not even run before then; a read runs what is recorded first.
        Without a journal (an in-memory store, or one given up after a write error), the
        group is committed at the end, as without ``journaled``.
        """
        self.commit()  # one group per transaction: a rollback takes no other with it
        self._grouping = True
        self._group = [] if journaled and self.journal is not None else None
        try:
            yield
        except BaseException:
            self._abandon()
            raise
        finally:
            self._grouping = False
            group, self._group = self._group, None
        if group:
            seq = self._journal_seq + 1
            try:
                assert self.journal is not None
                self.journal.append(seq, group)
            except (OSError, ValueError) as exc:  # not on record: commit it now, and from now on
                self.journal_error = f"{type(exc).__name__}: {exc}"
                self.journal = None
            else:
                self._journal_seq = seq
                self._pending = (seq, group)
                return
        self._commit_group(None, group, "cannot commit a group of writes (not in the journal)")

    def commit(self) -> None:
        """Commit the journaled group still pending, with the journal's seq it reached.  A
        failure is tried again from the group's record; if that fails too, the store has
        failed: :class:`StoreError`, raised here and by every later group or commit."""
        if self.failed is not None:
            raise self.failed
        if self._pending is None:
            return
        seq, group = self._pending
        assert self.journal is not None
        self._commit_group(seq, group, f"cannot commit group {seq} (kept in {self.journal.path})")
        self._pending = None
        if self.journal.size > JOURNAL_MAX:
            self._empty_journal()

    def _commit_group(self, seq: int | None, statements: list[Statement] | None, doing: str) -> None:
        """Commit the group in the making (its deferred writes, and the journal's ``seq``).
        On a failure it is rolled back and tried again from ``statements``; without them
        (a group not recorded) there is nothing to try again: ``failed``."""
        try:
            self._flush()
            if seq is not None:
                if not self.db.in_transaction:
                    self.db.execute("BEGIN IMMEDIATE")
                self._set_journal_seq(seq)
            if self.db.in_transaction:
                self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abandon()
            if not statements:
                self.failed = store_error(exc, doing)
                raise self.failed from None
            self._apply_retrying(seq, statements, doing)

    def _abandon(self) -> None:
        """Roll the group in the making back (what failed may have rolled it back already)."""
        self._deferred = []
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # a failing file: the retry says so
                self.db.execute("ROLLBACK")

    @contextlib.contextmanager
    def _transaction(self, *, writes_only: bool = False) -> Iterator[None]:
        """One call's writes, all or nothing.  ``writes_only``: the call reads nothing and
        needs no result, so in a journaled group its writes can wait for :meth:`commit`."""
        if self._grouping and writes_only and self._group is not None:
            self._call, self._deferring = [], True
            try:
                yield  # nothing is run: a failure leaves nothing to undo
            except BaseException:
                self._call, self._deferring = None, False
                raise
            call, self._call, self._deferring = self._call, None, False
            self._group += call
            self._deferred += call
            return
        if self._grouping:  # committed by grouped(); each call still all or nothing
            self._flush()
            if not self.db.in_transaction:
                self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("SAVEPOINT call")
            self._call = [] if self._group is not None else None
            try:
                yield
            except BaseException:
                self._call = None
                self.db.execute("ROLLBACK TO call")
                self.db.execute("RELEASE call")
                raise
            call, self._call = self._call, None
            self.db.execute("RELEASE call")
            if call and self._group is not None:
                self._group += call
            return
        if self.db.in_transaction and self._pending is None:  # nested: part of the caller's transaction
            yield
            return
        self.commit()  # a journaled group first: this one is committed at its end
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


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
    CursorsForgotten: ("DELETE FROM cursor WHERE client = ?", "DELETE FROM inflight WHERE client = ?"),
    ClientsForgotten: ("DELETE FROM cursor WHERE client = ?", "DELETE FROM inflight WHERE client = ?",
                       "DELETE FROM client_seen WHERE client = ?"),
}


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



# What the log keeps of one message, at most: its original (as a playback forwards it) and
# its body, subject and fallback text.  An occupant's message may be as large as his
# server lets through (Prosody 0.12 takes 256 KiB from a client, 512 KiB over s2s).  A
# playback relay carries the fallback text (escaped: up to 5 bytes a character) and the
# original in one stanza, which our own server must take from us (256 KiB on Prosody
# 0.12): with these bounds it is at most about 150 KiB.  The live relay still forwards the
# original whole.
KEPT_XML_MAX = 64 * 1024  # bytes of the original
KEPT_TEXT_MAX = 16 * 1024  # characters of the body, the subject, the fallback text
_REDUCED_TEXT_MAX = KEPT_XML_MAX // 16  # characters of each in a reduced original: both fit
_REDUCED_ID_MAX = 1024  # characters of its id (longer: left out; a sender's, of no use to a playback)


def kept(m: Logged) -> Logged:
    """``m`` as the log keeps it: within the bounds above.  An original over its bound is
    replaced by a reduced one, well-formed, with what a playback needs: who sent it
    (``from``), its ``id`` and ``type``, its body and subject (cut), and the room's
    stanza-id (a reply to it quotes that).  Its time is not in it: a playback's
    <forwarded/> carries it, as for any message."""
    xml = original = str(m.ref)
    if len(xml) > KEPT_XML_MAX // 4 and len(xml.encode("utf-8", "surrogatepass")) > KEPT_XML_MAX:
        xml = _reduced_original(m)
    text, body, subject = _cut(m.text, KEPT_TEXT_MAX), _cut(m.body, KEPT_TEXT_MAX), _cut(m.subject, KEPT_TEXT_MAX)
    if (text, body, subject, xml) == (m.text, m.body, m.subject, original) and isinstance(m.ref, str):
        return m
    return replace(m, text=text or "", body=body, subject=subject, ref=xml)


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters not kept]"


def _reduced_original(m: Logged) -> str:
    try:
        message_id = ET.fromstring(str(m.ref)).get("id")
    except ET.ParseError:  # (it was well-formed when it came: a bug of ours) kept without it
        message_id = None
    sender = f"{m.room}/{m.nick}" if m.nick else m.room
    attrs = f" from={quoteattr(sender)} type={quoteattr('chat' if m.private else 'groupchat')}"
    if message_id is not None and len(message_id) <= _REDUCED_ID_MAX:
        attrs += f" id={quoteattr(message_id)}"
    body, subject = _cut(m.body, _REDUCED_TEXT_MAX), _cut(m.subject, _REDUCED_TEXT_MAX)
    inner = f"<body>{escape(body)}</body>" if body is not None else ""
    if subject is not None:
        inner += f"<subject>{escape(subject)}</subject>"
    if m.stanza_id and not m.private:
        inner += f"<stanza-id xmlns='urn:xmpp:sid:0' by={quoteattr(m.room)} id={quoteattr(m.stanza_id)}/>"
    return f"<message xmlns='jabber:client'{attrs}>{inner}</message>"
