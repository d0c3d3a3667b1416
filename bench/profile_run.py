"""Where a client's time goes: one extra run under py-spy, and a summary of its samples.

`bench/run.py --profile` runs each kind once more (unmeasured) with
`py-spy record --pid PID --idle --format raw` attached right after the process starts (the
first tens of ms of interpreter start-up are missed) until all rooms are joined (observed on
the server), then stops py-spy with SIGINT (it writes its file) and the client with SIGTERM.
py-spy must be installed in the venv (`.venv/bin/pip install py-spy`).

The summary attributes every non-idle sample to the leaf-most frame that matches a category
(as in the perf-floors README), and lists the busiest functions (self and inclusive).
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# (category, regex on "function (file)"), checked leaf first: the first frame matching any
# pattern decides; patterns are tried in this order for that frame.
CATEGORIES = [
    ("import (startup)", r"\(<frozen importlib\._bootstrap(_external)?>\)"),
    (
        "JID stringprep",
        r"\(aioxmpp/(stringprep|structs)\.py\)|\(encodings/idna\.py\)|\(stringprep\.py\)",
    ),
    ("aioxmpp XSO parse/build", r"\(aioxmpp/xso/"),
    ("aioxmpp XML (SAX/serialise)", r"\(aioxmpp/xml\.py\)|\(xml/sax/"),
    ("TLS", r"\(OpenSSL/|\(aioopenssl/"),
    ("aioxmpp stream/protocol", r"\(aioxmpp/(stream|protocol|node|callbacks|tracking|nonza)\.py\)"),
    ("aioxmpp services (muc, pubsub, disco, presence, ...)", r"\(aioxmpp/"),
    (
        "logging (structlog, stdlib, minimix.logging)",
        r"\((structlog/|logging/|minimix/logging\.py)",
    ),
    (
        "minimix store (SQLite: message log, relays in flight, cursors)",
        r"\(minimix/store\.py\)|\(sqlite3/",
    ),
    ("minimix core", r"\(minimix/core/"),
    ("minimix app", r"\(minimix/app\.py\)"),
    ("minimix xmpp edge", r"\(minimix/xmpp/"),
    ("minimix other", r"\(minimix/"),
    ("apscheduler", r"\(apscheduler/"),
    ("bare client", r"\(bare_client\.py\)"),
    ("asyncio", r"\(asyncio/"),
]
# a thread waiting: the event loop in select, a thread-pool worker or a lock
# (what, regex on a frame): share of busy samples with a matching frame anywhere in the stack
INCLUSIVE = [
    ("imports", r"\(<frozen importlib\._bootstrap"),
    (
        "inbound: XMLStream.data_received (TLS, SAX, XSO parse, dispatch)",
        r"^XMLStream\.data_received ",
    ),
    (
        "outbound: _process_outgoing (serialise, TLS)",
        r"^(StanzaStream\.)?_process_outgoing ",  # aioxmpp's, or minimix.xmpp.compat's
    ),
    (
        "logging anywhere (structlog, stdlib logging, minimix.logging)",
        r"\((structlog/|logging/|minimix/logging\.py)",
    ),
    ("apscheduler anywhere", r"\(apscheduler/"),
    ("App._execute (carrying out the core's actions)", r"^App\._execute "),
    ("App._arm (timers: apscheduler add_job)", r"^App\._arm "),
    ("App._update_status", r"^App\._update_status "),
    ("App._write_snapshot", r"^App\._write_snapshot "),
    ("Engine.handle", r"^Engine\.handle "),
    ("Session.join", r"^Session\.join "),
    (
        "Session._inbound_message (room message -> event, serialise the original)",
        r"^Session\._inbound_message ",
    ),
    (
        "Session.relay (build the relay stanzas around the shared payload, enqueue)",
        r"^Session\.relay ",
    ),
    (
        "Session._delivery_tracker / _report (XEP-0198 acks of relays)",
        r"^(Session\._report|on_state_change) ",
    ),
    ("Router.take (log + relay decision)", r"^Router\.take "),
    ("Ledger.acked (acks -> cursors)", r"^Ledger\.acked "),
    ("Store.apply (the ledger's changes)", r"^Store\.apply "),
    ("App._relay (relays in flight, with their place on the wire)", r"^App\._relay "),
    ("Store (any)", r"\(minimix/store\.py\)"),
    ("mam: Archives._filter / page / catch_up", r"\(minimix/xmpp/mam\.py\)"),
    ("Session.catch_up (disco#info of the room, MAM pages, events)", r"^Session\.catch_up"),
    ("Session._features (disco#info of rooms)", r"^Session\._features "),
    ("room_message (room message -> event: serialise the original)", r"^room_message "),
    ("aioxmpp XSO model: parse or serialise (anywhere)", r"\(aioxmpp/xso/"),
    ("aioxmpp serialise (aioxmpp/xml.py, anywhere)", r"\(aioxmpp/xml\.py\)"),
    ("Session._fetch_bookmarks", r"^Session\._fetch_bookmarks"),
    ("aioxmpp.muc (MUCClient and the MUC XSOs)", r"\(aioxmpp/muc/"),
]
_INCL = [(name, re.compile(rx)) for name, rx in INCLUSIVE]
IDLE_LEAF = re.compile(r"\((selectors|threading|queue|concurrent/futures/thread)\.py\)")
_CATS = [(name, re.compile(rx)) for name, rx in CATEGORIES]


def parse_raw(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarize(path: Path, rate: int, top: int = 25) -> str:
    stacks = parse_raw(path)
    total = sum(c for _, c in stacks)
    busy = [(frames, c) for frames, c in stacks if frames and not IDLE_LEAF.search(frames[-1])]
    n_busy = sum(c for _, c in busy)
    cats: collections.Counter[str] = collections.Counter()
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, c in busy:
        self_t[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
        for f in reversed(frames):
            name = next((n for n, rx in _CATS if rx.search(f)), None)
            if name:
                cats[name] += c
                break
        else:
            cats["other (stdlib, C)"] += c
    pct = lambda c: f"{100 * c / n_busy:5.1f} %" if n_busy else "-"  # noqa: E731
    out = [
        f"py-spy samples at {rate} Hz (all threads, idle included): {total} "
        f"(~{total / rate:.2f} thread-s); busy: {n_busy} (~{n_busy / rate:.2f} s CPU)",
        "",
        "share of busy samples by category (leaf-most matching frame):",
    ]
    out += [f"  {pct(c)}  {name}" for name, c in cats.most_common()]
    out += ["", "share of busy samples with a frame of ... anywhere in the stack:"]
    for name, rx in _INCL:
        c = sum(n for frames, n in busy if any(rx.search(f) for f in frames))
        if c:
            out.append(f"  {pct(c)}  {name}")
    out += ["", f"top {top} functions by self time:"]
    out += [f"  {pct(c)}  {f}" for f, c in self_t.most_common(top)]
    out += ["", f"top {top} minimix / bare-client functions by inclusive time:"]
    own = [(f, c) for f, c in incl.items() if "(minimix/" in f or "(bare_client.py)" in f]
    out += [f"  {pct(c)}  {f}" for f, c in sorted(own, key=lambda x: -x[1])[:top]]
    return "\n".join(out) + "\n"


def profile_pid(pid: int, work, stem: Path, head: str, rate: int = 200) -> str:
    """Attach py-spy to a running process `pid`, call `work()`, stop py-spy (SIGINT: it
    writes its file); returns the summary (also written to STEM.txt; samples in STEM.raw)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return "py-spy not installed: .venv/bin/pip install py-spy\n"
    raw = Path(f"{stem}.raw")
    raw.unlink(missing_ok=True)
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--idle", "--nolineno", "-r", str(rate),
         "-f", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(0.5)  # attached and sampling
    if spy.poll() is not None:
        return f"py-spy failed: {spy.communicate()[1][-500:]}\n"
    try:
        work()
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
    if not raw.exists():
        return head + "\npy-spy wrote no output\n"
    text = head + "\n" + summarize(raw, rate)
    Path(f"{stem}.txt").write_text(text)
    return text


