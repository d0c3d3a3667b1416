"""minimix bench: the daemon next to a bare aioxmpp client, on a throwaway loopback Prosody.

    .venv/bin/python bench/run.py [--quick] [--sections join,relay,catchup] [--rounds 3] ...

Three sections, each on its own throwaway Prosody (the relay and catch-up sections share
one), run one after the other:

- join:    this module (below): 1,000-room join time, RSS and idle CPU, daemon vs bare;
- relay:   bench/relay_bench.py: relay latency (direct vs via minimix), daemon CPU per
           relayed message, throughput (direct fan-out vs relay to 3 clients);
- catchup: bench/catchup_bench.py: catch-up of 20 rooms x 500 messages from MAM after a
           restart, daemon vs bench/bare_catchup.py; the store's size per 10,000 messages.
- durability: bench/durability_bench.py (no server): what the store's writes on the relay's
           path cost, and what syncing each to the disk would add (reported, no target).

Join section. Setup (once): a Prosody (tests/servers) with muc_room_cache_size raised (the
default of 100 swaps occupied rooms to disk and makes many joins server-bound), one account
with N autojoin XEP-0402 bookmarks, and N persistent rooms (created by an owner account,
which then leaves).
Then, per round, one fresh process of each kind, in rotating order (after one unmeasured
warm-up of each):

- bare:   bench/bare_client.py, aioxmpp.MUCClient joins, 50 in flight, no logic, with
          minimix's aioxmpp compat patches (--bare-patches: all of them, or only the TLS fix);
- daemon: python -m minimix run --config FILE (join_concurrency 50, logging info);
- raw:    (--raw-floor) the bare client sending raw join presences instead of MUCClient.

Both log into the same account (each run its own resource) and join the same N rooms with
the same nick. For each run:

- join time, from process start (the bench's clock just before fork/exec, so both pay
  interpreter start, imports, connect, TLS, login) until all N rooms are joined. "All
  joined" is observed on the server: a probe module in Prosody (prosody_probe/) timestamps
  the N-th muc-occupant-joined of the run's session. Cross-checks: the time the process
  itself says so (its stdout line, stamped by the bench on arrival), and the time from the
  session's resource bind (server-side) to all joined.
- RSS (VmRSS) after the joins plus a settle (--settle-s);
- CPU (utime+stime from /proc/PID/stat) over an idle window (--idle-s, 30 s by default,
  scaled to 60 s) with the rooms joined.

In every section, a run during which other processes on the (shared) machine were busy is
repeated (--noise-limit, --noise-retries). Medians over the rounds; ratios are daemon median /
bare (or direct) median (the median of per-round ratios is printed as a cross-check). Prints
one line per figure, a markdown table per section, and ends with "bench: N of M targets met"
(all sections); raw data goes to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixture import BENCH_DIR, REPO, BenchServer, StampedProcess, log  # noqa: E402
from harness import daemon_config, to_toml  # noqa: E402
from procstat import cpu_s, hwm_mb, rss_mb, self_cpu_s, system_busy_s  # noqa: E402

TARGETS = {
    "join_ratio": 1.2,  # daemon / bare, start -> all joined
    "rss_ratio": 1.25,  # daemon / bare, after the joins
    "idle_cpu_per_60s": 0.2,  # daemon CPU seconds per 60 s idle
}
RESULTS = BENCH_DIR / "results" / "latest.json"
SECTIONS = ("join", "relay", "catchup", "durability")
DAEMON_FROM: str | None = None


# -- processes --------------------------------------------------------------------------


class TimedProcess(StampedProcess):
    """A process whose output lines count the rooms joined as they arrive."""

    def __init__(self, *args, joined_rx: str, **kwargs):
        """`joined_rx`: a line saying one more room is joined, or (with a group n) that
        n rooms are, or (with a group add) that add more rooms are; counted as lines
        arrive, so polling costs nothing."""
        super().__init__(*args, **kwargs)
        self._joined_rx = re.compile(joined_rx)
        self.joined_n = 0
        self.joined_t: float | None = None

    def on_line(self, t: float, line: str) -> None:
        if m := self._joined_rx.search(line):
            n, add = m.groupdict().get("n"), m.groupdict().get("add")
            if n is not None:
                self.joined_n = int(n)
            else:
                self.joined_n += int(add) if add is not None else 1
            self.joined_t = t


def _wait_quiet(
    pids: tuple[int, ...], window_s: float = 0.5, limit_s: float = 0.02, timeout_s: float = 120.0
) -> float:
    """Wait until each of `pids` used at most `limit_s` of CPU in `window_s` (the client
    and the server: a client waiting for answers is not done); the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        c0 = [cpu_s(pid) for pid in pids]
        time.sleep(window_s)
        if all(cpu_s(pid) - c <= limit_s for pid, c in zip(pids, c0, strict=True)):
            break
    return round(time.monotonic() - t0 - window_s, 2)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.n = args.rooms
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="minimix-bench-"))
        self.srv = BenchServer(self.workdir, self.n)
        self.rooms_file = self.workdir / "rooms.txt"
        self.runs: list[dict] = []
        self.setup: dict = {}
        self.python = sys.executable
        self.kinds = ["bare", "daemon"] + (["raw"] if args.raw_floor else [])

    # -- setup ------------------------------------------------------------------------

    def prepare(self) -> None:
        t0 = time.monotonic()
        self.srv.start()
        self.setup["prosody_start_s"] = round(time.monotonic() - t0, 2)
        self.owner = self.srv.new_account("owner")
        self.account = self.srv.new_account("mm")
        log(f"publishing {self.n} XEP-0402 bookmarks for {self.account.jid} (pipelined) ...")
        self.setup["publish_bookmarks_s"] = round(self.srv.publish_bookmarks(self.account), 2)
        self.srv.load_bookmarks_module()
        log(f"creating {self.n} persistent rooms (owner joins and leaves them) ...")
        self.setup["create_rooms_s"] = round(self.srv.create_rooms(self.owner), 2)
        self.rooms_file.write_text("\n".join(self.srv.rooms) + "\n")
        live, occupants = self.srv.occupancy()
        self.setup["live_rooms"] = live
        log(
            f"setup done: publish {self.setup['publish_bookmarks_s']} s, "
            f"rooms {self.setup['create_rooms_s']} s; {live} live rooms, {occupants} occupants"
        )

    # -- one run ------------------------------------------------------------------------

    def make_process(self, kind: str, resource: str) -> TimedProcess:
        rundir = self.workdir / "runs" / resource
        rundir.mkdir(parents=True)
        acc, srv = self.account, self.srv.server
        if kind == "daemon":
            # one line per room, or for a mass join one "rooms joined rooms=N" line at the end
            # (the per-room lines are then at debug level)
            joined_rx = r"room state .*\bto=joined\b|\brooms joined rooms=(?P<add>\d+)"
            cfg = daemon_config(
                srv,
                acc,
                rundir / "state",
                resource=resource,
                extra={
                    "rooms": {"join_concurrency": self.args.concurrency},
                    "logging": {"level": "info"},
                },
            )
            config_file = rundir / "config.toml"
            config_file.write_text(to_toml(cfg))
            argv = [self.python, "-m", "minimix", "run", "--config", str(config_file)]
        else:
            joined_rx = r"^bare all joined n=(?P<n>\d+)"
            config_file = self.rooms_file
            argv = [
                self.python,
                str(BENCH_DIR / "bare_client.py"),
                "--jid", f"{acc.jid}/{resource}",
                "--password", acc.password,
                "--host", srv.host,
                "--port", str(srv.port),
                "--ca-file", str(srv.ca_file),
                "--rooms-file", str(self.rooms_file),
                "--nick", acc.localpart,  # the nick the daemon uses (no nick in the bookmarks)
                "--concurrency", str(self.args.concurrency),
            ]  # fmt: skip
            argv += ["--patches", self.args.bare_patches]
            if kind == "raw":
                argv.append("--raw")
        return TimedProcess(
            config_file, rundir / "output.log", argv=argv, cwd=REPO, joined_rx=joined_rx
        )

    def run_one(self, kind: str, label: str, idle_s: float, may_discard: bool = False) -> dict:
        """One fresh process of `kind`: join, settle, RSS, idle window, stop.

        With `may_discard`, a run during which other processes on the machine used more
        than --noise-limit of a core (on average over the join phase) is cut short after
        the join and marked discarded, so that the caller can repeat it."""
        n, srv = self.n, self.srv
        empty_wait = srv.wait_rooms_empty()
        resource = f"{kind}-{label}"
        full = f"{self.account.jid}/{resource}"
        p = self.make_process(kind, resource)
        prosody_pid = srv.pid
        load1 = os.getloadavg()[0]
        pros0 = cpu_s(prosody_pid)
        sys0, me0 = system_busy_s(), self_cpu_s()
        p.start()
        pid = p.pid
        deadline = time.monotonic() + self.args.join_timeout
        t_server = None
        client_n, t_client = 0, None
        cpu_join = pros_join = other_join = bench_join = None
        error = None
        while True:
            if t_server is None:
                t_server = srv.join_time(full, n)
                if t_server is not None:
                    cpu_join = cpu_s(pid)
                    pros_join = cpu_s(prosody_pid) - pros0
                    # CPU used by anything else on the machine meanwhile (other jobs)
                    bench_join = self_cpu_s() - me0
                    other_join = system_busy_s() - sys0 - cpu_join - pros_join - bench_join
            client_n, t_client = p.joined_n, p.joined_t
            if t_server is not None and client_n >= n:
                break
            if not p.running:
                error = f"exited with {p.returncode} before all rooms were joined"
                break
            if time.monotonic() > deadline:
                error = f"not all joined after {self.args.join_timeout} s (server {t_server}, client {client_n})"
                break
            time.sleep(0.02)
        rec: dict = {"kind": kind, "label": label, "resource": resource, "pid": pid}
        rec["rooms_empty_wait_s"] = round(empty_wait, 2)
        t0 = p.t_start
        t_bind = srv.bind_time(full)
        rec["t_start"] = t0
        rec["connected_s"] = _rel(t_bind, t0)  # server: resource bound
        rec["joined_s"] = _rel(t_server, t0)  # server: N-th occupant joined
        rec["joined_client_s"] = _rel(t_client, t0) if client_n >= n else None
        rec["connected_to_joined_s"] = _rel(t_server, t_bind)
        rec["client_joined"] = client_n
        rec["cpu_join_s"] = cpu_join
        rec["prosody_cpu_join_s"] = round(pros_join, 2) if pros_join is not None else None
        rec["other_cpu_join_s"] = round(other_join, 2) if other_join is not None else None
        rec["bench_cpu_join_s"] = round(bench_join, 2) if bench_join is not None else None
        if kind == "daemon":
            rec["client_connected_s"] = _rel(p.first(r"session established"), t0)
            rec["bookmarks_loaded_s"] = _rel(p.first(r"bookmarks loaded"), t0)
        else:
            rec["client_connected_s"] = _rel(p.first(r"^bare connected"), t0)
        rec["loadavg_1min_at_start"] = load1
        noise = other_join / rec["joined_s"] if other_join is not None and rec["joined_s"] else None
        rec["noise"] = round(noise, 2) if noise is not None else None
        rec["noisy"] = noise is not None and noise > self.args.noise_limit
        rec["discarded"] = may_discard and error is None and rec["noisy"]
        if error is None and not rec["discarded"]:
            # The daemon's first joins look where each room's archive ends once the joins
            # are done: wait until the process is quiet (the time it took is reported).
            rec["quiet_after_joined_s"] = _wait_quiet((pid, prosody_pid))
            time.sleep(self.args.settle_s)
            rec["rss_mb"] = round(rss_mb(pid), 1)
            rec["hwm_mb"] = round(hwm_mb(pid), 1)
            if idle_s > 0:
                c0, pr0, lines0 = cpu_s(pid), cpu_s(prosody_pid), len(p.stamped)
                sys0, me0 = system_busy_s(), self_cpu_s()
                time.sleep(idle_s)
                c1, pr1 = cpu_s(pid), cpu_s(prosody_pid)
                sys1, me1 = system_busy_s(), self_cpu_s()
                rec["idle_other_cpu_s"] = round(
                    (sys1 - sys0) - (c1 - c0) - (pr1 - pr0) - (me1 - me0), 2
                )
                rec["idle_s"] = idle_s
                rec["idle_cpu_s"] = round(c1 - c0, 3)
                rec["idle_prosody_cpu_s"] = round(pr1 - pr0, 3)
                rec["idle_output_lines"] = len(p.stamped) - lines0
                rec["rss_after_idle_mb"] = round(rss_mb(pid), 1)
            if not p.running:
                error = f"exited with {p.returncode} during the measurement"
        rec["error"] = error
        t_stop = time.monotonic()
        rec["exit_code"] = p.stop(signal.SIGTERM, timeout=30)
        rec["stop_s"] = round(time.monotonic() - t_stop, 2)
        warnings = [line for _, line in p.stamped if line.startswith(("<4>", "<3>", "<2>"))]
        rec["warnings"] = warnings[:20]
        rec["warning_count"] = len(warnings)
        rec["output_lines"] = len(p.stamped)
        log(
            f"{label:>8} {kind:6} joined {_fmt(rec['joined_s'])} s "
            f"(client {_fmt(rec['joined_client_s'])}, connected {_fmt(rec['connected_s'])}), "
            f"cpu {_fmt(cpu_join)} s, rss {_fmt(rec.get('rss_mb'))} MB, "
            f"idle cpu {_fmt(rec.get('idle_cpu_s'), 2)} s/{idle_s:g} s, "
            f"other jobs' cpu {_fmt(other_join)} s, exit {rec['exit_code']}"
            + (f"  ERROR: {error}" if error else "")
            + ("  (discarded: other jobs were busy; repeating)" if rec["discarded"] else "")
            + (f"  ({len(warnings)} warning lines)" if warnings else "")
        )
        return rec

    def measure(self) -> None:
        a = self.args
        for i in range(a.warmup):
            for kind in self.kinds:
                rec = self.run_one(kind, f"warmup{i + 1}", idle_s=0)
                rec["warmup"] = True
                self.runs.append(rec)
        for r in range(a.rounds):
            k = r % len(self.kinds)  # rotate the order: each kind goes first in turn
            for kind in self.kinds[k:] + self.kinds[:k]:
                for attempt in range(a.noise_retries + 1):
                    label = f"round{r + 1}" + (f"try{attempt + 1}" if attempt else "")
                    last = attempt == a.noise_retries
                    rec = self.run_one(kind, label, idle_s=a.idle_s, may_discard=not last)
                    rec["warmup"] = False
                    rec["round"] = r + 1
                    self.runs.append(rec)
                    if not rec["discarded"]:
                        break


