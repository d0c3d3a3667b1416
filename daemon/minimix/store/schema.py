"""The store's schema: migrations as numbered SQL, the version in ``PRAGMA user_version``."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: per-client relay settings
    """
    CREATE TABLE client (
        resource TEXT PRIMARY KEY,
        default_mode TEXT,
        keywords TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE client_room (
        resource TEXT NOT NULL,
        room TEXT NOT NULL,
        mode TEXT NOT NULL,
        PRIMARY KEY (resource, room)
    );
    """,
    # 2: the message log (for playback), room archive cursors, delivery cursors, relays in
    # flight and the XEP-0198 session they went out on (for exactly-once after a crash)
    """
    CREATE TABLE message (
        seq INTEGER PRIMARY KEY,
        room TEXT NOT NULL,
        stanza_id TEXT,
        nick TEXT,
        private INTEGER NOT NULL DEFAULT 0,
        stamp REAL NOT NULL,
        body TEXT,
        subject TEXT,
        text TEXT NOT NULL,
        xml TEXT NOT NULL
    );
    CREATE UNIQUE INDEX message_room_stanza_id ON message (room, stanza_id) WHERE stanza_id IS NOT NULL;
    CREATE INDEX message_stamp ON message (stamp);
    CREATE TABLE room_state (
        room TEXT PRIMARY KEY,
        last_stanza_id TEXT,
        last_stamp REAL,
        mam INTEGER
    );
    CREATE TABLE cursor (
        client TEXT NOT NULL,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (client, room)
    );
    CREATE TABLE client_seen (
        client TEXT PRIMARY KEY,
        offline_since INTEGER
    );
    CREATE TABLE inflight (
        relay_id TEXT PRIMARY KEY,
        client TEXT NOT NULL,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sm_id TEXT,
        sm_seq INTEGER
    );
    CREATE TABLE sm_session (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        sm_id TEXT NOT NULL,
        inbound INTEGER NOT NULL
    );
    """,
    # 3: each message's de-duplication key, for rooms whose history is asked again after
    # a restart (rooms without an archive: no ids to go by)
    """
    ALTER TABLE message ADD COLUMN key TEXT;
    CREATE INDEX message_room_stamp ON message (room, stamp)
    """,
    # 4: the clients seen answering a relay's receipt request (XEP-0184)
    """
    ALTER TABLE client_seen ADD COLUMN receipts INTEGER NOT NULL DEFAULT 0
    """,
    # 5: relays the server has acknowledged, still in flight for their receipt
    """
    ALTER TABLE inflight ADD COLUMN acked INTEGER NOT NULL DEFAULT 0
    """,
    # 6: the last group of the journal whose writes are in the database (see Store.grouped)
    """
    CREATE TABLE journal_state (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq INTEGER NOT NULL
    )
    """,
    # 7: times in the future are now.  An older minimix took an occupant's own <delay/> for
    # a message's time: a line dated 2999 was never pruned, and a room cursor in 2999
    # caught up nothing.
    """
    UPDATE message SET stamp = CAST(strftime('%s', 'now') AS REAL)
        WHERE stamp > CAST(strftime('%s', 'now') AS REAL);
    UPDATE room_state SET last_stamp = CAST(strftime('%s', 'now') AS REAL)
        WHERE last_stamp > CAST(strftime('%s', 'now') AS REAL)
    """,
    # 8: since when each client is away (see Ledger.expire); those away before this
    # version count from now
    """
    ALTER TABLE client_seen ADD COLUMN away_since REAL;
    UPDATE client_seen SET away_since = CAST(strftime('%s', 'now') AS REAL) WHERE offline_since IS NOT NULL
    """,
    # 9: mentions the server stored for clients away (sent to the account's bare JID): their
    # playback skips them
    """
    CREATE TABLE pushed (
        client TEXT NOT NULL,
        seq INTEGER NOT NULL,
        room TEXT NOT NULL,
        PRIMARY KEY (client, seq)
    )
    """,
    # 10: a room whose catch-up failed: its archive still owes what came after the room's
    # cursor, and the messages logged after this one may be among what it gives then
    """
    ALTER TABLE room_state ADD COLUMN gap_after INTEGER
    """,
]
