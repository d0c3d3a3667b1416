"""Relay section of the bench: latency, daemon CPU per relayed message and throughput, via
minimix next to direct MUC delivery, on one throwaway Prosody (bench/traffic.py).

Setup: accounts `mx` (the daemon's) and `sender` (S); room R (S and the daemon, which joins
it from an autojoin bookmark), and for direct delivery rooms D1 (S and o1) and D (S and
o1..o3); the daemon is in neither. The observers o1..o3 are slixmpp resources of `mx`
(`mx/o1`..), each opted in with the chat command `relay all` sent to the daemon's full JID.
So the same observer clients serve both modes, and only the path differs:

- direct: S posts in D1 (latency) or D (blasts); Prosody sends it to the observers;
- relay:  S posts in R; Prosody sends it to the daemon, which relays it to the observers
          (type=chat from mx/minimix, fallback body, <forwarded/>, hints, receipt request).
          A relay only counts if it is all of that (sender, type, <forwarded/>).

Runs (interleaved round by round, the order rotating; one unmeasured warm-up of each first):

- latency: S posts --latency-messages messages one at a time (after --latency-warmup), each
  once o1 has the previous one (plus --latency-gap-ms), as in the perf-floors README; o2 and
  o3 are switched to `relay off` for it (`relay all` again for the blasts), so the relay
  serves one client. Latency = o1's arrival - S's send (same process, same clock).
- blast (throughput): S sends --blast-messages messages at once; the rate is messages / (the
  last arrival at the slowest of the 3 observers - the first send); CPU of the daemon, of
  Prosody, of the bench (the clients' loop) and of other processes over that window.
- daemon CPU per relayed message: utime+stime over the relay blast (3 opted-in clients),
  from the first send until the daemon is quiet again (acks and store writes included),
  divided by the messages.

With --raw-floor, the latency runs have two more modes, the floors (bench/raw_relay.py, no
target): a process of another resource of `mx` in a room of its own (F, S and it), relaying
to o1 the daemon's relay format with no XML parser and no logic, the least any relay of
that format could do: `floor` without stream management, `floor-sm` with it, every <r/>
answered at once in the same write as the relay, as the daemon does.

A run during which other processes used more than --noise-limit of a core is repeated
(--noise-retries). Figures are medians over the rounds.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from fixture import BENCH_DIR, REPO, StampedProcess, log
from harness import DaemonProcess, daemon_config, to_toml
from procstat import cpu_s
from traffic import (
    CpuWindow,
    TapClient,
    blast,
    gc_probe,
    median,
    new_account,
    on_loop,
    percentile,
    ratio,
    repeat_noisy,
    run_counts,
    sequential,
    wait_alive,
    wait_quiet,
)

# the names of the target figures in report()'s summary
TARGET_NAMES = (
    "relay_latency_p50_ratio",
    "relay_latency_p99_ratio",
    "relay_cpu_ms_per_msg",
    "relay_daemon_vs_prosody_cpu",
)
TARGETS = {
    "relay_latency_p50_ratio": 3.0,  # relay p50 / direct p50
    "relay_latency_p99_ratio": 4.0,  # relay p99 / direct p99
    "relay_cpu_ms_per_msg": 1.0,  # daemon CPU per relayed message, 3 clients
    "relay_daemon_vs_prosody": 1.0,  # daemon CPU / Prosody CPU per message in the relay blast
}
NICK = "mx"
WARMUP_LATENCY_N = 50  # messages in the unmeasured warm-up runs
WARMUP_BLAST_N = 500
DAEMON_RESOURCE = "minimix"
FLOORS = ("floor", "floor-sm")  # --raw-floor: the raw relays' latency modes


class RelayBench:
    def __init__(self, args, server, workdir: Path):
        self.args = args
        self.srv = server
        self.workdir = Path(workdir) / "relay"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runs: list[dict] = []
        self.setup: dict = {}
        self.modes: dict[str, str] = {}  # observer resource -> relay mode set by command
        self.daemon: DaemonProcess | None = None
        self.floors: dict[str, StampedProcess] = {}  # mode -> process (--raw-floor)
        self.floor_rooms: dict[str, str] = {}
        self.latency_modes = ["direct", "relay"] + (list(FLOORS) if args.raw_floor else [])

    # -- setup ------------------------------------------------------------------------

    def prepare(self) -> None:
        a, srv = self.args, self.srv
        t0 = time.monotonic()
        self.account = new_account(srv, "mx")
        sender_acc = new_account(srv, "sender")
        self.room_r = f"relayed@{srv.muc_domain}"  # S and the daemon
        self.room_d1 = f"direct1@{srv.muc_domain}"  # S and o1: direct latency
        self.room_d = f"direct@{srv.muc_domain}"  # S and o1..o3: direct blasts
        self.sender = TapClient(srv, sender_acc, "s", timeout=60).connect()
        for room in (self.room_r, self.room_d1, self.room_d):
            self.sender.join(room, "sender")  # creates the room (persistent by default)
        self.observers = [
            TapClient(srv, self.account, f"o{i + 1}", timeout=60).connect()
            for i in range(a.relay_clients)
        ]
        self.observers[0].join(self.room_d1, "o1")
        for o in self.observers:
            o.join(self.room_d, o.resource)
        self.observers[0].publish_bookmark(self.room_r, nick=NICK)
        self.full_jid = f"{self.account.jid}/{DAEMON_RESOURCE}"
        cfg = daemon_config(
            srv, self.account, self.workdir / "state", resource=DAEMON_RESOURCE,
            extra={"logging": {"level": "info"}},
        )  # fmt: skip
        config_file = self.workdir / "config.toml"
        config_file.write_text(to_toml(cfg))
        self.daemon = DaemonProcess(config_file, self.workdir / "daemon.log", cwd=REPO).start()
        wait_alive(
            self.daemon,
            lambda: NICK in self.sender.occupants(self.room_r),
            60,
            f"the daemon in {self.room_r}",
        )
        for o in self.observers:
            self.set_mode(o, "all")
        for mode in self.latency_modes[2:]:
            self._start_floor(mode)
        self.setup["prepare_s"] = round(time.monotonic() - t0, 2)
        log(
            f"relay setup: daemon {self.full_jid} in {self.room_r}; observers "
            f"{', '.join(o.resource for o in self.observers)} opted in with 'relay all' and "
            f"joined to {self.room_d} (o1 also to {self.room_d1}) ({self.setup['prepare_s']} s)"
        )

    def _start_floor(self, mode: str) -> None:
        srv, o1 = self.srv, self.observers[0]
        room = self.floor_rooms[mode] = f"{mode.replace('-', '')}@{srv.muc_domain}"
        self.sender.join(room, "sender")
        argv = [
            sys.executable, str(BENCH_DIR / "raw_relay.py"),
            "--jid", f"{self.account.jid}/{mode}", "--password", self.account.password,
            "--host", srv.host, "--port", str(srv.port), "--ca-file", str(srv.ca_file),
            "--room", room, "--nick", mode, "--to", str(o1.jid),
            *(["--sm"] if mode.endswith("-sm") else []),
        ]  # fmt: skip
        p = self.floors[mode] = StampedProcess(
            self.workdir / "floor.unused", self.workdir / f"{mode}.log", argv=argv, cwd=REPO
        ).start()
        wait_alive(p, lambda: p.first(r"^floor ready") is not None, 60, f"the {mode} relay in {room}")

    def _from(self, mode: str) -> str:
        """Who sends a relay in this latency mode."""
        return f"{self.account.jid}/{mode}" if mode in FLOORS else self.full_jid

    def command(self, c: TapClient, text: str) -> str:
        mark = len(c.messages)
        c.send_message(self.full_jid, text)
        answer = c.wait_message(
            lambda m: str(m["from"]) == self.full_jid and m["type"] == "chat",
            since=mark,
            message=f"{c.jid}: no answer from the daemon to {text!r}",
        )
        return answer["body"]

    def set_mode(self, o: TapClient, mode: str) -> None:
        if self.modes.get(o.resource) == mode:
            return
        answer = self.command(o, f"relay {mode}")
        if f"relay for this client: {mode}" not in answer:
            raise RuntimeError(f"{o.resource}: unexpected answer to 'relay {mode}': {answer!r}")
        self.modes[o.resource] = mode

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.running:
            self.daemon.stop()
        for p in self.floors.values():
            if p.running:
                p.stop()
        for c in [getattr(self, "sender", None), *getattr(self, "observers", [])]:
            if c is not None:
                with contextlib.suppress(Exception):  # best effort at teardown
                    c.disconnect()

    # -- runs -------------------------------------------------------------------------------

    def _pids(self) -> dict[str, int]:
        return {"prosody": self.srv.pid, "daemon": self.daemon.pid}

    def _quiet(self) -> float:
        return on_loop(wait_quiet([self.srv.pid, self.daemon.pid]), 60)

    def latency_run(self, mode: str, n: int, warmup: int, label: str, hold_gc: bool = False) -> dict:
        """``hold_gc``: the diagnostic run: Prosody's collector is held off meanwhile, and
        what Prosody allocated per message is recorded (``prosody_alloc_kb_per_msg``)."""
        a = self.args
        o1 = self.observers[0]
        if mode == "relay":
            self.set_mode(o1, "all")
            for o in self.observers[1:]:
                self.set_mode(o, "off")
        quiet_s = self._quiet()
        run_id = f"lat-{mode}-{label}"
        tap = o1.tap(run_id, "groupchat" if mode == "direct" else "relay", self._from(mode))
        room = {"direct": self.room_d1, "relay": self.room_r}.get(mode) or self.floor_rooms[mode]
        window = CpuWindow(self._pids())
        timeout = a.latency_timeout
        heap0_kb = gc_probe(self.sender, "stop") if hold_gc else None
        alloc_kb = None
        try:
            lat, cpu = on_loop(
                sequential(self.sender, room, tap, n, warmup, a.latency_gap_ms / 1000, timeout, window),
                timeout * (n + warmup) + 30,
            )  # fmt: skip
            error = None
        except TimeoutError as exc:
            lat, cpu, error = [], None, f"timeout: {exc}"
        finally:
            o1.untap(run_id)
            if heap0_kb is not None:
                alloc_kb = gc_probe(self.sender, "restart") - heap0_kb
        ms = [x * 1000 for x in lat]
        rec = {
            "kind": "latency",
            "mode": mode,
            "label": label,
            "n": len(ms),
            "error": error,
            "quiet_wait_s": round(quiet_s, 2),
            "p50_ms": percentile(ms, 50),
            "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99),
            "max_ms": max(ms) if ms else None,
            "over_20ms": sum(1 for x in ms if x > 20),
            "duplicates": tap.duplicates,
            "unexpected": tap.unexpected,
            "latencies_ms": [round(x, 3) for x in ms],  # in the order sent: for the clusters
        }
        if alloc_kb is not None:
            rec["prosody_alloc_kb_per_msg"] = alloc_kb / (n + warmup)
            rec["_tag"] = " (diagnostic: Prosody's collector held off)"
        if cpu:
            rec.update({k: round(v, 3) for k, v in cpu.items()})
            rec["other_share"] = cpu["other_cpu_s"] / cpu["wall_s"] if cpu["wall_s"] else 0
            if mode == "relay" and rec["n"]:
                rec["daemon_cpu_ms_per_msg"] = 1000 * cpu["daemon_cpu_s"] / rec["n"]
        return rec

    def blast_run(self, mode: str, n: int, label: str) -> dict:
        a = self.args
        if mode == "relay":
            for o in self.observers:
                self.set_mode(o, "all")
        quiet_s = self._quiet()
        run_id = f"blast-{mode}-{label}"
        kind = "relay" if mode == "relay" else "groupchat"
        taps = [o.tap(run_id, kind, self.full_jid) for o in self.observers]
        room = self.room_r if mode == "relay" else self.room_d
        window = CpuWindow(self._pids())
        try:
            res = on_loop(
                blast(self.sender, room, taps, n, a.blast_timeout, window), a.blast_timeout + 30
            )
            settle_s = self._quiet()
            daemon_total = cpu_s(self.daemon.pid) - window.cpu0["daemon"]
            prosody_total = cpu_s(self.srv.pid) - window.cpu0["prosody"]
        finally:
            for o in self.observers:
                o.untap(run_id)
        cpu = res["cpu"]
        rec = {
            "kind": "blast",
            "mode": mode,
            "label": label,
            "n": n,
            "clients": len(taps),
            "error": None if res["complete"] else f"incomplete: received {res['received']}",
            "quiet_wait_s": round(quiet_s, 2),
            "send_s": res["sent_s"],
            "received": res["received"],
            "duplicates": sum(t.duplicates for t in taps),
            "unexpected": sum(t.unexpected for t in taps),
            "first_unexpected": next(
                (t.first_unexpected for t in taps if t.first_unexpected), None
            ),
            "settle_s": round(settle_s, 2),
            **{k: round(v, 3) for k, v in cpu.items()},
        }
        rec["other_share"] = cpu["other_cpu_s"] / cpu["wall_s"] if cpu["wall_s"] else 0
        if res["complete"]:
            dt = res["t_last"] - res["t0"]
            rec["deliver_s"] = dt
            rec["rate_msg_s"] = n / dt
            rec["stanzas_s"] = n * len(taps) / dt
        w = cpu["wall_s"]
        rec["prosody_cpu_pct"] = 100 * cpu["prosody_cpu_s"] / w if w else None
        rec["daemon_cpu_pct"] = 100 * cpu["daemon_cpu_s"] / w if w else None
        rec["bench_cpu_pct"] = 100 * cpu["bench_cpu_s"] / w if w else None
        rec["prosody_cpu_ms_per_msg"] = 1000 * prosody_total / n
        if mode == "relay":
            rec["daemon_cpu_total_s"] = round(daemon_total, 3)
            rec["daemon_cpu_ms_per_msg"] = 1000 * daemon_total / n
        return rec

    def _repeat_noisy(self, fn, *args, label: str, warmup: bool = False) -> dict:
        a = self.args

        def one(attempt: int) -> dict:
            rec = fn(*args, label + (f"try{attempt + 1}" if attempt else ""))
            rec["warmup"] = warmup
            return rec

        return repeat_noisy(
            one, 0 if warmup else a.noise_retries, a.noise_limit, self.runs.append, self._print_run
        )

    def _print_run(self, r: dict) -> None:
        tag = r.get("_tag") or (" (warm-up)" if r.get("warmup") else "")
        other = f"other CPU {r.get('other_share', 0):.2f} core"
        if r.get("error"):
            log(f"{r['kind']} {r['mode']} {r['label']}: {r['error']}{tag}")
        elif r["kind"] == "latency":
            log(
                f"latency {r['mode']:6} {r['label']}: p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} "
                f"max {r['max_ms']:.1f} ms, >20 ms: {r['over_20ms']}; {other}{tag}"
            )
        else:
            d = (
                f", daemon {r['daemon_cpu_pct']:.0f} % ({r['daemon_cpu_ms_per_msg']:.2f} ms/msg)"
                if r["mode"] == "relay"
                else ""
            )
            log(
                f"blast   {r['mode']:6} {r['label']}: {r.get('rate_msg_s', 0):.0f} msg/s at all "
                f"{r['clients']}; Prosody {r['prosody_cpu_pct']:.0f} %{d}; {other}{tag}"
            )

    def measure(self) -> None:
        a = self.args
        log(
            f"relay warm-up: latency {WARMUP_LATENCY_N} + blast {WARMUP_BLAST_N} messages, each mode"
        )
        for mode in self.latency_modes:
            self._repeat_noisy(
                self.latency_run, mode, WARMUP_LATENCY_N, 5, label="warmup", warmup=True
            )
        for mode in ("direct", "relay"):
            self._repeat_noisy(self.blast_run, mode, WARMUP_BLAST_N, label="warmup", warmup=True)
        modes = ["direct", "relay"]
        for r in range(a.relay_rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            lat_order = self.latency_modes if r % 2 == 0 else self.latency_modes[::-1]
            for mode in lat_order:
                rec = self._repeat_noisy(
                    self.latency_run,
                    mode,
                    a.latency_messages,
                    a.latency_warmup,
                    label=f"round{r + 1}",
                )
                rec["round"] = r + 1
            for mode in order[::-1]:
                rec = self._repeat_noisy(
                    self.blast_run, mode, a.blast_messages, label=f"round{r + 1}"
                )
                rec["round"] = r + 1
        # The diagnostic pair, after the measured runs and never among them: what Prosody
        # allocates per message, which sets how often its collector's steps fall on one.
        for mode in modes:
            try:
                rec = self.latency_run(mode, a.latency_messages, a.latency_warmup, "gc-held", hold_gc=True)
            except Exception as exc:  # noqa: BLE001 - a diagnostic: the measured runs stand
                log(f"latency {mode} diagnostic run failed: {type(exc).__name__}: {exc}")
                continue
            rec.update(warmup=False, discarded=False, diagnostic=True)
            self.runs.append(rec)
            self._print_run(rec)

    def profile(self, outdir: Path) -> str:
        """One more relay blast with py-spy attached to the daemon (unmeasured)."""
        from profile_run import profile_pid

        for o in self.observers:
            self.set_mode(o, "all")
        self._quiet()
        n = self.args.blast_messages
        run_id = "blast-relay-profile"
        taps = [o.tap(run_id, "relay", self.full_jid) for o in self.observers]
        window = CpuWindow(self._pids())

        def burst():
            on_loop(
                blast(self.sender, self.room_r, taps, n, self.args.blast_timeout, window),
                self.args.blast_timeout + 30,
            )
            self._quiet()

        head = f"daemon during a relay blast of {n} messages to {len(taps)} clients (py-spy, unmeasured run)"
        text = profile_pid(self.daemon.pid, burst, outdir / "profile-relay-daemon", head)
        for o in self.observers:
            o.untap(run_id)

        # and one message at a time to one client, as in the latency runs (where the time
        # of one relay goes, rather than the CPU of many)
        a = self.args
        o1 = self.observers[0]
        for o in self.observers[1:]:
            self.set_mode(o, "off")
        self._quiet()
        run_id = "lat-relay-profile"
        tap = o1.tap(run_id, "relay", self.full_jid)
        window = CpuWindow(self._pids())

        def one_at_a_time():
            on_loop(
                sequential(self.sender, self.room_r, tap, a.latency_messages, 0, a.latency_gap_ms / 1000,
                           a.latency_timeout, window),
                a.latency_timeout * a.latency_messages + 30,
            )

        head = f"daemon relaying {a.latency_messages} messages one at a time to 1 client (py-spy, unmeasured run)"
        text += "\n\n" + profile_pid(self.daemon.pid, one_at_a_time, outdir / "profile-relay-latency-daemon", head)
        o1.untap(run_id)
        return text

    # -- report ------------------------------------------------------------------------------

    def summarize(self) -> dict:
        kept = [r for r in self.runs if not r["warmup"] and not r["discarded"] and not r["error"]
                and not r.get("diagnostic")]
        held = {r["mode"]: r for r in self.runs if r.get("diagnostic") and not r["error"]}

        def pick(kind, mode, key):
            return [r.get(key) for r in kept if r["kind"] == kind and r["mode"] == mode]

        med: dict = {}
        for kind, keys in (
            ("latency", ["p50_ms", "p90_ms", "p99_ms", "max_ms", "over_20ms", "daemon_cpu_ms_per_msg",
                         "other_share"]),
            ("blast", ["rate_msg_s", "stanzas_s", "prosody_cpu_pct", "daemon_cpu_pct", "bench_cpu_pct",
                       "prosody_cpu_ms_per_msg", "daemon_cpu_ms_per_msg", "other_share", "deliver_s"]),
        ):  # fmt: skip
            for mode in self.latency_modes if kind == "latency" else ("direct", "relay"):
                m = med.setdefault(f"{kind}_{mode}", {})
                for k in keys:
                    m[k] = median(pick(kind, mode, k))
                    m.setdefault("values", {})[k] = pick(kind, mode, k)
                m["runs"] = len(pick(kind, mode, "mode"))

        def paired(kind: str, key: str, mode: str = "relay") -> float | None:
            by_round: dict[int, dict[str, float]] = {}
            for r in kept:
                if r["kind"] == kind and r.get(key) is not None and "round" in r:
                    by_round.setdefault(r["round"], {})[r["mode"]] = r[key]
            vals = [
                v[mode] / v["direct"]
                for v in by_round.values()
                if v.get("direct") and mode in v
            ]
            return median(vals)

        med["paired"] = {
            "p50": paired("latency", "p50_ms"),
            "p99": paired("latency", "p99_ms"),
            "rate": paired("blast", "rate_msg_s"),
            **{f"{mode}_p50": paired("latency", "p50_ms", mode) for mode in self.latency_modes[2:]},
        }
        med["gc_held"] = {
            mode: {k: held.get(mode, {}).get(k) for k in ("p50_ms", "p99_ms", "prosody_alloc_kb_per_msg")}
            for mode in ("direct", "relay")
        }
        med.update(run_counts([r for r in self.runs if not r.get("diagnostic")]))
        return med

    def report(self, med: dict) -> tuple[list[str], dict]:
        a = self.args
        ld, lr = med["latency_direct"], med["latency_relay"]
        bd, br = med["blast_direct"], med["blast_relay"]
        p50_ratio = ratio(lr["p50_ms"], ld["p50_ms"])
        p99_ratio = ratio(lr["p99_ms"], ld["p99_ms"])
        cpu_msg = br["daemon_cpu_ms_per_msg"]
        vs_prosody = ratio(br["daemon_cpu_ms_per_msg"], br["prosody_cpu_ms_per_msg"])
        checks = {
            "relay_latency_p50_ratio": (p50_ratio, TARGETS["relay_latency_p50_ratio"]),
            "relay_latency_p99_ratio": (p99_ratio, TARGETS["relay_latency_p99_ratio"]),
            "relay_cpu_ms_per_msg": (cpu_msg, TARGETS["relay_cpu_ms_per_msg"]),
            "relay_daemon_vs_prosody_cpu": (vs_prosody, TARGETS["relay_daemon_vs_prosody"]),
        }
        f = _fmt

        def vals(m, k, d=2):
            return "/".join(f(x, d) for x in m["values"][k])

        n, gap = a.latency_messages, a.latency_gap_ms
        how = (
            f"{n} sequential messages, next one {gap:g} ms after the previous arrived"
            if gap
            else (f"{n} sequential messages, each sent once the previous one arrived")
        )
        bottleneck = None
        if vs_prosody is not None:
            bottleneck = "Prosody" if vs_prosody < 1 else "the daemon"
        lines = [
            f"relay_latency_direct_p50_ms: {f(ld['p50_ms'])} ms (S -> O joined to the room; {how}; runs {vals(ld, 'p50_ms')})",
            f"relay_latency_relay_p50_ms: {f(lr['p50_ms'])} ms (S -> room -> minimix -> O; runs {vals(lr, 'p50_ms')})",
            f"relay_latency_p50_ratio: {f(p50_ratio)} x (target <= {TARGETS['relay_latency_p50_ratio']}; "
            f"paired {f(med['paired']['p50'])} x)",
            f"relay_latency_direct_p99_ms: {f(ld['p99_ms'])} ms (runs {vals(ld, 'p99_ms')})",
            f"relay_latency_relay_p99_ms: {f(lr['p99_ms'])} ms (runs {vals(lr, 'p99_ms')})",
            f"relay_latency_p99_ratio: {f(p99_ratio)} x (target <= {TARGETS['relay_latency_p99_ratio']}; "
            f"paired {f(med['paired']['p99'])} x)",
            f"relay_latency_direct_p90_max_ms: {f(ld['p90_ms'])} / {f(ld['max_ms'], 1)} ms (p90 / max)",
            f"relay_latency_relay_p90_max_ms: {f(lr['p90_ms'])} / {f(lr['max_ms'], 1)} ms (p90 / max)",
            f"relay_latency_over_20ms: direct {vals(ld, 'over_20ms', 0)} / relay {vals(lr, 'over_20ms', 0)} "
            f"messages of {n} per run",
            f"relay_cpu_ms_per_msg: {f(cpu_msg, 3)} ms (daemon CPU over the relay blast of {a.blast_messages} "
            f"to {a.relay_clients} opted-in clients, until quiet, per message; target <= "
            f"{TARGETS['relay_cpu_ms_per_msg']}; runs {vals(br, 'daemon_cpu_ms_per_msg', 3)})",
            f"relay_cpu_ms_per_msg_sequential: {f(lr['daemon_cpu_ms_per_msg'], 3)} ms (daemon CPU per message "
            f"in the latency runs: 1 client, one message at a time, no batching; no target; runs "
            f"{vals(lr, 'daemon_cpu_ms_per_msg', 3)})",
            f"throughput_direct_msg_s: {f(bd['rate_msg_s'], 0)} msg/s ({a.blast_messages} messages fully received "
            f"by {a.relay_clients} occupants; runs {vals(bd, 'rate_msg_s', 0)})",
            f"throughput_relay_msg_s: {f(br['rate_msg_s'], 0)} msg/s (fully received by {a.relay_clients} "
            f"opted-in clients via minimix; runs {vals(br, 'rate_msg_s', 0)})",
            f"throughput_ratio: {f(ratio(br['rate_msg_s'], bd['rate_msg_s']))} x (relay / direct; paired "
            f"{f(med['paired']['rate'])} x; no target)",
            f"throughput_direct_cpu_pct: Prosody {f(bd['prosody_cpu_pct'], 0)} % "
            f"({f(bd['prosody_cpu_ms_per_msg'], 3)} ms/msg); bench clients {f(bd['bench_cpu_pct'], 0)} %",
            f"throughput_relay_cpu_pct: Prosody {f(br['prosody_cpu_pct'], 0)} % "
            f"({f(br['prosody_cpu_ms_per_msg'], 3)} ms/msg), daemon {f(br['daemon_cpu_pct'], 0)} % "
            f"({f(br['daemon_cpu_ms_per_msg'], 3)} ms/msg); bench clients {f(br['bench_cpu_pct'], 0)} %",
            f"relay_daemon_vs_prosody_cpu: {f(vs_prosody)} x (daemon / Prosody CPU per message in the relay "
            f"blast; target < {TARGETS['relay_daemon_vs_prosody']}: Prosody saturates first; "
            f"here {bottleneck or '-'} saturates first)",
        ]
        hd, hr = med["gc_held"]["direct"], med["gc_held"]["relay"]
        lines += [
            f"prosody_alloc_kb_per_msg: direct {f(hd['prosody_alloc_kb_per_msg'], 1)} KB, relay "
            f"{f(hr['prosody_alloc_kb_per_msg'], 1)} KB ({f(ratio(hr['prosody_alloc_kb_per_msg'], hd['prosody_alloc_kb_per_msg']))} x; "
            f"diagnostic: Prosody's Lua heap growth per latency message, its collector held off for one "
            f"more run of each mode after the measured ones; no target)",
            f"relay_latency_gc_held_p50_ms: direct {f(hd['p50_ms'])} ms, relay {f(hr['p50_ms'])} ms "
            f"({f(ratio(hr['p50_ms'], hd['p50_ms']))} x; p99 {f(ratio(hr['p99_ms'], hd['p99_ms']))} x; "
            f"the same diagnostic runs: the latency without the collector's steps; no target)",
        ]
        ld = med["latency_direct"]
        for mode in self.latency_modes[2:]:
            lf = med[f"latency_{mode}"]
            lines.append(
                f"relay_latency_{mode.replace('-', '_')}_p50_ms: {f(lf['p50_ms'])} ms ({f(ratio(lf['p50_ms'], ld['p50_ms']))} x "
                f"direct, paired {f(med['paired'][f'{mode}_p50'])} x; p99 {f(lf['p99_ms'])} ms, "
                f"{f(ratio(lf['p99_ms'], ld['p99_ms']))} x; runs {vals(lf, 'p50_ms')}; the raw relay floor "
                f"{'with' if mode.endswith('-sm') else 'without'} stream management, no target)"
            )
        if med["noisy_runs"] or med["noisy_kept"] or med["failed_runs"]:
            lines.append(
                f"relay_noisy_runs: {med['noisy_runs']} repeated, {med['noisy_kept']} kept although "
                f"noisy (least noisy of their attempts), {med['failed_runs']} failed"
            )
        summary = {
            k: {"value": v, "target": t, "met": v is not None and v <= t}
            for k, (v, t) in checks.items()
        }
        summary["relay_daemon_vs_prosody_cpu"]["met"] = vs_prosody is not None and vs_prosody < 1.0
        return lines, summary

    def markdown(self, med: dict, summary: dict) -> str:
        a = self.args
        ld, lr = med["latency_direct"], med["latency_relay"]
        bd, br = med["blast_direct"], med["blast_relay"]
        hd, hr = med["gc_held"]["direct"], med["gc_held"]["relay"]
        ok = lambda k: "✅" if summary[k]["met"] else "❌"  # noqa: E731
        f = _fmt
        rows = [
            f"| relay, medians of {a.relay_rounds} | direct (O in the room) | via minimix | minimix / direct | target |",
            "|---|---|---|---|---|",
            f"| latency p50 | {f(ld['p50_ms'])} ms | {f(lr['p50_ms'])} ms | {f(ratio(lr['p50_ms'], ld['p50_ms']))}x | ≤ 3x {ok('relay_latency_p50_ratio')} |",
            f"| latency p99 | {f(ld['p99_ms'])} ms | {f(lr['p99_ms'])} ms | {f(ratio(lr['p99_ms'], ld['p99_ms']))}x | ≤ 4x {ok('relay_latency_p99_ratio')} |",
            f"| throughput, {a.blast_messages} msgs to {a.relay_clients} clients | {f(bd['rate_msg_s'], 0)} msg/s | {f(br['rate_msg_s'], 0)} msg/s | {f(ratio(br['rate_msg_s'], bd['rate_msg_s']))}x | |",
            f"| Prosody CPU during the blast | {f(bd['prosody_cpu_pct'], 0)} % ({f(bd['prosody_cpu_ms_per_msg'], 2)} ms/msg) | {f(br['prosody_cpu_pct'], 0)} % ({f(br['prosody_cpu_ms_per_msg'], 2)} ms/msg) | | |",
            f"| daemon CPU during the blast | – | {f(br['daemon_cpu_pct'], 0)} % ({f(br['daemon_cpu_ms_per_msg'], 2)} ms/msg) | | ≤ 1.0 ms/msg {ok('relay_cpu_ms_per_msg')}; < Prosody's {ok('relay_daemon_vs_prosody_cpu')} |",
            f"| diagnostic: Prosody allocates per latency message | {f(hd['prosody_alloc_kb_per_msg'], 1)} KB | {f(hr['prosody_alloc_kb_per_msg'], 1)} KB | {f(ratio(hr['prosody_alloc_kb_per_msg'], hd['prosody_alloc_kb_per_msg']))}x | |",
            f"| diagnostic: latency p50, Prosody's collector held off | {f(hd['p50_ms'])} ms | {f(hr['p50_ms'])} ms | {f(ratio(hr['p50_ms'], hd['p50_ms']))}x | |",
        ]
        for mode in self.latency_modes[2:]:
            lf = med[f"latency_{mode}"]
            sm = "with" if mode.endswith("-sm") else "without"
            rows.append(
                f"| floor: latency p50 of a raw relay of the same format, {sm} stream management "
                f"| {f(ld['p50_ms'])} ms | {f(lf['p50_ms'])} ms | {f(ratio(lf['p50_ms'], ld['p50_ms']))}x | |"
            )
        return "\n".join(rows)


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