# -- report ----------------------------------------------------------------------------


def _rel(t: float | None, t0: float | None) -> float | None:
    return None if t is None or t0 is None else round(t - t0, 3)


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def summarize(b: Bench) -> dict:
    measured = [r for r in b.runs if not r["warmup"] and not r.get("discarded")]
    keys = [
        "joined_s",
        "joined_client_s",
        "connected_s",
        "client_connected_s",
        "connected_to_joined_s",
        "cpu_join_s",
        "prosody_cpu_join_s",
        "rss_mb",
        "hwm_mb",
        "idle_cpu_s",
        "idle_prosody_cpu_s",
        "rss_after_idle_mb",
        "other_cpu_join_s",
        "bench_cpu_join_s",
        "idle_other_cpu_s",
        "quiet_after_joined_s",
    ]
    med = {}
    for kind in b.kinds:
        runs = [r for r in measured if r["kind"] == kind]
        med[kind] = {k: _median([r.get(k) if not r["error"] else None for r in runs]) for k in keys}
        med[kind]["values"] = {k: [r.get(k) for r in runs] for k in keys}
        med[kind]["failed_runs"] = sum(1 for r in runs if r["error"])
    if any(r["kind"] == "daemon" and r.get("bookmarks_loaded_s") for r in measured):
        med["daemon"]["bookmarks_loaded_s"] = _median(
            [r.get("bookmarks_loaded_s") for r in measured if r["kind"] == "daemon"]
        )
    return med


