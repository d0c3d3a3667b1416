"""What the store keeps is bounded and dated by the rooms: no row an occupant can make
outlive retention, and nothing older minimix stored is read differently after an upgrade."""

from __future__ import annotations

import sqlite3
import time

from minimix.store import FILENAME, MIGRATIONS, Store, StoredMessage

ROOM = "r@muc.example"
YEAR_2999 = 32472144000.0


def message(seq: int, stamp: float, **kw) -> StoredMessage:
    fields = dict(stanza_id=f"s{seq}", nick="bob", private=False, stamp=stamp, body=f"m{seq}", subject=None,
                  text=f"[r] bob: m{seq}", xml=f"<message xmlns='jabber:client'><body>m{seq}</body></message>")
    fields.update(kw)
    return StoredMessage(seq, ROOM, **fields)


def downgraded(path, version: int) -> None:
    """The store as an older minimix left it: schema ``version`` (newer migrations to run)."""
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


def test_an_upgrade_dates_what_an_occupant_dated_in_the_future_now(tmp_path):
    path = tmp_path / FILENAME
    store = Store(path)
    store.store_message(message(1, 1000.0))
    store.store_message(message(2, YEAR_2999), ("forged", YEAR_2999))
    store.close()
    downgraded(path, 6)
    before = time.time()
    store = Store(path)
    stamps = dict(store.db.execute("SELECT seq, stamp FROM message"))
    assert stamps[1] == 1000.0
    assert before - 1 <= stamps[2] <= time.time() + 1
    assert store.prune(time.time() + 2) == 2  # retention reaches it now
    (last_id, last_stamp, _), = store.room_states().values()
    assert last_id == "forged" and before - 1 <= last_stamp <= time.time() + 1
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_storing_a_message_moves_the_room_cursor_only_as_told(tmp_path):
    store = Store(tmp_path / FILENAME)
    store.store_message(message(1, 1000.0), ("s1", 1000.0))
    store.store_message(message(2, 1001.0, stanza_id="forged", private=True))  # the core says: no
    assert store.room_states() == {ROOM: ("s1", 1000.0, None)}
