"""The state dir: made private whatever the umask was, refused when it is not ours to fix,
and locked by one daemon at a time (the lock held by a real second process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minimix import statedir
from minimix.config import ConfigError
from minimix.statedir import AlreadyRunning, lock, loose_modes, make_private

DAEMON = str(Path(__file__).resolve().parent.parent / "daemon")
NOBODY = 65534


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def made_under_umask_022(tmp_path: Path) -> Path:
    """A state dir as minimix before this check left it: 0755, its store world-readable."""
    state = tmp_path / "state"
    state.mkdir()
    for name in ("minimix.sqlite3", "minimix.sqlite3-wal", "minimix.sqlite3-shm", "minimix.sqlite3.journal",
                 "sm-acked", "status.json", "notes.txt"):
        (state / name).write_text("x")
    return state


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_state_dir_made_under_umask_022_is_made_private(tmp_path, umask_022):
    state = made_under_umask_022(tmp_path)
    assert mode(state) == 0o755 and mode(state / "minimix.sqlite3") == 0o644
    changed = make_private(state)
    assert mode(state) == 0o700
    for name in ("minimix.sqlite3", "minimix.sqlite3-wal", "minimix.sqlite3-shm", "minimix.sqlite3.journal",
                 "sm-acked", "status.json"):
        assert mode(state / name) == 0o600, name
    assert mode(state / "notes.txt") == 0o644  # not minimix's: left alone
    assert (state, 0o755) in changed and loose_modes(state) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_state_dir_readable_by_others_and_not_ours_is_refused_with_the_fix(tmp_path, umask_022):
    state = made_under_umask_022(tmp_path)
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=rf"readable by others \(mode 755\) and not yours .* chmod 700 {state}"):
        make_private(state)
    assert mode(state) == 0o755


def test_a_private_state_dir_is_left_as_it_is(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "minimix.sqlite3").touch(mode=0o600)
    assert make_private(state) == [] and loose_modes(state) == []


HOLD = """
import sys
from pathlib import Path
sys.path.insert(0, {daemon!r})
from minimix.statedir import lock
lock(Path({state!r}))
print("locked", flush=True)
sys.stdin.read()  # held until the test closes our stdin
"""


def test_a_second_lock_on_a_state_dir_names_the_holder_and_the_first_is_kept(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(daemon=DAEMON, state=str(state))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(AlreadyRunning, match=rf"another minimix is running with this state dir \(pid {holder.pid}\)"):
            lock(state)
        assert (state / statedir.LOCK_FILENAME).read_text() == f"{holder.pid}\n"  # not overwritten
    finally:
        holder.stdin.close()
        holder.wait(10)
    fd = lock(state)  # the holder's end let go of it
    assert (state / statedir.LOCK_FILENAME).read_text() == f"{os.getpid()}\n"
    assert mode(state / statedir.LOCK_FILENAME) == 0o600
    os.close(fd)


def test_a_state_dir_reached_through_a_link_is_made_private_and_links_in_it_are_left_alone(tmp_path, umask_022):
    real = made_under_umask_022(tmp_path)
    (tmp_path / "elsewhere").write_text("not minimix's")
    (real / "status.json").unlink()
    (real / "status.json").symlink_to(tmp_path / "elsewhere")
    link = tmp_path / "link"
    link.symlink_to(real)
    make_private(link)
    assert mode(real) == 0o700 and mode(real / "minimix.sqlite3") == 0o600
    assert mode(tmp_path / "elsewhere") == 0o644
