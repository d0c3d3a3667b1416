"""The server-fixture interface shared by the Prosody and ejabberd implementations."""

from __future__ import annotations

import abc
import atexit
import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .root import chrooted

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


_live: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Safety net if a fixture's teardown never ran: never leave a server behind."""
    for proc in list(_live):
        stop_process(proc, signal.SIGKILL)


class ServerError(RuntimeError):
    """A server did not start, stop or answer; the message carries its log."""


@dataclass(frozen=True)
class Account:
    jid: str
    localpart: str
    password: str


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(inode)
    return inodes


def owns_listener(pid: int, port: int) -> bool:
    """True if process `pid` holds the socket listening on `port`.

    Guards against a lost port race: another test run's server on "our" free port would
    otherwise pass the readiness probe.
    """
    inodes = _listening_inodes(port)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m and m.group(1) in inodes:
            return True
    return False


def offers_starttls(host: str, port: int, domain: str, timeout: float = 2.0) -> bool:
    """One probe: open a c2s stream and look for <starttls/> in the stream features."""
    header = (
        f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(header.encode())
            data = b""
            while b"</stream:features>" not in data and b"</stream:stream>" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return b"starttls" in data
    except OSError:
        return False


def stop_process(
    proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT
) -> int:
    """Signal `proc`, wait up to `timeout`, then SIGKILL it; finally SIGKILL whatever is
    left of its process group (it was started with start_new_session=True)."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # helpers such as erl_child_setup
    _live.discard(proc)
    return proc.returncode


def run_quiet(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a short helper command, raising ServerError with its output if it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if r.returncode != 0:
        raise ServerError(
            f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
        )
    return r


class XmppServer(abc.ABC):
    """A private XMPP server for tests, on loopback, on free ports, in its own workdir.

    Capability facts (class attributes) let tests branch on known server differences.
    """

    kind: str
    domain = "localhost"
    muc_domain = "conference.localhost"
    host = "127.0.0.1"
    #: a second virtual host whose certificate does not name it (None if not provided)
    mismatch_domain: str | None = None
    #: the server syncs legacy and PEP bookmarks (announces urn:xmpp:bookmarks:1#compat)
    bookmarks_compat = False
    #: +notify resources get <retract/> notifications for bookmarks:1
    retract_notifications = False
    #: room archives announce urn:xmpp:mam:2#extended (after-id / before-id)
    mam_extended = False
    push = False  # XEP-0357: the server wakes a client that enabled push
    #: room archives answer with an RSM <count/> (Prosody 13.0's default storage gives none)
    mam_counts = True
    #: the Debian 13 root the server runs from (servers.root); None: this host's packages
    root: Path | None = None

    def __init__(self, workdir: Path | None = None):
        """`workdir` holds config, certificates, data and logs (default: a new temp dir)."""
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"minimix-{self.kind}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port: int = 0
        self.ca_file: Path = self.workdir / "certs" / "ca.crt"
        #: a CA that signed nothing: a client trusting only it must refuse the server
        self.wrong_ca_file: Path = self.workdir / "certs" / "wrong-ca.crt"
        self.proc: subprocess.Popen | None = None
        self._names = itertools.count(1)
        self._rooms = itertools.count(1)
        self._started_once = False

    # -- to implement -----------------------------------------------------------------

    @abc.abstractmethod
    def _setup(self) -> None:
        """Create certificates and data dirs (once, before the first start)."""

    @abc.abstractmethod
    def _write_config(self) -> None:
        """Write the config for the current ports."""

    @abc.abstractmethod
    def _launch(self) -> subprocess.Popen:
        """Start the server process (start_new_session=True) on self.port."""

    @abc.abstractmethod
    def register(self, localpart: str, password: str, domain: str | None = None) -> str:
        """Create an account; returns its bare JID."""

    @abc.abstractmethod
    def logs(self) -> str:
        """The server's log text, for failure messages."""

    def _command(self, argv: list[str]) -> list[str]:
        """`argv` as it runs for this server: from its root, if it has one."""
        return chrooted(self.root, self.workdir, argv) if self.root else argv

    def _pick_ports(self) -> None:
        self.port = free_port(self.host)

    def _ports(self) -> list[int]:
        return [self.port]

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None

    def start(self) -> None:
        """Start (on free ports the first time, the same ports afterwards) and wait until
        c2s offers STARTTLS. Raises ServerError with the server log if it does not."""
        if self.running:
            return
        if not self.port:
            self._setup()
        for _attempt in range(3):
            if not self.port:
                self._pick_ports()
                self._write_config()
            self.proc = self._launch()
            _live.add(self.proc)
            outcome = self._wait_ready()
            if outcome == "ready":
                return
            stop_process(self.proc, signal.SIGKILL)
            self.proc = None
            if outcome != "port taken" or self._started_once:
                break
            self.port = 0  # another server grabbed our free port: pick new ones
        raise ServerError(
            f"{self.kind} did not come up on {self.host}:{self.port} ({outcome})\n{self.log_tail()}"
        )

    def _wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._port_taken():
                return "port taken"
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode}"
            if offers_starttls(self.host, self.port, self.domain) and all(
                owns_listener(self.proc.pid, p) for p in self._ports()
            ):
                self._started_once = True
                return "ready"
            time.sleep(0.05)
        return f"not ready after {timeout:.0f} s"

    def _port_taken(self) -> bool:
        pid = self.proc.pid if self.proc else -1
        return any(_listening_inodes(p) and not owns_listener(pid, p) for p in self._ports())

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM by PID, bounded wait, SIGKILL fallback. Returns the exit code."""
        if self.proc is None:
            return None
        rc = stop_process(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        return rc

    def kill(self) -> None:
        """SIGKILL the server (crash test). start() brings it back with its data."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
            self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same ports, keeping all data."""
        self.stop()
        self.start()

    # -- accounts ---------------------------------------------------------------------

    def new_account(self, prefix: str = "u") -> Account:
        """Register a fresh account with a name unique on this server."""
        localpart = f"{prefix}{next(self._names)}"
        password = f"pw-{localpart}"
        return Account(self.register(localpart, password), localpart, password)

    def new_room(self, prefix: str = "room") -> str:
        """A room JID not used before on this server (the room itself is not created)."""
        return f"{prefix}{next(self._rooms)}@{self.muc_domain}"

    # -- diagnostics ------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        text = self.logs()
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid} {self.workdir}>"
