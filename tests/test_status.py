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
