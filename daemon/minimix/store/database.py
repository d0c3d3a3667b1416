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
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from minimix.store.errors import StoreError, _IntegrityCheckFailed, _is_corrupt, store_error
from minimix.store.files import Journal, Statement
from minimix.store.schema import MIGRATIONS

FILENAME = "minimix.sqlite3"
ACK_MARK_FILENAME = "sm-acked"
JOURNAL_MAX = 1 << 20  # bytes: the journal is emptied after a commit once it holds more
BUSY_TIMEOUT_S = 5.0  # how long a statement waits for a lock another program holds on the file
RETRY_DELAYS_S = (0.1, 0.5, 2.0)  # before each new try of a group that failed to commit
# The files of one store: the WAL and shared memory belong to the database, the journal's
# groups are writes to it.  Moved together; the WAL first (see Store._move_aside).
COMPANIONS = (".journal", "-wal", "-shm")


class Database:
    """The SQLite file with its journal: opened (or moved aside, if corrupt), migrated,
    replayed; written in groups of calls, each on record in the journal before what
    depends on it goes out, and committed after (:meth:`grouped`, :meth:`commit`).  What
    is stored is :class:`minimix.store.Store`'s."""

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
