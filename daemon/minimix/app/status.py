"""What the daemon shows of itself: systemd's one-line STATUS= and the snapshot that
`minimix status` reads (status.json in the state dir)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from minimix import status as status_file
from minimix.core.engine import Engine
from minimix.core.room import RoomState
from minimix.sdnotify import Notifier

log = structlog.get_logger("minimix")


class Status:
    def __init__(self, notifier: Notifier, engine: Engine, account: str, state_dir: Path) -> None:
        self.notifier = notifier
        self.engine = engine
        self.account = account
        self.path = status_file.snapshot_path(state_dir)
        self.connection = "connecting"  # or "connected", or what is wrong with the connection
        self.text = ""
        # one thread: the snapshots are written in order, the newest last
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status")

    def update(self, *, stopping: bool = False) -> None:
        """STATUS=, when it changed: the connection, and how many rooms are joined."""
        rooms = self.engine.rooms
        if stopping:
            text = "stopping; leaving rooms"
        elif self.connection == "connected":
            text = f"connected; {rooms.count(RoomState.JOINED)}/{rooms.wanted} rooms joined"
            if gave_up := rooms.count(RoomState.GAVE_UP):
                text += f"; {gave_up} gave up"
        else:
            text = self.connection
        if text != self.text:
            self.text = text
            self.notifier.status(text)

    def snapshot(self, *, stopped: bool = False) -> None:
        engine = self.engine
        rooms = engine.rooms.snapshot()
        router, pushes = engine.router, engine.ledger.pushes
        for room in rooms:
            room["occupants"] = engine.occupants.count(room["room"])
            room["archive"] = engine.catchups.mam.get(room["room"])
            room["unread"] = router.unread.get(room["room"])
            room["stored"] = pushes.get(room["room"], 0)
            gap = engine.catchups.gaps.get(room["room"])  # the archive owes what a failed catch-up did not give
            room["catchup_gap"] = gap is not None
            room["catchup_retry_at"] = gap.retry_at if gap is not None else None
        data = {
            "pid": os.getpid(),
            "account": self.account,
            "updated": time.time(),
            "status": "stopped" if stopped else self.text,
            "stopped": stopped,
            "rooms": rooms,
            "unread": sum(router.unread.values()),
            "stored": sum(pushes.values()),
        }
        if stopped:  # the last one: once those still being written are done
            self._writer.shutdown(wait=True)
            _save(self.path, data)
        else:  # its sync to the disk takes milliseconds: not in the loop, where relays wait
            self._writer.submit(_save, self.path, data)


def _save(path: Path, data: dict[str, Any]) -> None:
    try:
        status_file.write_snapshot(path, data)
    except OSError as exc:
        log.warning("cannot write the status file", error=str(exc))