def report(b: Bench, med: dict) -> tuple[list[str], dict]:
    a, n = b.args, b.n
    bare, dmn = med["bare"], med["daemon"]
    per60 = lambda v: None if v is None else v * 60.0 / a.idle_s  # noqa: E731
    join_ratio = _ratio(dmn["joined_s"], bare["joined_s"])
    rss_ratio = _ratio(dmn["rss_mb"], bare["rss_mb"])
    idle_60 = per60(dmn["idle_cpu_s"]) if a.idle_s > 0 else None
    checks = {
        f"join_{n}_ratio": (join_ratio, TARGETS["join_ratio"]),
        "rss_ratio": (rss_ratio, TARGETS["rss_ratio"]),
        "idle_cpu_daemon_per_60s": (idle_60, TARGETS["idle_cpu_per_60s"]),
    }
    met = sum(1 for v, t in checks.values() if v is not None and v <= t)
    scaled = "" if a.idle_s == 60 else f", measured over {a.idle_s:g} s and scaled to 60 s"

    def paired(key: str) -> float | None:
        """Median over rounds of daemon/bare, each pair from the same round."""
        kept = [r for r in b.runs if not r["warmup"] and not r.get("discarded") and not r["error"]]
        by_round: dict[int, dict[str, float]] = {}
        for r in kept:
            if r.get(key) is not None:
                by_round.setdefault(r["round"], {})[r["kind"]] = r[key]
        ratios = [
            v["daemon"] / v["bare"] for v in by_round.values() if v.get("bare") and "daemon" in v
        ]
        return statistics.median(ratios) if ratios else None

    def vals(kind: str, key: str) -> str:
        v = med[kind]["values"][key]
        return "/".join(_fmt(x) for x in v)

    lines = [
        f"join_start_bare_s: {_fmt(bare['joined_s'])} s (start -> all {n} joined, server-observed; runs {vals('bare', 'joined_s')})",
        f"join_start_daemon_s: {_fmt(dmn['joined_s'])} s (start -> all {n} joined, server-observed; runs {vals('daemon', 'joined_s')})",
        f"join_{n}_ratio: {_fmt(join_ratio)} x (target <= {TARGETS['join_ratio']})",
        f"join_{n}_ratio_paired: {_fmt(paired('joined_s'))} x (median of the per-round daemon/bare ratios; "
        "cross-check of the ratio of medians, no target)",
        f"join_start_client_bare_s: {_fmt(bare['joined_client_s'])} s (start -> the process reports all joined)",
        f"join_start_client_daemon_s: {_fmt(dmn['joined_client_s'])} s (start -> the daemon's log says all {n} "
        "are joined: its 'rooms joined rooms=N' line, or the Nth 'room state to=joined')",
        f"join_start_client_ratio: {_fmt(_ratio(dmn['joined_client_s'], bare['joined_client_s']))} x (cross-check, no target)",
        f"connect_bare_s: {_fmt(bare['connected_s'])} s (start -> resource bound, server-observed)",
        f"connect_daemon_s: {_fmt(dmn['connected_s'])} s (start -> resource bound, server-observed)",
        f"join_connected_bare_s: {_fmt(bare['connected_to_joined_s'])} s (resource bound -> all joined)",
        f"join_connected_daemon_s: {_fmt(dmn['connected_to_joined_s'])} s (resource bound -> all joined)",
        f"join_connected_ratio: {_fmt(_ratio(dmn['connected_to_joined_s'], bare['connected_to_joined_s']))} x (no target)",
    ]
    if dmn.get("bookmarks_loaded_s") is not None:
        lines.append(
            f"bookmarks_loaded_daemon_s: {_fmt(dmn['bookmarks_loaded_s'])} s (start -> 'bookmarks loaded' line)"
        )
    lines += [
        f"cpu_join_bare_s: {_fmt(bare['cpu_join_s'])} s (client CPU, start -> all joined)",
        f"cpu_join_daemon_s: {_fmt(dmn['cpu_join_s'])} s (client CPU, start -> all joined)",
        f"cpu_join_ratio: {_fmt(_ratio(dmn['cpu_join_s'], bare['cpu_join_s']))} x "
        f"(paired {_fmt(paired('cpu_join_s'))} x; no target; less sensitive to other load than wall time)",
        f"prosody_cpu_join_bare_s: {_fmt(bare['prosody_cpu_join_s'])} s",
        f"prosody_cpu_join_daemon_s: {_fmt(dmn['prosody_cpu_join_s'])} s",
        f"other_cpu_join_s: bare {vals('bare', 'other_cpu_join_s')} / daemon {vals('daemon', 'other_cpu_join_s')} s "
        "(CPU of other processes on the machine during each join phase: noise)",
        f"bench_cpu_join_s: bare {_fmt(bare['bench_cpu_join_s'])} / daemon {_fmt(dmn['bench_cpu_join_s'])} s "
        "(the bench's own CPU during the join phase: polling, reading the output)",
        f"rss_bare_mb: {_fmt(bare['rss_mb'], 1)} MB (VmRSS {a.settle_s:g} s after quiet; runs {vals('bare', 'rss_mb')})",
        f"rss_daemon_mb: {_fmt(dmn['rss_mb'], 1)} MB (VmRSS {a.settle_s:g} s after quiet; runs {vals('daemon', 'rss_mb')})",
        f"rss_ratio: {_fmt(rss_ratio)} x (target <= {TARGETS['rss_ratio']})",
        f"quiet_after_joined_daemon_s: {_fmt(dmn.get('quiet_after_joined_s'))} s (all joined -> the daemon quiet: its first looks at the room archives; bare {_fmt(bare.get('quiet_after_joined_s'))} s)",
        f"hwm_bare_mb: {_fmt(bare['hwm_mb'], 1)} MB (peak RSS)",
        f"hwm_daemon_mb: {_fmt(dmn['hwm_mb'], 1)} MB (peak RSS)",
    ]
    if a.idle_s > 0:
        lines += [
            f"idle_cpu_bare_s: {_fmt(bare['idle_cpu_s'])} s per {a.idle_s:g} s (runs {vals('bare', 'idle_cpu_s')})",
            f"idle_cpu_daemon_s: {_fmt(dmn['idle_cpu_s'])} s per {a.idle_s:g} s (runs {vals('daemon', 'idle_cpu_s')})",
            f"idle_cpu_daemon_per_60s: {_fmt(idle_60)} s (target <= {TARGETS['idle_cpu_per_60s']}{scaled})",
            f"idle_prosody_cpu_s: bare {_fmt(bare['idle_prosody_cpu_s'])} / daemon {_fmt(dmn['idle_prosody_cpu_s'])} s per {a.idle_s:g} s",
            f"idle_other_cpu_s: bare {vals('bare', 'idle_other_cpu_s')} / daemon {vals('daemon', 'idle_other_cpu_s')} s "
            "(CPU of other processes during each idle window: noise)",
        ]
    if "raw" in med:
        raw = med["raw"]
        lines += [
            f"join_start_raw_s: {_fmt(raw['joined_s'])} s (raw-presence floor; runs {vals('raw', 'joined_s')})",
            f"join_raw_ratio: {_fmt(_ratio(dmn['joined_s'], raw['joined_s']))} x (daemon / raw floor, no target)",
            f"join_connected_raw_s: {_fmt(raw['connected_to_joined_s'])} s (resource bound -> all joined)",
            f"cpu_join_raw_s: {_fmt(raw['cpu_join_s'])} s",
            f"rss_raw_mb: {_fmt(raw['rss_mb'], 1)} MB (runs {vals('raw', 'rss_mb')})",
            f"rss_raw_ratio: {_fmt(_ratio(dmn['rss_mb'], raw['rss_mb']))} x (daemon / raw floor, no target)",
        ]
        if a.idle_s > 0:
            lines.append(f"idle_cpu_raw_s: {_fmt(raw['idle_cpu_s'])} s per {a.idle_s:g} s")
    failed = sum(
        m["failed_runs"] for m in med.values() if isinstance(m, dict) and "failed_runs" in m
    )
    if failed:
        lines.append(
            f"failed_runs: {failed} (bare {bare['failed_runs']}, daemon {dmn['failed_runs']})"
        )
    summary = {
        "targets": {
            k: {"value": v, "target": t, "met": v is not None and v <= t}
            for k, (v, t) in checks.items()
        },
        "met": met,
        "of": len(checks),
    }
    return lines, summary


