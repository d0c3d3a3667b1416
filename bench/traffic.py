"""Room traffic for the relay and catch-up sections: a Prosody, tapped slixmpp clients, and
the traffic itself (sequential messages, blasts) with CPU windows read from /proc.

The clients are the harness's slixmpp TestClient (never aioxmpp, the daemon's library), all
on its one background loop in the bench process, like the perf-floors observers. A bench
message carries a token `bmx:RUN:I` in its body. A TapClient takes every message with a
token out of the harness's recording (no waiters, no growing lists) and hands it to the tap
of its run, which stamps its arrival (time.perf_counter, in the loop thread, before any
handler) and counts it. A relay is recognised by its sender (the daemon's full JID), type
chat and its <forwarded/>; a direct message by type groupchat.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from fixture import MUC_ROOM_CACHE_SIZE  # noqa: F401  (sys.path: tests/)
from harness import DaemonProcess, TestClient
from harness.client import run
from harness.stanzas import attr, escape
from procstat import cpu_s, self_cpu_s, system_busy_s
from servers import Account, ProsodyOptions, ProsodyServer

# The perf-floors README's second change: Prosody's default archive quota (10,000 items per
# archive) makes every append beyond it rewrite the whole archive file, and the runs stall.
ARCHIVE_ITEM_LIMIT = 1_000_000

TOKEN_RX = re.compile(r"bmx:(?P<run>[A-Za-z0-9_.-]+):(?P<i>\d+)")
CLIENT_NS = "{jabber:client}"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
# time.time() - time.perf_counter(), to turn tap stamps into wall-clock times
WALL_OFFSET = time.time() - time.perf_counter()


def wall(t_perf: float) -> float:
    return t_perf + WALL_OFFSET


# -- the server ---------------------------------------------------------------------------


def traffic_server(workdir: Path) -> ProsodyServer:
    """The harness's Prosody (tests/servers: stock 0.12 modules and defaults) with the two
    changes of the perf-floors README: muc_room_cache_size raised (rooms never swap out)
    and storage_archive_item_limit raised (no archive truncation stalls).  The bench's
    probe module is loaded for its allocation probe (gc_probe), which does nothing until
    asked: the measured runs never ask."""
    options = ProsodyOptions(
        muc_room_cache_size=MUC_ROOM_CACHE_SIZE,
        extra_config=f"storage_archive_item_limit = {ARCHIVE_ITEM_LIMIT}",
        log_level="warn",
        plugin_paths=(str(Path(__file__).resolve().parent / "prosody_probe"),),
        modules=("bench_probe",),
    )
    return ProsodyServer(Path(workdir) / "prosody", options=options)


def gc_probe(client: TestClient, op: str) -> float:
    """Prosody's Lua heap in KB, then its collector held off (op "stop") or let go
    ("restart"): mod_bench_probe's allocation probe."""
    r = client.iq(
        f"<gc xmlns='urn:minimix:bench:gc' op={attr(op)}/>",
        to=client.bare.split("@")[1],
        type_="set",
    )
    return float(r.xml[0].get("kb"))


def new_account(server: ProsodyServer, localpart: str) -> Account:
    password = f"pw-{localpart}-bench"
    return Account(server.register(localpart, password), localpart, password)


# -- processes ----------------------------------------------------------------------------


def wait_alive(proc: DaemonProcess, predicate, timeout: float, what: str) -> None:
    """Wait until predicate() is true; fail at once, with the tail of its output, if the
    process exits meanwhile (e.g. a daemon that cannot start)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if not proc.running:
            raise RuntimeError(
                f"the daemon exited ({proc.returncode}) before {what}:\n{proc.tail(15)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} after {timeout:g} s; daemon output:\n{proc.tail(15)}")
        time.sleep(0.05)


# -- taps ---------------------------------------------------------------------------------


@dataclass
class Tap:
    """What one client receives of one run: arrival time per message index."""

    run: str
    kind: str  # "groupchat" | "relay"
    relay_from: str | None = None  # a relay's sender (the daemon's full JID)
    arrivals: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    unexpected: int = 0  # a token of this run in a stanza of the wrong kind
    first_unexpected: str | None = None
    _want: dict[int, asyncio.Future] = field(default_factory=dict)
    _count_target: int | None = None
    _count_fut: asyncio.Future | None = None

    def hit(self, i: int, t: float, xml) -> None:
        if self.kind == "relay":
            ok = (
                xml.get("type") == "chat"
                and xml.get("from") == self.relay_from
                and xml.find(FORWARDED) is not None
            )
        else:
            ok = xml.get("type") == "groupchat"
        if not ok:
            self.unexpected += 1
            if self.first_unexpected is None:
                import xml.etree.ElementTree as ET

                self.first_unexpected = ET.tostring(xml, encoding="unicode")[:2000]
            return
        if i in self.arrivals:
            self.duplicates += 1
            return
        self.arrivals[i] = t
        fut = self._want.pop(i, None)
        if fut is not None and not fut.done():
            fut.set_result(t)
        if (
            self._count_fut is not None
            and not self._count_fut.done()
            and len(self.arrivals) >= self._count_target
        ):
            self._count_fut.set_result(t)

    def expect(self, i: int) -> asyncio.Future:
        """A future for message i's arrival time (call in the loop)."""
        fut = asyncio.get_running_loop().create_future()
        if i in self.arrivals:
            fut.set_result(self.arrivals[i])
        else:
            self._want[i] = fut
        return fut

    def expect_count(self, n: int) -> asyncio.Future:
        """A future for the arrival time of the n-th distinct message (call in the loop)."""
        fut = asyncio.get_running_loop().create_future()
        self._count_target, self._count_fut = n, fut
        if len(self.arrivals) >= n:
            fut.set_result(max(self.arrivals.values()))
        return fut

    @property
    def count(self) -> int:
        return len(self.arrivals)

    @property
    def last(self) -> float | None:
        return max(self.arrivals.values()) if self.arrivals else None


