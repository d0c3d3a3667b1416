"""Durability section: what each write on the relay's path costs, and what syncing it to the
disk (fdatasync) would add.  No server: the store's own classes, in a directory on the file
system of the default state dir (a tmpfs would make every sync free).

- before the sends: one relay's batch (a room message logged, 3 relays in flight) made into
  a journaled group and appended to the journal, as the daemon does before the relays go
  out; and the same followed by fdatasync of the journal;
- the commit to SQLite after the sends (synchronous=NORMAL, as the daemon runs it; and
  synchronous=FULL, a sync per commit);
- the sm-acked mark, rewritten before each XEP-0198 acknowledgement; and with fdatasync;
- emptying the journal once it holds 1 MB: the checkpoint that syncs SQLite first, per
  emptying and spread over the batches that filled it;
- the status snapshot (written at most every 0.5 s, off the relay's path), with its sync.

Medians and p99 over many repetitions; figures are reported, none has a target.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from minimix import status
from minimix.config import default_state_dir
from minimix.core.ledger_records import InFlight, Logged
from minimix.store import JOURNAL_MAX, AckMark, Store

CLIENTS = ("phone", "laptop", "tablet")
XML = "<message from='room@muc.example/bob' type='groupchat'><body>" + "x" * 300 + "</body></message>"


def _where(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    target = default_state_dir()
    while not target.exists():
        target = target.parent
    return target


def _fs_type(path: Path) -> str:
    best, kind = "", "?"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            _dev, mount, fs, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fs
    return kind


def _times_us(action: Callable[[int], None], n: int, before: Callable[[int], None] | None = None) -> dict:
    """``action(i)`` timed n times (``before(i)`` run first, not timed): median and p99."""
    samples = []
    for i in range(n):
        if before is not None:
            before(i)
        t0 = time.perf_counter_ns()
        action(i)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return {"p50_us": statistics.median(samples), "p99_us": samples[max(int(len(samples) * 0.99) - 1, 0)], "n": n}


class _Relays:
    """A store that logs one message per batch and puts 3 relays of it in flight."""

    def __init__(self, path: Path, *, sync_journal: bool = False) -> None:
        self.store = Store(path)
        self.sync_journal = sync_journal

    def batch(self, i: int) -> None:
        store = self.store
        with store.grouped(journaled=True):
            store.apply([Logged(i + 1, "room@muc.example", f"sid-{i}", "bob", False, time.time(), "x" * 300, None,
                                "[room] bob: " + "x" * 300, XML, f"sid:sid-{i}", (f"sid-{i}", time.time()))])
            store.apply([InFlight(f"mmx-{i}-{c}", c, "room@muc.example", i + 1, ("sm-id", 3 * i + k))
                         for k, c in enumerate(CLIENTS)])
            store.record_stream("sm-id", i)
        if self.sync_journal:
            assert store.journal is not None and store.journal._fd is not None
            os.fdatasync(store.journal._fd)


def measure(args) -> dict:
    base = Path(tempfile.mkdtemp(prefix="minimix-durability-", dir=_where(getattr(args, "durability_dir", None))))
    n, n_sync = args.durability_n, args.durability_n_sync
    out: dict = {"dir": str(base), "fs": _fs_type(base)}
    try:
        # before the sends: the batch's group recorded and appended to the journal (the
        # previous group's commit, after its sends, is not timed here)
        relays = _Relays(base / "append.sqlite3")
        out["append"] = _times_us(relays.batch, n, before=lambda i: relays.store.commit())
        synced = _Relays(base / "append-sync.sqlite3", sync_journal=True)
        out["append_fdatasync"] = _times_us(synced.batch, n_sync, before=lambda i: synced.store.commit())
        # after the sends: the commit to SQLite
        for name, mode, count in (("commit_normal", "NORMAL", n), ("commit_full", "FULL", n_sync)):
            relays = _Relays(base / f"{name}.sqlite3")
            relays.store.db.execute(f"PRAGMA synchronous={mode}")
            out[name] = _times_us(lambda i, r=relays: r.store.commit(), count, before=relays.batch)
        # emptying the journal at 1 MB: the checkpoint first
        relays = _Relays(base / "empty.sqlite3")
        journal = relays.store.journal
        assert journal is not None
        batches = 0
        while journal.size <= JOURNAL_MAX:
            relays.store.commit()
            relays.batch(batches)
            batches += 1
        t0 = time.perf_counter_ns()
        relays.store.commit()  # over 1 MB: the checkpoint, then the journal emptied
        out["empty_journal"] = {"ms": (time.perf_counter_ns() - t0) / 1e6, "batches_per_mb": batches}
        assert journal.size == 0
        # sm-acked, before each acknowledgement
        mark = AckMark(base / "sm-acked")
        out["ack_mark"] = _times_us(lambda i: mark.write("sm-id", i), n)

        def synced_mark(i: int) -> None:
            mark.write("sm-id", n + i)
            assert mark._fd is not None
            os.fdatasync(mark._fd)

        out["ack_mark_fdatasync"] = _times_us(synced_mark, n_sync)
        # the status snapshot, with its sync (as written now)
        snapshot = {"status": "connected; 20/20 rooms joined",
                    "rooms": [{"room": f"r{i}@muc.example", "state": "joined"} for i in range(20)]}
        out["status_snapshot"] = _times_us(lambda i: status.write_snapshot(base / "status.json", snapshot), n_sync)
    finally:
        for p in sorted(base.iterdir()):
            p.unlink()
        base.rmdir()
    return out


def report(m: dict) -> tuple[list[str], str]:
    def us(key: str) -> str:
        return f"{m[key]['p50_us']:.0f} us (p99 {m[key]['p99_us']:.0f})"

    empty = m["empty_journal"]
    spread = empty["ms"] * 1000 / max(empty["batches_per_mb"], 1)
    lines = [
        f"durability_dir: {m['dir']} ({m['fs']})",
        f"durability_append_us: {us('append')} per relay batch, before its sends (now)",
        f"durability_append_fdatasync_us: {us('append_fdatasync')} with fdatasync of the journal (not done)",
        f"durability_commit_us: {us('commit_normal')} per batch after its sends, synchronous=NORMAL (now); "
        f"{us('commit_full')} with synchronous=FULL (not done)",
        f"durability_empty_journal_ms: {empty['ms']:.1f} ms per emptying, after {empty['batches_per_mb']} batches "
        f"(1 MB): {spread:.1f} us per batch (the checkpoint that syncs SQLite first)",
        f"durability_ack_mark_us: {us('ack_mark')} per acknowledgement (now); {us('ack_mark_fdatasync')} with "
        "fdatasync (not done)",
        f"durability_status_snapshot_us: {us('status_snapshot')} per snapshot with its fdatasync (now; at most "
        "every 0.5 s, off the relay's path)",
    ]
    rows = [
        ("relay batch appended to the journal, before its sends", us("append"), us("append_fdatasync")),
        ("commit to SQLite, after the sends", us("commit_normal"), us("commit_full") + " (synchronous=FULL)"),
        ("sm-acked, before each acknowledgement", us("ack_mark"), us("ack_mark_fdatasync")),
        ("journal emptied at 1 MB (checkpoint first)", f"{empty['ms']:.1f} ms / {empty['batches_per_mb']} "
         f"batches = {spread:.1f} us per batch", ""),
        ("status snapshot (every 0.5 s at most)", us("status_snapshot") + " (synced)", ""),
    ]
    table = "\n".join([
        f"| durability ({m['fs']}) | now | synced to disk each time |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
    ])
    return lines, table