def markdown(b: Bench, med: dict, summary: dict) -> str:
    """A table for the README: medians, the daemon / bare ratio, the targets."""
    a, n = b.args, b.n
    bare, dmn, raw = med["bare"], med["daemon"], med.get("raw")
    t = summary["targets"]
    idle_scale = 60.0 / a.idle_s if a.idle_s else 1.0

    def row(name, key, unit, target_key=None, digits=2, scale=1.0):
        sv = lambda v: "–" if v is None else f"{v * scale:.{digits}f} {unit}"  # noqa: E731
        ratio = _ratio(dmn[key], bare[key])
        target = ""
        if target_key:
            tt = t[target_key]
            unit_t = "x" if "ratio" in target_key else " s"
            target = f"≤ {tt['target']}{unit_t} {'✅' if tt['met'] else '❌'}"
        extra = f" {sv(raw[key])} |" if raw else ""
        return f"| {name} | {sv(bare[key])} |{extra} {sv(dmn[key])} | {_fmt(ratio)}x | {target} |"

    head = f"| {n} rooms, medians of {a.rounds} | bare aioxmpp (MUCClient) |"
    head += " bare, raw presences |" if raw else ""
    rows = [
        head + " minimix | minimix / bare | target |",
        "|---|---|" + ("---|" if raw else "") + "---|---|---|",
        row("start → all joined", "joined_s", "s", f"join_{n}_ratio"),
        row("connected → all joined", "connected_to_joined_s", "s"),
        row("client CPU until all joined", "cpu_join_s", "s"),
        row(f"RSS after joins (+{a.settle_s:g} s)", "rss_mb", "MB", "rss_ratio", digits=1),
    ]
    if a.idle_s > 0:
        rows.append(
            row(
                "CPU while idle, per 60 s",
                "idle_cpu_s",
                "s",
                "idle_cpu_daemon_per_60s",
                3,
                idle_scale,
            )
        )
    return "\n".join(rows)