def run_profiled(bench, kind: str, outdir: Path, rate: int = 200) -> str:
    """One run of `kind` with py-spy attached from its start until all rooms are joined;
    returns the summary. (py-spy's own launcher would SIGKILL the client when stopped,
    leaving a hibernating XEP-0198 session in the rooms, so it attaches instead.)"""
    py_spy = shutil.which("py-spy", path=str(Path(bench.python).parent)) or shutil.which("py-spy")
    if py_spy is None:
        return "py-spy not installed: .venv/bin/pip install py-spy\n"
    srv, n = bench.srv, bench.n
    srv.wait_rooms_empty()
    resource = f"{kind}-profile"
    full = f"{bench.account.jid}/{resource}"
    raw = outdir / f"profile-{kind}.raw"
    raw.unlink(missing_ok=True)
    p = bench.make_process(kind, resource)
    p.start()
    spy = None
    attach_deadline = time.monotonic() + 5
    while spy is None and time.monotonic() < attach_deadline and p.running:
        attempt = subprocess.Popen(
            [py_spy, "record", "--pid", str(p.pid), "--idle", "--nolineno", "-r", str(rate),
             "-f", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        time.sleep(0.05)
        if attempt.poll() is None:
            spy = attempt  # attached and sampling
        else:
            attempt.communicate()
    deadline = time.monotonic() + bench.args.join_timeout
    while srv.join_time(full, n) is None and p.running and time.monotonic() < deadline:
        time.sleep(0.05)
    joined = srv.join_time(full, n)
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # stops sampling and writes the file
        try:
            spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
    p.stop(signal.SIGTERM, timeout=30)
    head = (
        f"{kind}: start -> all {n} joined {joined - p.t_start:.2f} s under py-spy (slower than unprofiled)\n"
        if joined
        else f"{kind}: did not join all rooms under py-spy\n"
    )
    if not raw.exists():
        return head + "py-spy wrote no output\n"
    text = head + summarize(raw, rate)
    (outdir / f"profile-{kind}.txt").write_text(text)
    return text