class TapClient(TestClient):
    """A TestClient that takes bench traffic (a token in the body) out of the recording and
    gives it to the tap of its run; traffic of no tap (a sender's own echoes) is dropped."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.taps: dict[str, Tap] = {}
        self.untapped = 0

    def tap(self, run_id: str, kind: str, relay_from: str | None = None) -> Tap:
        t = Tap(run_id, kind, relay_from)
        self.taps[run_id] = t
        return t

    def untap(self, run_id: str) -> None:
        self.taps.pop(run_id, None)

    def _on_stanza(self, stanza):
        xml = stanza.xml
        if xml.tag == CLIENT_NS + "message":
            body = xml.findtext(CLIENT_NS + "body")
            if body and "bmx:" in body:
                t = time.perf_counter()
                m = TOKEN_RX.search(body)
                tap = self.taps.get(m["run"]) if m else None
                if tap is not None:
                    tap.hit(int(m["i"]), t, xml)
                else:
                    self.untapped += 1
                return None
        return super()._on_stanza(stanza)


def groupchat(room: str, run_id: str, i: int) -> str:
    return (
        f"<message to={attr(room)} type='groupchat' id='{run_id}-{i}'>"
        f"<body>{escape(f'bmx:{run_id}:{i} bench traffic')}</body></message>"
    )


# -- CPU windows --------------------------------------------------------------------------


class CpuWindow:
    """CPU seconds of named processes, of this process (the clients' loop, the bench) and of
    every other process on the machine (noise) between start() and stop()."""

    def __init__(self, pids: dict[str, int]):
        self.pids = {k: v for k, v in pids.items() if v}

    def start(self) -> CpuWindow:
        self.t0 = time.perf_counter()
        self.cpu0 = {k: cpu_s(p) for k, p in self.pids.items()}
        self.sys0, self.me0 = system_busy_s(), self_cpu_s()
        return self

    def stop(self, started: dict[str, float] | None = None) -> dict[str, float]:
        """`started`: CPU seconds of processes started inside the window (all theirs)."""
        wall_s = time.perf_counter() - self.t0
        out = {"wall_s": wall_s}
        used = 0.0
        for k, v in (started or {}).items():
            out[f"{k}_cpu_s"] = v
            used += v
        for k, p in self.pids.items():
            d = cpu_s(p) - self.cpu0[k]
            out[f"{k}_cpu_s"] = d
            used += d
        me = self_cpu_s() - self.me0
        out["bench_cpu_s"] = me
        out["other_cpu_s"] = max(0.0, system_busy_s() - self.sys0 - used - me)
        return out


async def wait_quiet(
    pids: list[int], window: float = 0.3, max_cpu: float = 0.02, timeout: float = 30.0
) -> float:
    """Wait until none of `pids` used more than `max_cpu` CPU seconds in `window`; returns
    how long it took (the end of a burst's work: acks, store writes)."""
    t0 = time.monotonic()
    while True:
        before = [cpu_s(p) for p in pids]
        await asyncio.sleep(window)
        if all(cpu_s(p) - b <= max_cpu for p, b in zip(pids, before, strict=True)):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return time.monotonic() - t0


# -- traffic ------------------------------------------------------------------------------


async def sequential(
    sender: TapClient,
    room: str,
    tap: Tap,
    n: int,
    warmup: int,
    gap_s: float,
    timeout: float,
    window: CpuWindow | None = None,
) -> tuple[list[float], dict | None]:
    """Send warmup + n messages one at a time, each once the previous one has reached the
    tap's client (then wait gap_s); the latencies of the last n, in seconds, and the CPU
    window over those n."""
    latencies: list[float] = []
    cpu = None
    send = sender.xmpp.send_raw
    for i in range(warmup + n):
        if i == warmup and window is not None:
            window.start()
        fut = tap.expect(i)
        xml = groupchat(room, tap.run, i)
        t0 = time.perf_counter()
        send(xml)
        t1 = await asyncio.wait_for(fut, timeout)
        if i >= warmup:
            latencies.append(t1 - t0)
        if gap_s > 0:
            await asyncio.sleep(gap_s)
    if window is not None:
        cpu = window.stop()
    return latencies, cpu


async def blast(
    sender: TapClient, room: str, taps: list[Tap], n: int, timeout: float, window: CpuWindow
) -> dict:
    """Send n messages at once; wait until every tap has all n. Returns the times and the
    CPU window from the first send to the last arrival at the slowest tap."""
    futs = [t.expect_count(n) for t in taps]
    send = sender.xmpp.send_raw
    run_id = taps[0].run
    window.start()
    t0 = time.perf_counter()
    for i in range(n):
        send(groupchat(room, run_id, i))
    t_sent = time.perf_counter()
    try:
        done = await asyncio.wait_for(asyncio.gather(*futs), timeout)
    except TimeoutError:
        cpu = window.stop()
        return {"t0": t0, "sent_s": t_sent - t0, "complete": False, "cpu": cpu,
                "received": [t.count for t in taps]}  # fmt: skip
    cpu = window.stop()
    return {
        "t0": t0,
        "sent_s": t_sent - t0,
        "complete": True,
        "t_last": max(done),
        "t_first_done": min(done),
        "cpu": cpu,
        "received": [t.count for t in taps],
    }


async def post(
    sender: TapClient, rooms: list[str], per_room: int, tap: Tap, timeout: float
) -> float:
    """Post per_room messages in each room (interleaved across rooms, all at once); wait
    until the sender has seen every one come back from its room (so the room has archived
    it). Message k*per_room + j is the j-th in room k. Returns the seconds it took."""
    fut = tap.expect_count(len(rooms) * per_room)
    send = sender.xmpp.send_raw
    t0 = time.perf_counter()
    for j in range(per_room):
        for k, room in enumerate(rooms):
            send(groupchat(room, tap.run, k * per_room + j))
    await asyncio.wait_for(fut, timeout)
    return time.perf_counter() - t0


def on_loop(coro, timeout: float):
    """Run a coroutine on the clients' loop (the harness's background loop)."""
    return run(coro, timeout)


# -- noise --------------------------------------------------------------------------------


def repeat_noisy(run, retries: int, limit: float, record, show) -> dict:
    """Call run(attempt) until a run was quiet (other processes used at most `limit` of a
    core) or `retries` repeats are spent. Every attempt goes to record(rec) and show(rec);
    the run kept is the quiet one, else the least noisy (a failed run only if all failed);
    the others are marked discarded. On a box that stays busy, the least noisy of a few
    beats the last one."""
    attempts: list[dict] = []
    for attempt in range(retries + 1):
        rec = run(attempt)
        rec["noisy"] = rec.get("other_share", 0) > limit
        rec["discarded"] = False
        attempts.append(rec)
        record(rec)
        quiet = not rec["noisy"]
        rec["_tag"] = "" if quiet else (" (noisy: repeating)" if attempt < retries else " (noisy)")
        show(rec)
        if quiet:
            break
    keep = min(attempts, key=lambda r: (r.get("error") is not None, r.get("other_share", 0)))
    for r in attempts:
        r["discarded"] = r is not keep
        r.pop("_tag", None)
    if len(attempts) > 1 and keep["noisy"]:
        print(
            f"# (all {len(attempts)} attempts noisy: kept the least noisy, "
            f"{keep.get('other_share', 0):.2f} core of other load)",
            flush=True,
        )
    return keep


# -- figures ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def store_bytes(state_dir: Path) -> dict[str, int]:
    """Sizes of the daemon's store: the database, its WAL and shared-memory index."""
    from minimix.store import FILENAME

    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = Path(state_dir) / f"{FILENAME}{suffix}"
        out["db" + suffix.replace("-", "_")] = p.stat().st_size if p.exists() else 0
    return out


def store_count(state_dir: Path, sql: str) -> int:
    """One number from the daemon's store, read-only (WAL mode allows a reader alongside)."""
    import sqlite3

    from minimix.store import FILENAME

    db = sqlite3.connect(f"file:{Path(state_dir) / FILENAME}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


def loadavg() -> float:
    return os.getloadavg()[0]


def run_counts(runs: list[dict]) -> dict:
    """How many measured runs failed, were repeated as noisy, or were kept though noisy."""
    measured = [r for r in runs if not r["warmup"]]
    return {
        "failed_runs": sum(1 for r in measured if r["error"]),
        "noisy_runs": sum(1 for r in runs if r["discarded"]),
        "noisy_kept": sum(1 for r in measured if r["noisy"] and not r["discarded"]),
    }
