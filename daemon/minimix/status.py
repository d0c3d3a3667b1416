"""The status snapshot: the daemon keeps ``status.json`` in its state directory current;
``minimix status`` reads it (no connection to the daemon needed)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

FILENAME = "status.json"


def snapshot_path(state_dir: Path) -> Path:
    return state_dir / FILENAME


def write_snapshot(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a file, nor, after a power loss, an empty one
    (the data is synced before the rename makes it the snapshot).  The directory is not
    synced: a rename lost to a power loss leaves the previous snapshot, which is whole."""
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fdatasync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_running(data: dict[str, Any]) -> bool:
    pid = data.get("pid")
    if not isinstance(pid, int) or data.get("stopped"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def format_status(data: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = max(0, round(now - float(data.get("updated", now))))
    head = f"minimix {data.get('account', '?')}: "
    if is_running(data):
        head += f"running (pid {data['pid']}), {data.get('status', '?')} — updated {age} s ago"
    else:
        head += f"not running (last status {age} s ago: {data.get('status', '?')})"
    rows = [("ROOM", "STATE", "NICK", "OCCUPANTS", "UNREAD", "STORED", "NOTE")]
    for room in data.get("rooms", []):
        note = room.get("reason") or ""
        if room.get("archive") is False:
            note = "no archive (MAM): catch-up from the room's history" + (f"; {note}" if note else "")
        if room.get("catchup_gap"):
            owed = "catch-up failed: the archive still owes messages"
            if room.get("catchup_retry_at"):
                owed += f", asked again in {max(0, round(room['catchup_retry_at'] - now))} s"
            note = owed + (f"; {note}" if note else "")
        if room.get("retry_at"):
            note = f"retry in {max(0, round(room['retry_at'] - now))} s" + (f": {note}" if note else "")
        nick = room.get("nick") or ""
        if room.get("wanted_nick") and room.get("wanted_nick") != nick and nick:
            nick += f" (wants {room['wanted_nick']})"
        # unread: after the user's read marker (XEP-0490), where one is known; stored: the
        # mentions sent to the account for the server to keep, for phones away
        unread = room.get("unread")
        rows.append((room["room"], room["state"], nick, str(room.get("occupants", "")),
                     "" if unread is None else str(unread), str(room.get("stored") or ""), note))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = [head, ""] + [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:6])) + "  " + r[6] for r in rows
    ]
    if len(rows) == 1:
        lines.append("(no rooms)")
    totals = [f"{data[key]} {what}" for key, what in (("unread", "unread"), ("stored", "mentions stored for phones"))
              if data.get(key)]
    if totals:
        lines += ["", "total: " + ", ".join(totals)]
    return "\n".join(line.rstrip() for line in lines)
