"""A disk that fills up under a running daemon, for real: the state dir is a small tmpfs
(needs root to mount it), against Prosody.

The daemon keeps relaying while the journal or SQLite can still record what it does; once
neither can, it ends at once with 74 and says why (before: the exception escaped, and a
failed commit was skipped by the next one).  Room space again, the next start loses
nothing: each message said meanwhile reaches the opted-in client, once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess

import pytest

from harness import wait_until
from harness.relays import post, tally, texts, wait_text

NICK = "Ally"
EX_IOERR = 74
MAX_MESSAGES = 200


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 8 MB at tmp_path/state, unmounted afterwards."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(state)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False)


def fill(directory) -> None:
    """Write a file until the file system has no block left."""
    with open(directory / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC


def test_a_disk_that_fills_up_stops_the_daemon_and_the_next_start_loses_nothing(user, small_disk):
    room = user.room(prefix="pantry")
    laptop = user.other("laptop")
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"relay": {"clients": {"laptop": "all"}}}, state_dir=small_disk)
    user.wait_joined(room, NICK)
    post(user, room, ["before the disk filled up"])
    wait_text(user, laptop, "before the disk filled up")

    fill(small_disk)
    said = []
    while d.running and len(said) < MAX_MESSAGES:  # until the store can record nothing more
        said.append(f"while full {len(said):03d}")
        post(user, room, said[-1:])
    assert d.wait() == EX_IOERR, d.tail()
    (line,) = d.grep(r"the store cannot be used: stopping")
    assert "full" in line, line
    assert not d.grep(r"Traceback|internal error"), d.tail()

    (small_disk / "filler").unlink()
    mark = len(d.lines)
    d.start()
    d.wait_log(r"session established", since=mark)
    post(user, room, ["after the disk had room again"])
    wait_text(user, laptop, "after the disk had room again")
    expected = ["before the disk filled up", *said, "after the disk had room again"]
    wait_until(lambda: not tally(texts(user, laptop), expected).gaps,
               message=lambda: f"never relayed: {tally(texts(user, laptop), expected).gaps}")
    result = tally(texts(user, laptop), expected)
    assert not result.duplicates, result
