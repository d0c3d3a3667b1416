"""The store never throws data away: faults at open, at commit and at replay, injected.

Real faults where SQLite can make them (a lock another connection holds, a database grown
to its ``max_page_count``: SQLITE_FULL as on a full disk, a schema from a newer minimix, a
damaged file); an I/O error through a connection whose ``execute`` fails on cue.  Each
test names what the store did before: moved a healthy store aside and deleted its WAL and
journal, skipped a group whose commit failed, discarded a journal it could not replay.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from minimix.core.relay import ClientSettings, Mode
from minimix.store import FILENAME, Store, StoreError
from minimix.store import database as store_module

KEYWORDS = tuple(f"keyword-{i:05d}" for i in range(4000))  # ~60 KB: a write that needs new pages


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(store_module, "RETRY_DELAYS_S", (0.0, 0.0))
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.1)


def files(path):
    """The store's files and their bytes (what must survive a refusal untouched); not the
    shared memory (-shm): SQLite's index of the WAL, rebuilt by any connection."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file() and p.suffix != ".sqlite3-shm"}


def with_everything(path):
    """A store with a setting committed, another in its WAL and a group only in its journal,
    left as a SIGKILL leaves it (the connection not closed: the WAL stays)."""
    store = Store(path)
    store.save_client("laptop", ClientSettings(Mode.ALL))
    with store.grouped(journaled=True):
        store.save_client("phone", ClientSettings(Mode.MENTIONS))
    assert path.with_name(FILENAME + "-wal").stat().st_size > 0
    return store


class Faulty(sqlite3.Connection):
    """A connection whose statements fail with an SQLite error while ``fail(sql)`` says so."""

    fail = staticmethod(lambda sql: False)
    code = sqlite3.SQLITE_IOERR_WRITE, "SQLITE_IOERR_WRITE", "disk I/O error"

    def execute(self, sql, *args):
        if type(self).fail(sql):
            code, name, text = self.code
            error = sqlite3.OperationalError(text)
            error.sqlite_errorcode, error.sqlite_errorname = code, name
            raise error
        return super().execute(sql, *args)


@pytest.fixture
def faulty(monkeypatch):
    """Stores opened from here on use a Faulty connection; returns its class to set ``fail``."""
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: connect(*a, factory=Faulty, **kw))
    monkeypatch.setattr(Faulty, "fail", staticmethod(lambda sql: False))
    return Faulty


# -- at open: only real corruption moves the store aside -------------------------------------------


def test_a_store_locked_by_another_program_is_refused_and_left_as_it_is(tmp_path):
    path = tmp_path / FILENAME
    with_everything(path).db.close()  # (its WAL checkpointed: an exclusive lock needs that)
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    before = files(path)
    with pytest.raises(StoreError, match="database is locked") as refused:
        Store(path)
    assert refused.value.transient  # a later start may work
    assert files(path) == before  # nothing moved aside, WAL and journal kept
    holder.rollback()
    holder.close()
    store = Store(path)
    assert set(store.load_clients()) == {"laptop", "phone"}  # the journal's group replayed


def test_a_store_written_by_a_newer_minimix_is_refused_and_left_as_it_is(tmp_path):
    path = tmp_path / FILENAME
    store = with_everything(path)
    store.db.execute(f"PRAGMA user_version = {len(store_module.MIGRATIONS) + 1}")
    before = files(path)
    with pytest.raises(StoreError, match="newer than this minimix") as refused:
        Store(path)
    assert not refused.value.transient  # a restart cannot help: systemd must not loop
    assert files(path) == before


def test_a_store_that_cannot_be_opened_is_refused_not_moved(tmp_path):
    path = tmp_path / FILENAME
    path.mkdir()  # SQLITE_CANTOPEN, as for a file the daemon may not open
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(path)
    assert path.is_dir() and [p.name for p in tmp_path.iterdir()] == [FILENAME]


def test_an_io_error_at_open_is_refused_not_taken_for_corruption(tmp_path, faulty):
    path = tmp_path / FILENAME
    with_everything(path)
    before = files(path)
    faulty.fail = staticmethod(lambda sql: "quick_check" in sql)
    with pytest.raises(StoreError, match="disk I/O error") as refused:
        Store(path)
    assert refused.value.transient
    assert files(path) == before


