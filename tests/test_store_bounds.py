"""What the store keeps is bounded and dated by the rooms: no row an occupant can make
outlive retention, and nothing older minimix stored is read differently after an upgrade."""

from __future__ import annotations

import sqlite3
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from minimix.core.ledger_records import (
    AnswersReceipts,
    Away,
    ClientsForgotten,
    CursorMoved,
    CursorsForgotten,
    InFlight,
    Logged,
)
from minimix.store import (
    FILENAME,
    KEPT_TEXT_MAX,
    KEPT_XML_MAX,
    MIGRATIONS,
    Store,
    kept,
)

ROOM = "r@muc.example"
YEAR_2999 = 32472144000.0


def message(seq: int, stamp: float, **kw) -> Logged:
    fields = dict(stanza_id=f"s{seq}", nick="bob", private=False, stamp=stamp, body=f"m{seq}", subject=None,
                  text=f"[r] bob: m{seq}", ref=f"<message xmlns='jabber:client'><body>m{seq}</body></message>")
    fields.update(kw)
    return Logged(seq, ROOM, **fields)


def downgraded(path, version: int) -> None:
    """The store as an older minimix left it: schema ``version`` (newer migrations to run)."""
    db = sqlite3.connect(path)
    if version < 10:
        db.execute("ALTER TABLE room_state DROP COLUMN gap_after")
    if version < 9:
        db.execute("DROP TABLE pushed")
    if version < 8:
        db.execute("ALTER TABLE client_seen DROP COLUMN away_since")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


def test_an_upgrade_dates_what_an_occupant_dated_in_the_future_now(tmp_path):
    path = tmp_path / FILENAME
    store = Store(path)
    store.apply([message(1, 1000.0), message(2, YEAR_2999, room_cursor=("forged", YEAR_2999))])
    store.close()
    downgraded(path, 6)
    before = time.time()
    store = Store(path)
    stamps = dict(store.db.execute("SELECT seq, stamp FROM message"))
    assert stamps[1] == 1000.0
    assert before - 1 <= stamps[2] <= time.time() + 1
    store.apply([message(3, time.time() + 60)])  # pruning always keeps the newest message
    assert store.prune(time.time() + 2) == 2  # retention reaches it now
    (last_id, last_stamp, _), = store.room_states().values()
    assert last_id == "forged" and before - 1 <= last_stamp <= time.time() + 1
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_an_upgrade_keeps_the_room_cursors_and_opens_no_gap(tmp_path):
    path = tmp_path / FILENAME
    store = Store(path)
    store.apply([message(1, 1000.0, room_cursor=("s1", 1000.0))])
    store.set_room_mam(ROOM, True)
    store.close()
    downgraded(path, 9)
    store = Store(path)
    assert store.room_states() == {ROOM: ("s1", 1000.0, True)} and store.room_gaps() == {}
    store.set_room_gap(ROOM, 1)
    assert store.room_gaps() == {ROOM: 1}
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_storing_a_message_moves_the_room_cursor_only_as_told(tmp_path):
    store = Store(tmp_path / FILENAME)
    store.apply([message(1, 1000.0, room_cursor=("s1", 1000.0))])
    store.apply([message(2, 1001.0, stanza_id="forged", private=True)])  # the core says: no
    assert store.room_states() == {ROOM: ("s1", 1000.0, None)}


def test_a_message_within_the_bounds_is_kept_as_it_came():
    m = message(1, 1000.0)
    assert kept(m) is m


def test_a_huge_message_is_kept_cut_with_a_reduced_well_formed_original():
    body = "<&>\"' " + "x" * 300_000
    original = (f"<message xmlns='jabber:client' from='{ROOM}/bob' id='m-1' type='groupchat' xml:lang='en'>"
                f"<body>{escape(body)}</body><stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='s1'/>"
                f"<junk xmlns='urn:example'>{'y' * 100_000}</junk></message>")
    m = kept(message(1, 1000.0, body=body, text=f"[r] bob: {body}", ref=original))
    assert len(m.ref.encode()) <= KEPT_XML_MAX
    assert len(m.body) < KEPT_TEXT_MAX + 100 and len(m.text) < KEPT_TEXT_MAX + 100
    assert m.body.startswith("<&>\"' xxx") and m.body.endswith("more characters not kept]")
    root = ET.fromstring(m.ref)
    assert root.tag == "{jabber:client}message"
    assert (root.get("from"), root.get("id"), root.get("type")) == (f"{ROOM}/bob", "m-1", "groupchat")
    assert root.findtext("{jabber:client}body").startswith("<&>\"' xxx")
    (sid,) = root.findall("{urn:xmpp:sid:0}stanza-id")
    assert (sid.get("by"), sid.get("id")) == (ROOM, "s1")
    assert root.find("{urn:example}junk") is None


def test_a_huge_private_message_keeps_no_id_of_the_room_and_no_huge_id_of_its_sender():
    long_id = "i" * 5000
    original = (f"<message xmlns='jabber:client' from='{ROOM}/bob' id='{long_id}' type='chat'>"
                f"<body>{'z' * 70_000}</body></message>")
    m = kept(message(2, 1000.0, private=True, stanza_id=None, body="z" * 70_000, ref=original))
    root = ET.fromstring(m.ref)
    assert (root.get("type"), root.get("id")) == ("chat", None)
    assert root.find("{urn:xmpp:sid:0}stanza-id") is None


def test_clients_away_are_recorded_with_their_time_and_forgotten_as_told(tmp_path):
    store = Store(tmp_path / FILENAME)
    for client in ("r-1", "r-2", "back"):
        store.apply([
            CursorMoved(client, ROOM, 3), InFlight(f"{client}-lost", client, ROOM, 4),
            AnswersReceipts(client, True), Away(client, 4, 5000.0),
        ])
    store.apply([Away("back", None)])
    state = store.load()
    assert state.away_at == {"r-1": 5000.0, "r-2": 5000.0}
    store.apply([CursorsForgotten(("r-1",)), ClientsForgotten(("r-2",))])
    state = store.load()
    assert set(state.cursors) == {("back", ROOM)}
    assert {f.client for f in state.flights.values()} == {"back"}
    assert state.away == {"r-1": 4}
    assert state.receipts == {"r-1", "back"}


def test_an_upgrade_counts_the_clients_away_before_it_as_away_from_then(tmp_path):
    path = tmp_path / FILENAME
    store = Store(path)
    store.apply([Away("old", 7, 1.0), Away("here", 3, 1.0), Away("here", None)])
    store.close()
    downgraded(path, 7)
    before = time.time()
    away_at = Store(path).load().away_at
    assert list(away_at) == ["old"] and before - 1 <= away_at["old"] <= time.time() + 1
