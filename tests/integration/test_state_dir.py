"""The state dir against a real Prosody: one daemon per state dir, and private files
whatever the umask.

Before: a second ``minimix run`` with the same config logged in with the same resource,
and the two replaced each other's session every second for as long as both ran, while
the second replayed and emptied the first's journal; under umask 022 the store, its WAL
and shared memory were world-readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from harness import DaemonProcess
from harness.relays import post, wait_text
from harness.store import state_dir

NICK = "Ally"
EX_IOERR, EX_TEMPFAIL, EX_CONFIG = 74, 75, 78


def start_in_room(user, room: str):
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"relay": {"clients": {"laptop": "all"}}})
    user.wait_joined(room, NICK)
    return d


def test_a_second_daemon_on_the_same_state_dir_exits_at_once_and_the_first_is_undisturbed(user, tmp_path):
    room = user.room(prefix="kitchen")
    laptop = user.other("laptop")
    first = start_in_room(user, room)
    post(user, room, ["before the second"])
    wait_text(user, laptop, "before the second")
    journal = state_dir(first) / "minimix.sqlite3.journal"
    kept = journal.read_bytes()
    assert kept  # the first daemon's groups since its start
    mark = len(first.lines)

    second = DaemonProcess(first.config_file, tmp_path / "second.log").start()  # the same config
    try:
        code = second.wait(timeout=15)  # at once: it never gets near the server
    finally:
        second.stop()
    assert code == EX_TEMPFAIL, second.output()
    (line,) = second.grep(r"another minimix is running with this state dir")
    assert f"pid={first.pid}" in line, line
    assert not second.grep(r"starting|session established"), second.output()

    assert journal.read_bytes()[: len(kept)] == kept  # neither replayed nor emptied by the second
    post(user, room, ["after the second"])
    wait_text(user, laptop, "after the second")
    assert user.daemon_nick(room) == NICK  # still joined, as bob sees it
    assert first.running
    assert not first.grep(r"connection lost|session lost|Replaced|conflict", since=mark), first.tail()


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_start_under_umask_022_leaves_every_file_private(user):
    room = user.room(prefix="kitchen")
    laptop = user.other("laptop")
    old = os.umask(0o022)  # the daemon inherits it; the fixture's state dir is made 0755
    try:
        d = start_in_room(user, room)
    finally:
        os.umask(old)
    post(user, room, ["on the record"])
    wait_text(user, laptop, "on the record")
    state = state_dir(d)
    files = {p.name: mode(p) for p in state.iterdir()}
    assert {"minimix.sqlite3", "minimix.sqlite3-wal", "minimix.sqlite3-shm", "minimix.sqlite3.journal",
            "minimix.lock"} <= set(files), files
    assert mode(state) == 0o700
    assert {name: m for name, m in files.items() if m != 0o600} == {}
    assert d.grep(r"was readable by others: made private .*mode=755")


def store_kept(state) -> tuple:
    """What must survive a refused start: the store's files by name (none moved aside), its
    journal's bytes, its schema version and every row (SQLite may checkpoint its WAL)."""
    store = state / "minimix.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        rows = list(db.iterdump()), db.execute("PRAGMA user_version").fetchone()
    names = sorted(p.name for p in state.iterdir() if p.name.startswith("minimix.sqlite3") and "-" not in p.name)
    return names, (state / "minimix.sqlite3.journal").read_bytes(), rows


@pytest.mark.parametrize(("cause", "code", "said"), [
    ("written by a newer minimix", EX_CONFIG, "newer than this minimix"),
    ("locked by another program", EX_IOERR, "database is locked"),
])
def test_a_store_that_cannot_be_used_refuses_the_start_and_is_left_as_it_is(user, cause, code, said):
    room = user.room(prefix="kitchen")
    d = start_in_room(user, room)
    assert d.stop() == 0
    state = state_dir(d)
    db = sqlite3.connect(str(state / "minimix.sqlite3"), isolation_level=None)
    if cause == "written by a newer minimix":
        db.execute("PRAGMA user_version = 999")
    before = store_kept(state)
    if cause == "locked by another program":
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
    mark = len(d.lines)
    d.start()
    assert d.wait() == code, d.tail()
    (line,) = d.grep(r"the store cannot be used", since=mark)
    assert said in line, line
    assert not d.grep(r"session established|Traceback", since=mark), d.tail()
    db.close()
    assert store_kept(state) == before  # nothing moved aside, nothing deleted


def test_the_doctor_runs_next_to_the_daemon_on_its_state_dir_and_finds_it_private(user):
    """The doctor takes no lock and opens no store: it checks the running daemon's state dir."""
    room = user.room(prefix="kitchen")
    d = start_in_room(user, room)
    mark = len(d.lines)
    run = subprocess.run([sys.executable, "-m", "minimix", "doctor", "--json", "--config", str(d.config_file)],
                         capture_output=True, text=True, timeout=90, check=False,
                         env={k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY",
                                                                                "STATE_DIRECTORY")})
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {c["check"]: c for c in json.loads(run.stdout)["checks"]}
    assert rows["state dir"]["status"] == "ok" and "private" in rows["state dir"]["detail"], rows["state dir"]
    assert rows["config file"]["status"] == "ok", rows["config file"]
    user.settle()
    assert d.running and user.daemon_nick(room) == NICK
    assert not d.grep(r"session established|connection lost", since=mark), d.tail()