@pytest.mark.parametrize("damage", ["not a database", "damaged pages"])
def test_a_corrupt_store_is_moved_aside_with_its_wal_and_journal(tmp_path, damage):
    path = tmp_path / FILENAME
    store = with_everything(path)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the pages in the file, to damage them
    store.save_client("tablet", ClientSettings(Mode.OFF))  # ... and one in the WAL again
    journal = path.with_name(FILENAME + ".journal").read_bytes()
    wal = path.with_name(FILENAME + "-wal").read_bytes()
    good = path.read_bytes()
    bad = b"garbage!" * (len(good) // 8) if damage == "not a database" else good[:4096] + b"\xff" * (len(good) - 4096)
    path.write_bytes(bad)
    resets = []
    fresh = Store(path, on_reset=lambda reason, moved: resets.append(moved))
    ((moved),) = resets
    assert fresh.load_clients() == {}
    assert moved.read_bytes() == bad  # as it was, for a post-mortem
    assert moved.with_name(moved.name + ".journal").read_bytes() == journal  # kept, beside it
    assert moved.with_name(moved.name + "-wal").read_bytes()[: len(wal)] == wal


# -- a commit that fails is tried again, never skipped ------------------------------------------------


def fill(store):
    """SQLite's SQLITE_FULL from here on, as on a full disk: the file may not grow."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")


def journal_seq(path):
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute("SELECT seq FROM journal_state").fetchone()[0]


def test_a_group_whose_commit_fails_is_kept_in_the_journal_and_nothing_commits_after_it(tmp_path):
    path = tmp_path / FILENAME
    store = Store(path)
    with store.grouped(journaled=True):
        store.save_client("laptop", ClientSettings(Mode.ALL))
    store.commit()
    with store.grouped(journaled=True):  # on record; its sends go out; then the disk is full
        store.save_client("phone", ClientSettings(Mode.MENTIONS, {}, KEYWORDS))
    fill(store)
    with pytest.raises(StoreError, match="full") as failed:
        store.commit()
    assert failed.value.transient and store.failed is failed.value
    assert journal_seq(path) == 1  # the failed group's seq was not committed
    store.db.execute("PRAGMA max_page_count = 1000000")  # room again: still nothing commits
    with pytest.raises(StoreError), store.grouped(journaled=True):
        store.save_client("tablet", ClientSettings(Mode.OFF))
    with pytest.raises(StoreError):
        store.commit()
    assert journal_seq(path) == 1
    store.close()  # as at the exit: the journal is not emptied
    restarted = Store(path)
    assert restarted.replayed == 1
    assert restarted.load_clients()["phone"].keywords == KEYWORDS


def test_a_commit_that_fails_once_is_tried_again_from_its_record(tmp_path, faulty):
    path = tmp_path / FILENAME
    store = Store(path)
    failures = iter([True])
    faulty.fail = staticmethod(lambda sql: sql == "COMMIT" and next(failures, False))
    with store.grouped(journaled=True):
        store.save_client("phone", ClientSettings(Mode.ALL))
        store.set_room_cursor("r@muc", "id-1", 1.0)
    store.commit()
    assert store.failed is None and journal_seq(path) == 1
    other = sqlite3.connect(str(path))
    assert other.execute("SELECT count(*) FROM client").fetchone()[0] == 1
    assert other.execute("SELECT count(*) FROM room_state").fetchone()[0] == 1


def test_disk_full_for_the_journal_and_sqlite_is_a_store_error_not_a_crash(tmp_path, monkeypatch):
    """Nothing of the group is on record: the caller must not send what depends on it."""
    path = tmp_path / FILENAME
    store = Store(path)

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.journal, "append", full)
    fill(store)
    with pytest.raises(StoreError, match="full") as failed, store.grouped(journaled=True):
        store.save_client("phone", ClientSettings(Mode.MENTIONS, {}, KEYWORDS))
    assert failed.value.transient and store.failed is failed.value


# -- replay: never skip a group, never discard the journal ------------------------------------------


def test_a_group_that_cannot_be_replayed_stops_the_start_and_the_journal_is_kept(tmp_path, faulty):
    path = tmp_path / FILENAME
    store = Store(path)
    for resource in ("phone", "laptop"):
        with store.grouped(journaled=True):
            store.save_client(resource, ClientSettings(Mode.ALL))
    store.db.close()  # killed before the last commit
    journal = path.with_name(FILENAME + ".journal")
    before = journal.read_bytes()
    faulty.fail = staticmethod(lambda sql: sql.startswith("INSERT INTO client "))
    with pytest.raises(StoreError, match="cannot replay group 2") as refused:
        Store(path)
    assert refused.value.transient
    assert journal.read_bytes() == before
    faulty.fail = staticmethod(lambda sql: False)
    assert set(Store(path).load_clients()) == {"phone", "laptop"}


def test_a_journal_that_cannot_be_read_stops_the_start(tmp_path):
    path = tmp_path / FILENAME
    path.with_name(FILENAME + ".journal").mkdir()  # not a file: reading it fails
    with pytest.raises(StoreError, match="cannot read the journal") as refused:
        Store(path)
    assert not refused.value.transient
    assert path.with_name(FILENAME + ".journal").is_dir()


# -- the journal is emptied only once SQLite has its groups on disk -------------------------------


def test_the_journal_is_emptied_only_after_a_checkpoint_has_synced_everything(tmp_path, monkeypatch):
    """With synchronous=NORMAL a commit is not synced; only a checkpoint syncs the WAL.
    A reader in the way of the checkpoint keeps the journal until one completes."""
    monkeypatch.setattr(store_module, "JOURNAL_MAX", 0)
    path = tmp_path / FILENAME
    store = Store(path)
    journal = path.with_name(FILENAME + ".journal")
    reader = sqlite3.connect(str(path), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM client").fetchone()  # holds a snapshot: the WAL stays
    with store.grouped(journaled=True):
        store.save_client("phone", ClientSettings(Mode.ALL))
    store.commit()
    assert journal.stat().st_size > 0
    reader.execute("COMMIT")
    with store.grouped(journaled=True):
        store.save_client("laptop", ClientSettings(Mode.ALL))
    store.commit()
    assert journal.stat().st_size == 0
    busy, frames, copied = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames == copied  # everything the journal had is in the database file

