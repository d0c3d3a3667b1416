"""The store: one SQLite file in the state dir, written only by the app's loop.

WAL mode, the schema version in ``PRAGMA user_version``, migrations as numbered SQL.
A store that cannot be opened or read is moved aside with a clear log line and a fresh
one is made: the daemon never refuses to start because of its cache.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from minimix.core.relay import ClientSettings, Mode

FILENAME = "minimix.sqlite3"

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
]


class Store:
    def __init__(self, path: Path | str, *, on_reset: Callable[[str, Path], None] | None = None) -> None:
        """Open (or create) the store at ``path`` (``":memory:"`` for tests).

        ``on_reset(reason, moved_to)`` is called when an unusable file was moved aside.
        """
        self.path = path
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            if str(path) == ":memory:":
                raise
            moved = Path(f"{path}.corrupt-{int(time.time())}")
            Path(path).rename(moved)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            if on_reset is not None:
                on_reset(str(exc), moved)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None)  # autocommit; explicit transactions
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this minimix")
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            db.execute("BEGIN")
            try:
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.db.close()

    # -- client settings ------------------------------------------------------------------

    def load_clients(self) -> dict[str, ClientSettings]:
        rooms: dict[str, dict[str, Mode]] = {}
        for resource, room, mode in self.db.execute("SELECT resource, room, mode FROM client_room"):
            rooms.setdefault(resource, {})[room] = Mode(mode)
        clients: dict[str, ClientSettings] = {}
        for resource, default, keywords in self.db.execute(
            "SELECT resource, default_mode, keywords FROM client"
        ):
            clients[resource] = ClientSettings(
                Mode(default) if default else None, rooms.pop(resource, {}), tuple(json.loads(keywords))
            )
        for resource, modes in rooms.items():
            clients[resource] = ClientSettings(None, modes, ())
        return clients

    def save_client(self, resource: str, settings: ClientSettings) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO client (resource, default_mode, keywords) VALUES (?, ?, ?) "
                "ON CONFLICT (resource) DO UPDATE SET default_mode = excluded.default_mode, "
                "keywords = excluded.keywords",
                (resource, settings.default.value if settings.default else None, json.dumps(list(settings.keywords))),
            )
            db.execute("DELETE FROM client_room WHERE resource = ?", (resource,))
            db.executemany(
                "INSERT INTO client_room (resource, room, mode) VALUES (?, ?, ?)",
                [(resource, room, mode.value) for room, mode in settings.rooms.items()],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
