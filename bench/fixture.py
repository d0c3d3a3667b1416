"""The bench's throwaway Prosody: server, accounts, N persistent rooms and N bookmarks.

Reuses the test harness (tests/servers, tests/harness); only the bench-specific parts are
here: a high muc_room_cache_size, a high pep_max_items, the server-side probe module
(prosody_probe/mod_bench_probe.lua) and the pipelined room creation / bookmark publishing.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "tests"))

import slixmpp  # noqa: E402

from harness import BOOKMARKS_NODE, DaemonProcess, TestClient  # noqa: E402
from harness.client import Room, run  # noqa: E402
from harness.stanzas import NS, attr, escape, muc_codes, parse  # noqa: E402
from servers import Account, ProsodyOptions, ProsodyServer  # noqa: E402

MUC_ROOM_CACHE_SIZE = 5000
PIPELINE = 50  # requests in flight while setting up


def log(msg: str) -> None:
    """A progress line of the bench (figures are the lines without the leading #)."""
    print(f"# {msg}", flush=True)


@dataclass
class ProbeEvent:
    t: float
    kind: str  # "bind" | "join"
    jid: str
    n: int = 0


class BenchServer:
    """A ProsodyServer with the probe, for N rooms."""

    def __init__(self, workdir: Path, rooms: int):
        self.n_rooms = rooms
        self.probe_file = Path(workdir) / "probe.log"
        extra = "\n".join(
            [
                # PEP caps a node at 256 items by default; "max" means this value.
                f"pep_max_items = {max(5000, rooms * 2)}",
                f'bench_probe_file = "{self.probe_file}"',
                f"bench_probe_target = {rooms}",
            ]
        )
        self.options = ProsodyOptions(
            muc_room_cache_size=max(MUC_ROOM_CACHE_SIZE, rooms * 2),
            plugin_paths=(str(BENCH_DIR / "prosody_probe"),),
            modules=("bench_probe",),
            muc_modules=("bench_probe",),
            extra_config=extra,
            log_level="warn",
            # mod_bookmarks is loaded after the bookmarks are published (load_bookmarks_module):
            # with it, every publish also rebuilds the legacy copy of the whole list.
            bookmarks=False,
        )
        self.server = ProsodyServer(Path(workdir) / "prosody", options=self.options)
        self.rooms = [f"bench{i:05d}@{self.server.muc_domain}" for i in range(rooms)]

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def pid(self) -> int | None:
        return self.server.pid

    def load_bookmarks_module(self) -> None:
        """Hot-load mod_bookmarks (XEP-0402 <-> XEP-0048 compat, as Prosody 0.12's default
        config has it): from now on the server announces urn:xmpp:bookmarks:1#compat."""
        self.server.shell(f'module:load("bookmarks", "{self.server.domain}")')
        self.server.bookmarks_compat = True

    # -- probe -------------------------------------------------------------------------

    def probe_events(self) -> list[ProbeEvent]:
        if not self.probe_file.exists():
            return []
        events = []
        for line in self.probe_file.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                n = int(parts[3]) if len(parts) > 3 else 0
                events.append(ProbeEvent(float(parts[0]), parts[1], parts[2], n))
        return events

    def bind_time(self, full_jid: str) -> float | None:
        return next(
            (e.t for e in self.probe_events() if e.kind == "bind" and e.jid == full_jid), None
        )

    def join_time(self, full_jid: str, n: int) -> float | None:
        return next(
            (
                e.t
                for e in self.probe_events()
                if e.kind == "join" and e.jid == full_jid and e.n == n
            ),
            None,
        )

    # -- server-side state -------------------------------------------------------------

    def occupancy(self) -> tuple[int, int]:
        """(live rooms, occupants in them), from the admin shell."""
        text = self.server.shell(
            ">local muc = prosody.hosts["
            + f'"{self.server.muc_domain}"'
            + "].modules.muc; local r, o = 0, 0; "
            "for room in muc.live_rooms() do r = r + 1; "
            "for _ in room:each_occupant() do o = o + 1 end end; "
            "return r .. ' ' .. o"
        )
        m = re.search(r"(\d+) (\d+)", text)
        if not m:
            raise RuntimeError(f"unexpected shell output: {text!r}")
        return int(m.group(1)), int(m.group(2))

    def wait_rooms_empty(self, timeout: float = 60.0) -> float:
        """Wait until no room has an occupant; returns how long it took."""
        t0 = time.monotonic()
        while True:
            _, occupants = self.occupancy()
            if occupants == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{occupants} occupants still in the rooms after {timeout} s")
            time.sleep(0.1)

    # -- population --------------------------------------------------------------------

    def new_account(self, localpart: str) -> Account:
        password = f"pw-{localpart}-bench"
        return Account(self.server.register(localpart, password), localpart, password)

    def create_rooms(self, owner: Account) -> float:
        """The owner joins every room (creating it: persistent by the server's defaults),
        pipelined, then leaves them all. Returns the seconds it took."""
        t0 = time.monotonic()
        c = TestClient(self.server, owner, "creator", timeout=120).connect(presence=False)
        try:
            _pipelined_presences(c, self.rooms, "owner", join=True)
            _pipelined_presences(c, self.rooms, "owner", join=False)
        finally:
            c.disconnect()
        return time.monotonic() - t0

    def publish_bookmarks(self, account: Account, nick: str | None = None) -> float:
        """Publish one autojoin XEP-0402 bookmark per room for `account` (with the
        XEP-0402 publish-options), pipelined; checks they are all stored."""
        t0 = time.monotonic()
        c = TestClient(self.server, account, "bookmarker", timeout=120).connect(presence=False)
        try:
            options = {
                "pubsub#persist_items": "true",
                "pubsub#max_items": "max",
                "pubsub#send_last_published_item": "never",
                "pubsub#access_model": "whitelist",
            }
            form = (
                f"<x xmlns='{NS['data']}' type='submit'><field var='FORM_TYPE' type='hidden'>"
                "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
                + "".join(
                    f"<field var={attr(k)}><value>{escape(v)}</value></field>"
                    for k, v in options.items()
                )
                + "</x>"
            )
            nick_xml = f"<nick>{escape(nick)}</nick>" if nick else ""
            iqs = [
                f"<iq type='set'><pubsub xmlns='{NS['pubsub']}'><publish node='{BOOKMARKS_NODE}'>"
                f"<item id={attr(room)}><conference xmlns='{BOOKMARKS_NODE}' autojoin='true' "
                f"name={attr(f'Bench room {i}')}>{nick_xml}</conference></item></publish>"
                f"<publish-options>{form}</publish-options></pubsub></iq>"
                for i, room in enumerate(self.rooms)
            ]
            _pipelined_iqs(c, iqs)
            stored = c.get_bookmarks()
            missing = set(self.rooms) - set(stored)
            if missing:
                raise RuntimeError(f"{len(missing)} bookmarks missing after publishing")
        finally:
            c.disconnect()
        return time.monotonic() - t0


def _pipelined_iqs(c: TestClient, iqs: list[str], timeout: float = 300.0) -> None:
    x = c.xmpp

    async def all_of_them():
        sem = asyncio.Semaphore(PIPELINE)

        async def one(i: int, xml: str):
            async with sem:
                iq = slixmpp.Iq(x, xml=parse(xml))
                iq["id"] = f"bench-iq-{i}"
                await iq.send(timeout=timeout)

        await asyncio.gather(*(one(i, xml) for i, xml in enumerate(iqs)))

    run(all_of_them(), timeout)


def _pipelined_presences(
    c: TestClient, rooms: list[str], nick: str, join: bool, timeout: float = 300.0
) -> None:
    """Join (or leave) `rooms` with PIPELINE presences in flight; waits for every
    self-presence (status 110)."""
    x = c.xmpp
    loop_futures: dict[str, asyncio.Future] = {}

    async def all_of_them():
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(PIPELINE)

        def on_presence(p):
            room = str(p["from"]).split("/", 1)[0]
            fut = loop_futures.get(room)
            if fut is None or fut.done():
                return
            if p["type"] == "error":
                fut.set_exception(RuntimeError(f"{room}: {p['error']['condition']}"))
            elif 110 in muc_codes(p) and (p["type"] == "unavailable") != join:
                fut.set_result(p)

        x.add_event_handler("presence", on_presence)
        try:

            async def one(room: str):
                async with sem:
                    fut = loop_futures[room] = loop.create_future()
                    to = attr(f"{room}/{nick}")
                    if join:
                        x.send_raw(
                            f"<presence to={to}><x xmlns='{NS['muc']}'>"
                            "<history maxstanzas='0'/></x></presence>"
                        )
                    else:
                        x.send_raw(f"<presence type='unavailable' to={to}/>")
                    await fut

            await asyncio.gather(*(one(r) for r in rooms))
        finally:
            x.del_event_handler("presence", on_presence)

    with c._lock:
        for room in rooms:
            if join:
                c.rooms[room] = Room(room, nick)
            else:
                c.rooms.pop(room, None)
    run(all_of_them(), timeout)


# -- processes ----------------------------------------------------------------------------


class StampedProcess(DaemonProcess):
    """The harness's process runner, with the arrival time (time.time) of every output
    line and the start time taken just before the fork."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stamped: list[tuple[float, str]] = []
        self.t_start: float | None = None

    def start(self):
        self.t_start = time.time()
        return super().start()

    def _read(self) -> None:
        with open(self.log_file, "a", encoding="utf-8") as out:
            for line in self.proc.stdout:
                t = time.time()
                line = line.rstrip("\n")
                self.stamped.append((t, line))
                self.on_line(t, line)
                self.lines.append(line)
                out.write(f"{t:.6f} {line}\n")  # buffered: the bench must stay cheap

    def on_line(self, t: float, line: str) -> None:
        """Called for each output line as it arrives (in the reader thread)."""

    def first(self, pattern: str) -> float | None:
        rx = re.compile(pattern)
        return next((t for t, line in list(self.stamped) if rx.search(line)), None)

    def times(self, pattern: str) -> list[float]:
        rx = re.compile(pattern)
        return [t for t, line in list(self.stamped) if rx.search(line)]

    def all_joined(self, n: int) -> float | None:
        """When the daemon's log says all n rooms are joined: the n-th `room state ...
        to=joined` line, counting a mass join's one `rooms joined rooms=K` line as K."""
        rx = re.compile(r"room state .*\bto=joined\b|\brooms joined rooms=(?P<add>\d+)")
        count = 0
        for t, line in list(self.stamped):
            if m := rx.search(line):
                count += int(m["add"]) if m["add"] else 1
                if count >= n:
                    return t
        return None

    def matches(self, pattern: str) -> list[re.Match]:
        rx = re.compile(pattern)
        return [m for _, line in list(self.stamped) if (m := rx.search(line))]
