"""The status snapshot survives a power loss whole: its data is synced before the rename
that makes it the snapshot (a rename that reached the disk before the data would leave an
empty status.json)."""

from __future__ import annotations

import json
import os

from minimix import status


def test_the_snapshot_is_synced_before_it_replaces_the_last_one(tmp_path, monkeypatch):
    path = tmp_path / status.FILENAME
    path.write_text('{"status": "before"}')
    calls = []
    sync, replace = os.fdatasync, os.replace

    def fdatasync(fd):
        calls.append(("sync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        sync(fd)

    def replace_(src, dst):
        calls.append(("replace", str(src), str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "replace", replace_)
    status.write_snapshot(path, {"status": "after"})
    (_, synced, size), (_, renamed, target) = calls
    assert synced == renamed and size > 0 and target == str(path)
    assert json.loads(path.read_text()) == {"status": "after"}
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_room_whose_archive_still_owes_messages_says_so_and_when_it_is_asked_again():
    data = {"pid": None, "account": "me@example.org", "updated": 1000.0, "status": "connected", "rooms": [
        {"room": "owed@muc.example", "state": "joined", "nick": "me", "catchup_gap": True,
         "catchup_retry_at": 1030.0},
        {"room": "away@muc.example", "state": "backoff", "catchup_gap": True, "catchup_retry_at": None},
        {"room": "fine@muc.example", "state": "joined", "nick": "me", "catchup_gap": False},
    ]}
    notes = {line.split()[0]: line for line in status.format_status(data, now=1000.0).splitlines() if "@" in line}
    assert notes["owed@muc.example"].endswith("catch-up failed: the archive still owes messages, asked again in 30 s")
    assert notes["away@muc.example"].endswith("catch-up failed: the archive still owes messages")
    assert "archive" not in notes["fine@muc.example"]
