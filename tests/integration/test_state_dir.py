"""The state dir against a real Prosody: one daemon per state dir, and private files
whatever the umask.

Before: a second ``minimix run`` with the same config logged in with the same resource,
and the two replaced each other's session every second for as long as both ran, while
the second replayed and emptied the first's journal; under umask 022 the store, its WAL
and shared memory were world-readable.
"""

from __future__ import annotations

import os
import stat

from harness import DaemonProcess
from harness.relays import post, wait_text
from harness.store import state_dir

NICK = "Ally"
EX_TEMPFAIL = 75


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
