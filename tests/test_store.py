"""The store: settings survive reopening; a corrupt file is moved aside (other faults:
test_store_faults.py)."""

import sqlite3

import pytest

from minimix.core.ledger_records import CursorMoved, Flight, InFlight, LedgerState, Settled
from minimix.core.relay import ClientSettings, Mode
from minimix.store import FILENAME, Store


def test_client_settings_roundtrip(tmp_path):
    path = tmp_path / FILENAME
    store = Store(path)
    settings = ClientSettings(Mode.MENTIONS, {"a@muc": Mode.ALL, "b@muc": Mode.OFF}, ("deploy", "Zoë"))
    store.save_client("phone", settings)
    store.save_client("laptop", ClientSettings(None, {"a@muc": Mode.ALL}))
    store.save_client("phone", settings.with_mode(Mode.OFF, "a@muc"))
    store.close()
    loaded = Store(path).load_clients()
    assert loaded["phone"] == ClientSettings(Mode.MENTIONS, {"a@muc": Mode.OFF, "b@muc": Mode.OFF}, ("deploy", "Zoë"))
    assert loaded["laptop"] == ClientSettings(None, {"a@muc": Mode.ALL}, ())


def test_corrupt_store_is_moved_aside(tmp_path):
    path = tmp_path / FILENAME
    path.write_bytes(b"this is not a database" * 100)
    resets = []
    store = Store(path, on_reset=lambda reason, moved: resets.append((reason, moved)))
    assert store.load_clients() == {}
    (reason, moved), = resets
    assert moved.exists() and moved.name.startswith(FILENAME + ".corrupt-")
    store.save_client("phone", ClientSettings(Mode.ALL))
    assert Store(path).load_clients()["phone"].default is Mode.ALL


def test_memory_store():
    assert Store(":memory:").load_clients() == {}


def test_grouped_writes_commit_once_and_each_call_stays_all_or_nothing(tmp_path):
    """The app groups the writes of what it handles between two awaits into one commit;
    a call that fails inside the group leaves nothing behind, the others are kept."""
    store = Store(tmp_path / "s.sqlite3")
    other = sqlite3.connect(str(tmp_path / "s.sqlite3"))
    with store.grouped():
        store.set_room_cursor("r1@muc.example", "id-1", 1.0)
        with pytest.raises(RuntimeError), store._transaction():
            store.set_room_cursor("r2@muc.example", "id-2", 2.0)
            raise RuntimeError("boom")
        store.set_room_cursor("r3@muc.example", "id-3", 3.0)
        # not committed yet: another connection does not see it
        assert other.execute("SELECT count(*) FROM room_state").fetchone()[0] == 0
    rooms = {row[0] for row in other.execute("SELECT room FROM room_state")}
    assert rooms == {"r1@muc.example", "r3@muc.example"}
    with pytest.raises(ValueError), store.grouped():
        store.set_room_cursor("r4@muc.example", "id-4", 4.0)
        raise ValueError("the whole group fails")
    assert "r4@muc.example" not in {row[0] for row in other.execute("SELECT room FROM room_state")}
    store.close()






def test_changes_rolled_back_with_their_group_are_not_kept(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    with pytest.raises(RuntimeError), store.grouped():
        store.apply([CursorMoved("phone", "a@muc", 6), InFlight("r1", "phone", "a@muc", 7)])
        raise RuntimeError("boom")
    assert store.load() == LedgerState()
    store.close()


# -- the journal: a group on record before its sends, in SQLite after ----------------------------

KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {daemon!r})
from minimix.core.ledger_records import CursorMoved, InFlight, Logged
from minimix.store import Store
store = Store({path!r})
with store.grouped(journaled=True):
    store.apply([Logged(1, "r@muc", "s1", "bob", False, 1.0, "hi", None, "[r] bob: hi", "<message/>", "sid:s1",
                        ("s1", 1.0))])
    store.apply([CursorMoved("phone", "r@muc", 0), InFlight("mmx-1", "phone", "r@muc", 1, ("sm", 5))])
    store.record_stream("sm", 7)
    store.apply([CursorMoved("laptop", "r@muc", 0)])
# the relays would go out here; killed before the store commits the group to SQLite
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_after_journaling(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / FILENAME
    daemon = str(Path(__file__).resolve().parent.parent / "daemon")
    run = subprocess.run([sys.executable, "-c", KILLED_RUN.format(daemon=daemon, path=str(path))])
    assert run.returncode == -9
    return path


def test_a_journaled_group_killed_before_its_commit_is_replayed(tmp_path):
    path = killed_after_journaling(tmp_path)
    assert sqlite3.connect(str(path)).execute("SELECT count(*) FROM message").fetchone()[0] == 0  # not in SQLite
    store = Store(path)
    assert store.replayed == 1
    assert [m.body for m in store.messages_after({}, 0, 10)[0]] == ["hi"]
    state = store.load()
    assert state.flights == {"mmx-1": Flight("phone", "r@muc", 1, False, ("sm", 5))}
    assert store.sm_session() == ("sm", 7)
    assert state.cursors == {("phone", "r@muc"): 0, ("laptop", "r@muc"): 0}
    assert store.room_states()["r@muc"][0] == "s1"
    assert path.with_name(FILENAME + ".journal").stat().st_size == 0  # emptied once applied
    store.close()
    assert Store(path).replayed == 0


def test_a_group_in_sqlite_is_not_replayed_again(tmp_path):
    path = tmp_path / FILENAME
    store = Store(path)
    with store.grouped(journaled=True):
        store.apply([InFlight("mmx-1", "phone", "r@muc", 1)])
    store.commit()
    store.apply([Settled(("mmx-1",))])  # after the group: replaying it would bring the relay back
    store.db.close()  # as if killed: the journal still holds the group
    assert path.with_name(FILENAME + ".journal").stat().st_size > 0
    store = Store(path)
    assert store.replayed == 0 and store.load().flights == {}


def test_a_torn_record_is_ignored(tmp_path):
    path = killed_after_journaling(tmp_path)
    journal = path.with_name(FILENAME + ".journal")
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole[: len(whole) // 2])  # a second record, torn: killed while writing it
    assert Store(path).replayed == 1
    journal.write_bytes(whole[:-3])  # the only record, torn
    path.unlink()
    assert Store(path).replayed == 0


def test_a_journal_that_cannot_be_written_means_committing_at_once(tmp_path, monkeypatch):
    path = tmp_path / FILENAME
    store = Store(path)
    other = sqlite3.connect(str(path))

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.journal, "append", full)
    with store.grouped(journaled=True):
        store.set_room_cursor("r@muc", "id-1", 1.0)
    assert "No space left" in store.journal_error and store.journal is None
    assert other.execute("SELECT count(*) FROM room_state").fetchone()[0] == 1  # committed at the group's end
    with store.grouped(journaled=True):
        store.set_room_cursor("r2@muc", "id-2", 2.0)
    assert other.execute("SELECT count(*) FROM room_state").fetchone()[0] == 2


def test_a_moved_aside_store_takes_its_journal_with_it(tmp_path):
    path = killed_after_journaling(tmp_path)
    path.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        path.with_name(FILENAME + suffix).unlink(missing_ok=True)
    store = Store(path, on_reset=lambda reason, moved: None)
    assert store.replayed == 0 and store.messages_after({}, 0, 10)[0] == []
