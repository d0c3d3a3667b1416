"""The state dir: private to its owner, and used by one daemon at a time.

Its files hold other people's messages and room passwords: the directory must be 0700
and minimix's files in it 0600, whatever the umask was when they were made.  Two daemons
on one state dir would log in with the same resource and replace each other's session
every second, and each would replay and empty the other's journal: :func:`lock` lets only
one run.  ``minimix doctor`` looks at the same things (:func:`loose_modes`) and touches
nothing.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from minimix.config import ConfigError, loose_mode

LOCK_FILENAME = "minimix.lock"
# What minimix keeps in the state dir (names, or the start of names: the store's WAL, shared
# memory, journal, and stores moved aside).  Only these are made private: the state dir may
# be a directory with other files in it.
OWN_FILES = ("minimix.sqlite3", "sm-acked", "status.json", LOCK_FILENAME)


class AlreadyRunning(Exception):
    """Another process holds the state dir's lock."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        super().__init__(f"another minimix is running with this state dir (pid {pid or 'unknown'}): {state_dir}")
        self.state_dir = state_dir
        self.pid = pid


def loose_modes(state_dir: Path) -> list[tuple[Path, int, bool]]:
    """The state dir and minimix's files in it that group or others may use: (path, its
    permission bits, whether it is ours to change)."""
    found = []
    paths = [state_dir, *(p for p in _entries(state_dir) if p.name.startswith(OWN_FILES))]
    for path in paths:
        try:  # the state dir as configured (a link to it is followed); links in it are not ours
            info = path.stat() if path == state_dir else path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            continue
        if (mode := loose_mode(info.st_mode)) is not None:
            found.append((path, mode, info.st_uid == os.geteuid()))
    return found


def _entries(state_dir: Path) -> list[Path]:
    try:
        return sorted(state_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def make_private(state_dir: Path) -> list[tuple[Path, int]]:
    """Take group's and others' access away from the state dir and minimix's files in it
    (what was changed: path, old mode).  Raises ConfigError, with the command that fixes it,
    for one that is not ours to change."""
    changed = []
    for path, mode, ours in loose_modes(state_dir):
        if not ours:
            raise ConfigError(
                f"{path}: readable by others (mode {mode:o}) and not yours to change; "
                f"its owner can run: chmod {700 if path == state_dir else 600} {path}")
        path.chmod(mode & 0o700)
        changed.append((path, mode))
    return changed


def lock(state_dir: Path) -> int:
    """Take the state dir's lock for as long as the process lives (the file descriptor it
    returns stays open; the kernel lets go when the process ends, however it ends).  Raises
    AlreadyRunning, naming the holder's pid, when another process has it."""
    path = state_dir / LOCK_FILENAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise AlreadyRunning(state_dir, int(holder) if holder.isdigit() else None) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd

