"""Run the daemon the way a user does: a TOML config file and
`python -m minimix run --config FILE`, in its own process group, output captured."""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from servers.base import stop_process

from .wait import DEFAULT_TIMEOUT

STOP_TIMEOUT = 15.0
#: set by systemd for a service; they would change where the daemon reads its password,
#: keeps its state and reports readiness
SYSTEMD_VARS = (
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
)
_running: set[DaemonProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Safety net if a fixture's teardown never ran: never leave a daemon behind."""
    for d in list(_running):
        d.kill()


# -- config -----------------------------------------------------------------------------


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(i) for i in v) + "]"
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    raise TypeError(f"cannot write {v!r} as TOML")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(k: str) -> str:
    """A key as is when TOML allows it bare, else quoted (e.g. a glob: "gajim.*")."""
    return k if _BARE_KEY.fullmatch(k) else toml_value(str(k))


def to_toml(data: dict, _prefix: str = "") -> str:
    """A minimal TOML writer: nested dicts become [tables]; scalars and lists as values."""
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    out = [f"{toml_key(k)} = {toml_value(v)}" for k, v in scalars]
    for k, v in tables:
        name = f"{_prefix}.{toml_key(k)}" if _prefix else toml_key(k)
        out += ["", f"[{name}]", to_toml(v, name)]
    return "\n".join(out).strip("\n") + "\n"


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = (
            deep_merge(merged[k], v)
            if isinstance(v, dict) and isinstance(merged.get(k), dict)
            else v
        )
    return merged


def daemon_config(
    server, account, state_dir: Path, resource: str = "minimix", extra: dict | None = None
) -> dict:
    """The config a user would write for `account` on `server`, plus `extra` sections/keys."""
    base = {
        "account": {
            "jid": account.jid,
            "resource": resource,
            "password": account.password,
            "host": server.host,
            "port": server.port,
            "ca_file": str(server.ca_file),
        },
        "storage": {"state_dir": str(state_dir)},
    }
    return deep_merge(base, extra or {})


# -- process ----------------------------------------------------------------------------


class DaemonProcess:
    """One daemon run. `lines` fills up (stdout and stderr merged, in order) while it runs;
    the same text goes to `log_file`."""

    def __init__(
        self,
        config_file: Path,
        log_file: Path,
        argv: list[str] | None = None,
        env: dict[str, str | None] | None = None,
        cwd: Path | None = None,
    ):
        self.config_file = Path(config_file)
        self.log_file = Path(log_file)
        self.argv = argv or [
            sys.executable,
            "-m",
            "minimix",
            "run",
            "--config",
            str(self.config_file),
        ]
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        for name in SYSTEMD_VARS:  # hermetic unless a test passes them in `env`
            self.env.pop(name, None)
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        self.cwd = cwd
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> DaemonProcess:
        """Start; again after stop()/kill() for a restart with the same config and state
        (lines keep accumulating: pass since=len(d.lines) to wait_log)."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self._reader = threading.Thread(
            target=self._read, name=f"daemon-{self.proc.pid}", daemon=True
        )
        self._reader.start()
        _running.add(self)
        return self

    def _read(self) -> None:
        with open(self.log_file, "a", encoding="utf-8") as log:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                self.lines.append(line)
                log.write(line + "\n")
                log.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float | None = None, since: int = 0) -> re.Match:
        """The first output line (from index `since`) matching regex `pattern` (re.search).
        Fails at once if the daemon exits without printing it."""
        rx = re.compile(pattern)
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            exited = self.proc.poll() is not None and not self._reader.is_alive()
            lines = self.lines[seen:]
            for line in lines:
                m = rx.search(line)
                if m:
                    return m
            seen += len(lines)
            if exited or time.monotonic() >= deadline:
                why = (
                    f"exited with {self.proc.returncode}"
                    if exited
                    else f"still running after {timeout:g} s"
                )
                raise AssertionError(
                    f"daemon {why} without a line matching {pattern!r}; output:\n{self.tail()}"
                )
            time.sleep(0.02)

    def grep(self, pattern: str, since: int = 0) -> list[str]:
        """The output lines (from index `since`) matching regex `pattern` (re.search)."""
        rx = re.compile(pattern)
        return [line for line in self.lines[since:] if rx.search(line)]

    def tail(self, n: int = 80) -> str:
        return "\n".join(self.lines[-n:]) or "(no output)"

    def send_signal(self, sig: int) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the daemon to exit by itself; returns its exit code."""
        try:
            rc = self.proc.wait(DEFAULT_TIMEOUT if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon did not exit; output:\n{self.tail()}") from None
        self._reader.join(5)
        return rc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig`, wait up to `timeout`, then SIGKILL; also SIGKILLs anything left in
        the daemon's process group. Returns the exit code (negative: killed by a signal)."""
        if self.proc is None:
            raise RuntimeError("daemon was never started")
        stop_process(self.proc, sig, timeout)
        self._reader.join(5)
        _running.discard(self)
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL (a crash)."""
        return self.stop(signal.SIGKILL, timeout=10)

    def __repr__(self):
        state = "running" if self.running else f"exited {self.returncode}"
        return (
            f"<DaemonProcess pid={self.proc.pid if self.proc else None} {state} {self.config_file}>"
        )
