"""Reading the daemon's state (its SQLite store) from a test, read-only, while it runs."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

STORE = "minimix.sqlite3"


def state_dir(d) -> Path:
    """The state directory of a DaemonProcess (from its config file)."""
    return Path(tomllib.loads(d.config_file.read_text())["storage"]["state_dir"])


def query(d, sql: str, params: tuple = ()) -> list[tuple] | None:
    """Rows of `sql` on the daemon's store; None if there is no store (or table) yet."""
    path = state_dir(d) / STORE
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return None
    finally:
        db.close()


def room_state(d, room: str) -> tuple | None:
    """(last archive id, its stamp, keeps an archive 1/0/None) the daemon stored for `room`."""
    rows = query(
        d, "SELECT last_stanza_id, last_stamp, mam FROM room_state WHERE room = ?", (room,)
    )
    return rows[0] if rows else None


def in_flight(d) -> list[tuple] | None:
    """Relays committed as sent whose fate the daemon does not know yet:
    (relay_id, client, room, seq)."""
    return query(d, "SELECT relay_id, client, room, seq FROM inflight ORDER BY seq")


def awaiting_receipts(d) -> list[tuple] | None:
    """Relays the server has acknowledged that wait for the client's receipt (XEP-0184):
    (relay_id, client, room, seq)."""
    return query(d, "SELECT relay_id, client, room, seq FROM inflight WHERE acked ORDER BY seq")