def daemon_revision() -> str:
    """The commit the daemon runs from, "+changes" if daemon/ has uncommitted edits (others
    edit it while the bench runs: each section records the revision it measured); with
    --daemon-from, that directory."""
    if DAEMON_FROM:
        return f"{DAEMON_FROM} (--daemon-from)"

    def git(*cmd: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO), *cmd], capture_output=True, text=True, timeout=10
            )
            return out.stdout.strip()
        except Exception:  # noqa: BLE001
            return ""

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + ("+changes" if git("status", "--porcelain", "--", "daemon") else "")


def environment(b: Bench | None) -> dict:
    def version(cmd: list[str]) -> str | None:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            return None

    return {
        "python": platform.python_version(),
        "aioxmpp": version([sys.executable, "-c", "import aioxmpp; print(aioxmpp.__version__)"]),
        "minimix_git": version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "prosody": "/usr/bin/prosody (0.12, see tests/servers)",
        "muc_room_cache_size": b.srv.options.muc_room_cache_size if b is not None else None,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="minimix bench: daemon vs bare aioxmpp client")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default {','.join(SECTIONS)})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a quick look (3-4 minutes): 1 round of everything, a 10 s idle window, "
        "one repeat of a noisy run at most; explicit options still win",
    )
    p.add_argument(
        "--rounds", type=int, default=None, help="measured runs of each kind (default 3; --quick 1)"
    )
    p.add_argument(
        "--rooms", type=int, default=1000, help="rooms / autojoin bookmarks (default 1000)"
    )
    p.add_argument(
        "--idle-s",
        type=float,
        default=None,
        help="idle window for the CPU figure, scaled to 60 s in the output (default "
        "$BENCH_IDLE_S or 30, --quick 10; 0 skips it)",
    )
    p.add_argument(
        "--settle-s", type=float, default=2.0, help="wait after all joined before RSS (default 2)"
    )
    p.add_argument(
        "--warmup", type=int, default=1, help="unmeasured runs of each kind first (default 1)"
    )
    p.add_argument(
        "--concurrency", type=int, default=50, help="joins in flight, both clients (default 50)"
    )
    p.add_argument("--join-timeout", type=float, default=300.0)
    p.add_argument(
        "--noise-limit",
        type=float,
        default=0.25,
        help="repeat a run if other processes used more than this share of a core during "
        "its join phase (default 0.25)",
    )
    p.add_argument(
        "--noise-retries",
        type=int,
        default=None,
        help="repeats per run at most (default 3, --quick 1)",
    )
    p.add_argument(
        "--workdir", help="keep server, configs and outputs here (default: a temp dir, removed)"
    )
    p.add_argument(
        "--daemon-from",
        metavar="DIR",
        help="import minimix from DIR (a directory holding the minimix package) instead of "
        "daemon/, in the daemon and the bare clients: a stable measurement while daemon/ "
        "is being edited, e.g. DIR from `git archive HEAD daemon | tar -x -C /tmp/snap` "
        "-> /tmp/snap/daemon",
    )
    p.add_argument(
        "--bare-patches",
        choices=("all", "tls"),
        default="all",
        help="compat patches in the bare client: all of minimix.xmpp's (default; the same "
        "aioxmpp as the daemon's, memoised stringprep included) or only the TLS fix "
        "(stock aioxmpp, as in the perf-floors README)",
    )
    p.add_argument(
        "--raw-floor",
        action="store_true",
        help="also measure stricter floors: in the join section the bare client with raw join "
        "presences instead of MUCClient, in the catch-up section the bare client reading the "
        "archive's results as the daemon does (both reported, no target)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, one more run of each kind under py-spy (needs py-spy in the venv), "
        "one more relay blast and one more catch-up with py-spy on the daemon; summaries in "
        "bench/results/profile-*.txt",
    )
    g = p.add_argument_group("relay section (latency, CPU per relayed message, throughput)")
    g.add_argument("--relay-rounds", type=int, default=None, help="default: --rounds")
    g.add_argument("--relay-clients", type=int, default=3, help="opted-in observers (default 3)")
    g.add_argument(
        "--latency-messages",
        type=int,
        default=300,
        help="sequential messages per run (default 300)",
    )
    g.add_argument(
        "--latency-warmup", type=int, default=20, help="unmeasured messages first (default 20)"
    )
    g.add_argument(
        "--latency-gap-ms",
        type=float,
        default=0.0,
        help="wait after each arrival before the next message (default 0: back to back, as the "
        "perf floors; >= 50 shows the relay without the delayed-ACK/Nagle stall)",
    )
    g.add_argument("--latency-timeout", type=float, default=10.0, help="per message (default 10)")
    g.add_argument(
        "--blast-messages", type=int, default=2000, help="messages per blast (default 2000)"
    )
    g.add_argument("--blast-timeout", type=float, default=180.0)
    g = p.add_argument_group("catch-up section")
    g.add_argument("--catchup-rounds", type=int, default=None, help="default: --rounds")
    g.add_argument("--catchup-rooms", type=int, default=20, help="rooms (default 20)")
    g.add_argument(
        "--catchup-per-room",
        type=int,
        default=500,
        help="missed messages per room, also [relay] catchup_max (default 500)",
    )
    g.add_argument("--catchup-timeout", type=float, default=300.0)
    g.add_argument(
        "--catchup-noise-retries",
        type=int,
        default=None,
        help="repeats of a noisy catch-up run (default 1: the runs are long; the least noisy "
        "attempt is kept)",
    )
    g = p.add_argument_group("durability section")
    g.add_argument("--durability-n", type=int, default=None, help="repetitions (default 2000, --quick 500)")
    g.add_argument(
        "--durability-n-sync",
        type=int,
        default=None,
        help="repetitions of what syncs to the disk (default 200, --quick 50)",
    )
    g.add_argument(
        "--durability-dir",
        help="measure in this directory (default: the nearest existing one of the default state dir)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=RESULTS,
        help=f"raw results (default {RESULTS.relative_to(REPO)})",
    )
    args = p.parse_args(argv)
    quick = args.quick
    if args.rounds is None:
        args.rounds = 1 if quick else 3
    if args.idle_s is None:
        args.idle_s = 10.0 if quick else float(os.environ.get("BENCH_IDLE_S", 30))
    if args.noise_retries is None:
        args.noise_retries = 1 if quick else 3
    if args.relay_rounds is None:
        args.relay_rounds = args.rounds
    if args.catchup_noise_retries is None:
        args.catchup_noise_retries = min(1, args.noise_retries)
    if args.catchup_rounds is None:
        args.catchup_rounds = args.rounds
    if args.durability_n is None:
        args.durability_n = 500 if quick else 2000
    if args.durability_n_sync is None:
        args.durability_n_sync = 50 if quick else 200
    args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    global DAEMON_FROM
    args = parse_args(argv)
    if args.daemon_from:
        DAEMON_FROM = str(Path(args.daemon_from).resolve())
        if not (Path(DAEMON_FROM) / "minimix" / "__init__.py").exists():
            raise SystemExit(f"--daemon-from {args.daemon_from}: no minimix package there")
        # children (daemon, bare clients) inherit it; this process imports minimix lazily
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [DAEMON_FROM, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        sys.path.insert(0, DAEMON_FROM)
    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="minimix-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    args.workdir = str(workdir)
    t_begin = time.monotonic()
    log(f"minimix bench: sections {', '.join(args.sections)}{' (--quick)' if args.quick else ''}")
    log(f"workdir {workdir}")
    outdir = args.json.parent
    outdir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    profiles: dict[str, str] = {}
    tables: list[str] = []
    lines: list[str] = []
    targets: dict[str, dict] = {}
    bench = None

    if "join" in args.sections:
        bench = Bench(args)
        results["join_daemon_revision"] = rev = daemon_revision()
        log(
            f"join section (daemon at {rev}): {args.rooms} rooms, {args.rounds} rounds (+{args.warmup} warm-up), "
            f"idle window {args.idle_s:g} s, {args.concurrency} joins in flight, "
            f"bare client with {args.bare_patches} compat patches; "
            f"Prosody muc_room_cache_size={bench.srv.options.muc_room_cache_size} "
            "(Prosody's default of 100 makes joins of many rooms server-bound)"
        )
        try:
            bench.prepare()
            bench.measure()
            if args.profile:
                from profile_run import run_profiled

                for kind in bench.kinds:
                    log(f"profiling {kind} (unmeasured run under py-spy) ...")
                    profiles[kind] = run_profiled(bench, kind, outdir)
        finally:
            bench.srv.stop()
        med = summarize(bench)
        join_lines, summary = report(bench, med)
        table = markdown(bench, med, summary)
        tables.append(table)
        lines += join_lines
        targets.update(summary["targets"])
        results.update(
            setup=bench.setup, runs=bench.runs, medians=med, summary=summary, markdown=table
        )
        results["join_s"] = round(time.monotonic() - t_begin, 1)
    results["environment"] = environment(bench)

    traffic = [s for s in ("relay", "catchup") if s in args.sections]
    if traffic:
        import catchup_bench
        import relay_bench
        from catchup_bench import CatchupBench
        from relay_bench import RelayBench
        from traffic import traffic_server

        srv = traffic_server(workdir / "traffic")
        log(
            f"{' and '.join(traffic)} sections: a fresh Prosody (tests/servers defaults, "
            f"muc_room_cache_size={srv.options.muc_room_cache_size}, "
            "storage_archive_item_limit=1000000 as in the perf floors)"
        )
        srv.start()
        try:
            for name in traffic:
                t0 = time.monotonic()
                rev = daemon_revision()
                log(f"{name} section: daemon at {rev}")
                module = relay_bench if name == "relay" else catchup_bench
                cls = RelayBench if name == "relay" else CatchupBench
                section = cls(args, srv, workdir)
                try:
                    section.prepare()
                    section.measure()
                    if args.profile:
                        log(
                            f"profiling the daemon in the {name} section (unmeasured run under py-spy) ..."
                        )
                        profiles[f"{name}-daemon"] = section.profile(outdir)
                except Exception as exc:  # noqa: BLE001 - one section's failure, not the bench's
                    log(f"{name} section FAILED: {exc}")
                    lines.append(f"{name}_section_failed: {str(exc).splitlines()[0]}")
                    targets.update(
                        {
                            k: {"value": None, "target": None, "met": False}
                            for k in module.TARGET_NAMES
                        }
                    )
                    results[name] = {
                        "error": str(exc),
                        "runs": section.runs,
                        "daemon_revision": rev,
                    }
                    continue
                finally:
                    section.stop()
                med = section.summarize()
                sec_lines, summary = section.report(med)
                table = section.markdown(med, summary)
                tables.append(table)
                lines += sec_lines
                targets.update(summary)
                results[name] = {
                    "setup": section.setup,
                    "runs": section.runs,
                    "medians": med,
                    "summary": summary,
                    "markdown": table,
                    "daemon_revision": rev,
                    "seconds": round(time.monotonic() - t0, 1),
                }
        finally:
            srv.stop()

    if "durability" in args.sections:
        import durability_bench

        log(f"durability section (daemon at {daemon_revision()}): no server")
        measured = durability_bench.measure(args)
        durability_lines, table = durability_bench.report(measured)
        tables.append(table)
        lines += durability_lines
        results["durability"] = {**measured, "markdown": table}

    met = sum(1 for t in targets.values() if t["met"])
    results["targets"] = targets
    results["profiles"] = profiles
    results["seconds"] = round(time.monotonic() - t_begin, 1)
    args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    for text in profiles.values():
        print()
        for line in text.splitlines():
            print(f"# {line}")
    for table in tables:
        print()
        print(table)
    print()
    print(f"# raw results: {args.json}; {results['seconds']:.0f} s in all")
    for line in lines:
        print(line)
    print(f"bench: {met} of {len(targets)} targets met")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
