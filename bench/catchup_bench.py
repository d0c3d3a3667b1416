"""Catch-up section of the bench: the daemon catching up from 20 room archives after a
restart, next to a bare aioxmpp client fetching the same MAM pages; and the store's size.

Setup (on the relay section's Prosody, bench/traffic.py): accounts `cu` (the daemon's) and
`poster` (bob, an occupant of every room); --catchup-rooms rooms, each an autojoin XEP-0402
bookmark of `cu`; the opted-in client `cu/phone` (slixmpp; `relay all`). Then the
*previous run*: bob posts one message in each room, the daemon starts (it learns where each
archive ends), the phone opts in, bob posts one more message in each room (relayed to the
phone: the daemon now has a cursor in each room, and so has the phone), and the daemon is
stopped (SIGTERM). While it is stopped, bob posts --catchup-per-room messages in each room
(interleaved). A copy of the state dir is kept: every measured daemon run starts from it, so
every run catches up the same messages from the same archives (and a noisy run can be
repeated).

Runs (one unmeasured bare warm-up first; then --catchup-rounds rounds, the order rotating).
Before each run Prosody is restarted (data kept; bob rejoins, the phone reconnects), so every
run meets the same server state:

- daemon: state dir restored, `python -m minimix run --config FILE` started, with the phone
  online and opted in; done when the phone has every one of the rooms x per-room relays
  (counted by token, de-duplicated). Time from process start (the bench's clock before the
  fork) to the phone's last arrival. Also: start -> all rooms joined and start -> the last
  `caught up` line, from the daemon's log lines (stamped on arrival).
- bare: bench/bare_catchup.py with the same account (another resource) and the cursors of
  the copied store: the same urn:xmpp:mam:2 queries (after-id, RSM pages of 100, backwards),
  every room at once; done at its `bare caught up` line. Time from process start too.

The ratio is the daemon's median / the bare client's median (target <= 1.5). The store size
is minimix.sqlite3 + its WAL (+ shm, shown apart) once the daemon is quiet after the
catch-up, per 10,000 messages in its log.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import sys
import time
from pathlib import Path

from fixture import BENCH_DIR, REPO, StampedProcess, log
from harness import daemon_config, to_toml
from procstat import cpu_s, hwm_mb, rss_mb
from traffic import (
    CpuWindow,
    TapClient,
    median,
    new_account,
    on_loop,
    post,
    ratio,
    repeat_noisy,
    run_counts,
    store_bytes,
    store_count,
    wait_alive,
    wait_quiet,
    wall,
)

TARGETS = {"catchup_ratio": 1.5}
TARGET_NAMES = ("catchup_ratio",)
NICK = "cu"
DAEMON_RESOURCE = "minimix"


class CatchupBench:
    def __init__(self, args, server, workdir: Path):
        self.args = args
        self.srv = server
        self.workdir = Path(workdir) / "catchup"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.workdir / "state"
        self.snapshot = self.workdir / "state-snapshot"
        self.cursors_file = self.workdir / "cursors.txt"
        self.runs: list[dict] = []
        self.setup: dict = {}
        self.python = sys.executable

    @property
    def total(self) -> int:
        return self.args.catchup_rooms * self.args.catchup_per_room

    # -- setup ------------------------------------------------------------------------

    def prepare(self) -> None:
        a, srv = self.args, self.srv
        t0 = time.monotonic()
        self.account = new_account(srv, "cu")
        poster = new_account(srv, "poster")
        self.rooms = [f"catchup{i:02d}@{srv.muc_domain}" for i in range(a.catchup_rooms)]
        self.full_jid = f"{self.account.jid}/{DAEMON_RESOURCE}"
        self.bob = TapClient(srv, poster, "bob", timeout=120).connect()
        for room in self.rooms:
            self.bob.join(room, "bob")
        self.phone = TapClient(srv, self.account, "phone", timeout=120).connect()
        for room in self.rooms:
            self.phone.publish_bookmark(room, nick=NICK)
        # the previous run: the daemon learns where each archive ends, then relays a message
        # of each room to the phone, and stops
        on_loop(post(self.bob, self.rooms, 1, self.bob.tap("cu-head", "groupchat"), 60), 70)
        cfg = daemon_config(
            srv, self.account, self.state_dir, resource=DAEMON_RESOURCE,
            extra={"logging": {"level": "info"}, "relay": {"catchup_max": a.catchup_per_room}},
        )  # fmt: skip
        self.config_file = self.workdir / "config.toml"
        self.config_file.write_text(to_toml(cfg))
        d = StampedProcess(self.config_file, self.workdir / "previous-run.log", cwd=REPO).start()
        try:
            wait_alive(
                d,
                lambda: all(NICK in self.bob.occupants(room) for room in self.rooms),
                60,
                f"the daemon in all {len(self.rooms)} rooms",
            )
            answer = self._command("relay all")
            if "relay for this client: all" not in answer:
                raise RuntimeError(f"unexpected answer to 'relay all': {answer!r}")
            seen = self.phone.tap("cu-live", "relay", self.full_jid)
            on_loop(post(self.bob, self.rooms, 1, self.bob.tap("cu-live", "groupchat"), 60), 70)
            on_loop(_wait_count(seen, len(self.rooms), 60), 70)
            on_loop(wait_quiet([srv.pid, d.pid]), 60)
        finally:
            d.stop()
        cursors = store_count(
            self.state_dir, "SELECT count(*) FROM room_state WHERE last_stanza_id IS NOT NULL"
        )
        if cursors != len(self.rooms):
            raise RuntimeError(f"the daemon has a cursor in {cursors} of {len(self.rooms)} rooms")
        # missed while the daemon is stopped
        log(
            f"catch-up setup: bob posts {a.catchup_per_room} messages in each of {len(self.rooms)} rooms ..."
        )
        self.setup["post_s"] = round(
            on_loop(
                post(
                    self.bob, self.rooms, a.catchup_per_room, self.bob.tap("cu", "groupchat"), 600
                ),
                620,
            ),
            2,
        )
        self.bob.untap("cu")
        shutil.copytree(self.state_dir, self.snapshot)
        self._write_cursors()
        self.setup["prepare_s"] = round(time.monotonic() - t0, 2)
        self.setup["store_before"] = store_bytes(self.snapshot)
        self.setup["messages_before"] = store_count(self.snapshot, "SELECT count(*) FROM message")
        log(
            f"catch-up setup done ({self.setup['prepare_s']} s; posting {self.setup['post_s']} s): "
            f"the daemon has a cursor in all {len(self.rooms)} rooms and {self.total} messages to catch up"
        )

    def _command(self, text: str) -> str:
        mark = len(self.phone.messages)
        self.phone.send_message(self.full_jid, text)
        answer = self.phone.wait_message(
            lambda m: str(m["from"]) == self.full_jid and m["type"] == "chat",
            since=mark,
            message=f"phone: no answer from the daemon to {text!r}",
        )
        return answer["body"]

    def _write_cursors(self) -> None:
        import sqlite3

        from minimix.store import FILENAME

        db = sqlite3.connect(f"file:{self.snapshot / FILENAME}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT room, last_stanza_id, last_stamp FROM room_state WHERE last_stanza_id IS NOT NULL"
            ).fetchall()
        finally:
            db.close()
        self.cursors_file.write_text("".join(f"{r} {i} {s!r}\n" for r, i, s in rows))

    def stop(self) -> None:
        for c in (getattr(self, "bob", None), getattr(self, "phone", None)):
            if c is not None:
                with contextlib.suppress(Exception):  # best effort at teardown
                    c.disconnect()

    # -- runs -------------------------------------------------------------------------------

    def _restore(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)
        shutil.copytree(self.snapshot, self.state_dir)

    def _fresh_server(self) -> None:
        """Restart Prosody (data and ports kept) and bring bob (back into every room) and the
        phone back: each run meets the same server state. Without this the same MAM fetch
        costs Prosody more CPU after every daemon run (4.3 s, then 7.0 s, then 8.2 s here),
        which skews later rounds."""
        srv = self.srv
        for c in (self.bob, self.phone):
            with contextlib.suppress(Exception):
                c.disconnect()
        srv.restart()
        self.bob = TapClient(srv, self.bob.account, "bob", timeout=120).connect()
        for room in self.rooms:
            self.bob.join(room, "bob")
        self.phone = TapClient(srv, self.account, "phone", timeout=120).connect()

    def run_daemon(self, label: str) -> dict:
        a, srv = self.args, self.srv
        self._restore()
        self._fresh_server()
        on_loop(wait_quiet([srv.pid]), 60)
        tap = self.phone.tap("cu", "relay", self.full_jid)
        untapped0 = self.phone.untapped
        p = StampedProcess(self.config_file, self.workdir / f"daemon-{label}.log", cwd=REPO)
        window = CpuWindow({"prosody": srv.pid})
        window.start()
        p.start()
        error = None
        try:
            on_loop(_wait_count(tap, self.total, a.catchup_timeout), a.catchup_timeout + 10)
        except TimeoutError:
            error = f"timeout: the phone has {tap.count} of {self.total} relays"
        cpu_done = cpu_s(p.pid) if p.running else None
        rss = rss_mb(p.pid) if p.running else None
        cpu = window.stop({"daemon": cpu_done or 0.0})
        settle = on_loop(wait_quiet([srv.pid, p.pid], timeout=60), 70) if p.running else None
        sizes = store_bytes(self.state_dir)
        messages = store_count(self.state_dir, "SELECT count(*) FROM message")
        hwm = hwm_mb(p.pid) if p.running else None
        cpu_settled = cpu_s(p.pid) if p.running else None
        p.stop(signal.SIGTERM, timeout=30)
        self.phone.untap("cu")
        sizes_after_stop = store_bytes(self.state_dir)
        t0 = p.t_start
        joined = p.all_joined(len(self.rooms))
        caught = p.times(r"\bcaught up\b")
        more = sum(int(m.group(1)) for m in p.matches(r"\bcaught up\b.*\bmore=(\d+)"))
        n = len(self.rooms)
        rec = {
            "kind": "daemon",
            "label": label,
            "error": error,
            "received": tap.count,
            "duplicates": tap.duplicates,
            "unexpected": tap.unexpected,
            "other_relays": self.phone.untapped - untapped0,  # relays of other runs (playback)
            "done_s": wall(tap.last) - t0 if tap.count >= self.total else None,
            "connected_s": _first(p.times(r"session established"), t0),
            "joined_s": joined - t0 if joined is not None else None,
            "caught_up_s": caught[-1] - t0 if len(caught) >= n else None,
            "caught_up_lines": len(caught),
            "caught_up_more": more,
            "cpu_done_s": cpu_done,
            "cpu_settled_s": cpu_settled,
            "rss_mb": rss,
            "hwm_mb": hwm,
            "settle_s": settle,
            "store": sizes,
            "store_after_stop": sizes_after_stop,
            "store_messages": messages,
            **{k: round(v, 3) for k, v in cpu.items()},
        }
        rec["other_share"] = cpu["other_cpu_s"] / cpu["wall_s"] if cpu["wall_s"] else 0
        return rec

    def run_bare(self, label: str, kind: str = "bare") -> dict:
        a, srv = self.args, self.srv
        self._fresh_server()
        on_loop(wait_quiet([srv.pid]), 60)
        argv = [
            self.python, str(BENCH_DIR / "bare_catchup.py"),
            "--jid", f"{self.account.jid}/bare-{label}",
            "--password", self.account.password,
            "--host", srv.host, "--port", str(srv.port), "--ca-file", str(srv.ca_file),
            "--cursors-file", str(self.cursors_file),
            "--limit", str(a.catchup_per_room),
            *(["--read-raw"] if kind == "bare-raw" else []),
        ]  # fmt: skip
        p = StampedProcess(
            self.cursors_file, self.workdir / f"bare-{label}.log", argv=argv, cwd=REPO
        )
        window = CpuWindow({"prosody": srv.pid})
        window.start()
        p.start()
        deadline = time.monotonic() + a.catchup_timeout
        done = None
        while time.monotonic() < deadline and p.running:
            done = p.matches(
                r"^bare caught up n=(\d+) rooms=(\d+) more=(\d+) errors=(\d+) t=([\d.]+)"
            )
            if done:
                break
            time.sleep(0.02)
        cpu_done = cpu_s(p.pid) if p.running else None
        rss = rss_mb(p.pid) if p.running else None
        cpu = window.stop({"bare": cpu_done or 0.0})
        p.stop(signal.SIGTERM, timeout=30)
        rec = {"kind": kind, "label": label, "error": None, "cpu_done_s": cpu_done, "rss_mb": rss}
        if not done:
            rec["error"] = "no 'bare caught up' line: " + " | ".join(p.lines[-5:])
        else:
            m = done[0]
            rec.update(
                received=int(m.group(1)),
                caught_up_more=int(m.group(3)),
                errors=int(m.group(4)),
                done_s=float(m.group(5)) - p.t_start,
                connected_s=_first(p.times(r"^bare connected"), p.t_start),
            )
            if rec["received"] != self.total or rec["errors"]:
                rec["error"] = (
                    f"fetched {rec['received']} of {self.total}, {rec['errors']} rooms failed"
                )
        rec.update({k: round(v, 3) for k, v in cpu.items()})
        rec["other_share"] = cpu["other_cpu_s"] / cpu["wall_s"] if cpu["wall_s"] else 0
        return rec

    def _repeat_noisy(self, kind: str, label: str, warmup: bool = False) -> dict:
        a = self.args
        fn = self.run_daemon if kind == "daemon" else functools.partial(self.run_bare, kind=kind)

        def one(attempt: int) -> dict:
            rec = fn(label + (f"try{attempt + 1}" if attempt else ""))
            rec["warmup"] = warmup
            return rec

        def show(rec: dict) -> None:
            tag = " (warm-up)" if warmup else rec.get("_tag", "")
            lab = rec["label"]
            if rec["error"]:
                log(f"catch-up {kind} {lab}: {rec['error']}{tag}")
                return
            extra = (
                f" (joined {_fmt(rec['joined_s'])} s, last 'caught up' {_fmt(rec['caught_up_s'])} s)"
                if kind == "daemon"
                else ""
            )
            log(
                f"catch-up {kind:8} {lab}: {rec['received']} messages in {_fmt(rec['done_s'])} s"
                f"{extra}; CPU {_fmt(rec['cpu_done_s'])} s; other CPU {rec['other_share']:.2f} core{tag}"
            )

        retries = 0 if warmup else a.catchup_noise_retries
        return repeat_noisy(one, retries, a.noise_limit, self.runs.append, show)

    def measure(self) -> None:
        a = self.args
        self._repeat_noisy("bare", "warmup", warmup=True)
        kinds = ["bare", "daemon", *(["bare-raw"] if a.raw_floor else [])]
        for r in range(a.catchup_rounds):
            k = r % len(kinds)
            for kind in kinds[k:] + kinds[:k]:
                rec = self._repeat_noisy(kind, f"round{r + 1}")
                rec["round"] = r + 1

    def profile(self, outdir: Path) -> str:
        """One more daemon catch-up with py-spy attached from its start (unmeasured)."""
        import subprocess

        from profile_run import summarize as spy_summary

        py_spy = shutil.which("py-spy", path=str(Path(self.python).parent)) or shutil.which(
            "py-spy"
        )
        if py_spy is None:
            return "py-spy not installed\n"
        self._restore()
        self._fresh_server()
        tap = self.phone.tap("cu", "relay", self.full_jid)
        p = StampedProcess(self.config_file, self.workdir / "daemon-profile.log", cwd=REPO).start()
        raw = outdir / "profile-catchup-daemon.raw"
        raw.unlink(missing_ok=True)
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(p.pid), "--idle", "--nolineno", "-r", "200",
             "-f", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            on_loop(
                _wait_count(tap, self.total, self.args.catchup_timeout),
                self.args.catchup_timeout + 10,
            )
        done = wall(tap.last) - p.t_start if tap.count >= self.total else None
        spy.send_signal(signal.SIGINT)
        try:
            spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
        p.stop(signal.SIGTERM, timeout=30)
        self.phone.untap("cu")
        head = (
            f"daemon catching up {self.total} messages from {len(self.rooms)} rooms and relaying them "
            f"(py-spy from the start, unmeasured run: done in {_fmt(done)} s)"
        )
        if not raw.exists():
            return head + "\npy-spy wrote no output\n"
        text = head + "\n" + spy_summary(raw, 200)
        (outdir / "profile-catchup-daemon.txt").write_text(text)
        return text

    # -- report ------------------------------------------------------------------------------

    def summarize(self) -> dict:
        kept = [r for r in self.runs if not r["warmup"] and not r["discarded"] and not r["error"]]
        keys = ["done_s", "connected_s", "joined_s", "caught_up_s", "cpu_done_s", "cpu_settled_s", "rss_mb",
                "prosody_cpu_s", "other_share"]  # fmt: skip
        med: dict = {}
        for kind in ("bare", "daemon", "bare-raw"):
            runs = [r for r in kept if r["kind"] == kind]
            med[kind] = {k: median([r.get(k) for r in runs]) for k in keys}
            med[kind]["values"] = {k: [r.get(k) for r in runs] for k in keys}
            med[kind]["runs"] = len(runs)
        dmn = [r for r in kept if r["kind"] == "daemon"]
        per10k = []
        per10k_stopped = []
        for r in dmn:
            if r["store_messages"]:
                k = r["store_messages"] / 10_000
                per10k.append((r["store"]["db"] + r["store"]["db_wal"]) / k)
                per10k_stopped.append(sum(r["store_after_stop"].values()) / k)
        med["store_per_10k_bytes"] = median(per10k)
        med["store_per_10k_stopped_bytes"] = median(per10k_stopped)
        med["store_shm_bytes"] = median([r["store"]["db_shm"] for r in dmn])
        med["store_messages"] = median([r["store_messages"] for r in dmn])
        med["duplicates"] = sum(r["duplicates"] for r in dmn)
        med["other_relays"] = sum(r["other_relays"] for r in dmn)
        by_round: dict[int, dict[str, float]] = {}
        for r in kept:
            if "round" in r and r.get("done_s"):
                by_round.setdefault(r["round"], {})[r["kind"]] = r["done_s"]
        med["paired"] = median(
            [v["daemon"] / v["bare"] for v in by_round.values() if "daemon" in v and v.get("bare")]
        )
        med.update(run_counts(self.runs))
        return med

    def report(self, med: dict) -> tuple[list[str], dict]:
        a = self.args
        bare, dmn = med["bare"], med["daemon"]
        r = ratio(dmn["done_s"], bare["done_s"])
        f = _fmt

        def vals(kind, k):
            return "/".join(f(x) for x in med[kind]["values"][k])

        mb = lambda b: None if b is None else b / 1e6  # noqa: E731
        lines = [
            f"catchup_bare_s: {f(bare['done_s'])} s (start -> {self.total} messages fetched: {len(self.rooms)} rooms x "
            f"{a.catchup_per_room}, mam:2 after-id, RSM pages of 100; runs {vals('bare', 'done_s')})",
            f"catchup_daemon_s: {f(dmn['done_s'])} s (start -> the opted-in client has all {self.total} relays; "
            f"runs {vals('daemon', 'done_s')})",
            f"catchup_ratio: {f(r)} x (target <= {TARGETS['catchup_ratio']}; paired {f(med['paired'])} x)",
            f"catchup_daemon_joined_s: {f(dmn['joined_s'])} s (start -> all {len(self.rooms)} rooms joined)",
            f"catchup_daemon_fetched_s: {f(dmn['caught_up_s'])} s (start -> the last 'caught up' line: every "
            f"archive read, logged and handed to the relay)",
            f"catchup_cpu_bare_s: {f(bare['cpu_done_s'])} s (client CPU, start -> done)",
            f"catchup_cpu_daemon_s: {f(dmn['cpu_done_s'])} s (client CPU, start -> done; "
            f"{f(dmn['cpu_settled_s'])} s once quiet: "
            f"{f(None if dmn['cpu_settled_s'] is None else 1000 * dmn['cpu_settled_s'] / self.total, 3)} ms per message)",
            f"catchup_prosody_cpu_s: bare run {f(bare['prosody_cpu_s'])} / daemon run {f(dmn['prosody_cpu_s'])} s "
            "(Prosody's CPU from start to done)",
            f"catchup_rss_mb: bare {f(bare['rss_mb'], 1)} / daemon {f(dmn['rss_mb'], 1)} MB (at done)",
            f"store_bytes_per_10k_msgs: {f(mb(med['store_per_10k_bytes']))} MB (minimix.sqlite3 + WAL once quiet "
            f"after the catch-up, per 10,000 messages in the log ({f(med['store_messages'], 0)}); no target)",
            f"store_bytes_per_10k_msgs_stopped: {f(mb(med['store_per_10k_stopped_bytes']))} MB (after the daemon "
            f"stopped: WAL checkpointed into the database; shm {f(mb(med['store_shm_bytes']), 3)} MB while running)",
        ]
        if med["bare-raw"]["runs"]:
            raw = med["bare-raw"]
            lines.append(
                f"catchup_bare_raw_s: {f(raw['done_s'])} s (--raw-floor: the bare client reading the results as "
                f"the daemon does, without XSOs; runs {vals('bare-raw', 'done_s')}; CPU {f(raw['cpu_done_s'])} s; "
                f"minimix / it: {f(ratio(dmn['done_s'], raw['done_s']))} x)"
            )
        if med["duplicates"] or med["other_relays"]:
            lines.append(
                f"catchup_duplicates: {med['duplicates']} duplicate relays, {med['other_relays']} relays of "
                "older messages (playback) over all daemon runs"
            )
        if med["noisy_runs"] or med["noisy_kept"] or med["failed_runs"]:
            lines.append(
                f"catchup_noisy_runs: {med['noisy_runs']} repeated, {med['noisy_kept']} kept although "
                f"noisy (least noisy of their attempts), {med['failed_runs']} failed"
            )
        summary = {"catchup_ratio": {"value": r, "target": TARGETS["catchup_ratio"],
                                     "met": r is not None and r <= TARGETS["catchup_ratio"]}}  # fmt: skip
        return lines, summary

    def markdown(self, med: dict, summary: dict) -> str:
        a = self.args
        bare, dmn = med["bare"], med["daemon"]
        f = _fmt
        ok = "✅" if summary["catchup_ratio"]["met"] else "❌"
        mb = med["store_per_10k_bytes"]
        rows = [
            f"| catch-up {len(self.rooms)} rooms x {a.catchup_per_room}, medians of {a.catchup_rounds} | bare aioxmpp (MAM pages only) | minimix (until the client has every relay) | minimix / bare | target |",
            "|---|---|---|---|---|",
            f"| start → done | {f(bare['done_s'])} s | {f(dmn['done_s'])} s | {f(ratio(dmn['done_s'], bare['done_s']))}x | ≤ 1.5x {ok} |",
            f"| client CPU until done | {f(bare['cpu_done_s'])} s | {f(dmn['cpu_done_s'])} s | {f(ratio(dmn['cpu_done_s'], bare['cpu_done_s']))}x | |",
            f"| store per 10,000 messages (db + WAL) | – | {f(None if mb is None else mb / 1e6)} MB | | |",
        ]
        return "\n".join(rows)


async def _wait_count(tap, n: int, timeout: float) -> float:
    import asyncio

    return await asyncio.wait_for(tap.expect_count(n), timeout)


def _first(times: list[float], t0: float | None) -> float | None:
    return times[0] - t0 if times and t0 is not None else None


def _fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
