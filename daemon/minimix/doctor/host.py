"""The checks of this machine: the configuration file, the state dir, the systemd unit."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from minimix import statedir
from minimix.doctor.report import Check, Status


def check_config_file(path: Path, exposed_mode: int | None) -> Check:
    """*exposed_mode*: the file's mode when it holds the password and others may read it."""
    if exposed_mode is None:
        return Check("config file", Status.OK, f"{path} is private, or holds no password")
    return Check("config file", Status.WARN,
                 f"{path} holds the password and is readable by others (mode {exposed_mode:o})",
                 f"chmod 600 {path}")


def check_state_dir(state_dir: Path) -> Check:
    """Create and remove a temp file in the state dir (or, if it does not exist yet, check
    that it can be created: the daemon makes it on start); then its permissions and those
    of minimix's files in it, as the daemon checks them at its start."""
    target = state_dir
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        return Check("state dir", Status.FAIL, f"{target} is not a directory; minimix cannot keep state",
                     f"set storage.state_dir to a directory you own (now {state_dir})")
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".minimix-doctor-"):
            pass
    except OSError as exc:
        return Check(
            "state dir",
            Status.FAIL,
            f"cannot write in {target}: {exc.strerror}; the daemon could not keep its state",
            f"make {target} writable for you, or set storage.state_dir",
        )
    if target != state_dir:
        return Check("state dir", Status.OK, f"{state_dir} does not exist yet; the daemon creates it "
                     f"({target} is writable)")
    return _judge_modes(state_dir, statedir.loose_modes(state_dir))


def _judge_modes(state_dir: Path, loose: Sequence[tuple[Path, int, bool]]) -> Check:
    if not loose:
        return Check("state dir", Status.OK, f"{state_dir} is writable and private")
    listed = ", ".join(f"{path.name if path != state_dir else path} ({mode:o})" for path, mode, _ in loose)
    fix = "; ".join(f"chmod {700 if path == state_dir else 600} {path}" for path, _, _ in loose)
    if all(ours for _, _, ours in loose):
        return Check("state dir", Status.WARN, f"readable by others: {listed}; they hold messages and room "
                     "passwords (the daemon makes them private when it starts)", fix)
    return Check("state dir", Status.FAIL, f"readable by others and not yours: {listed}; the daemon refuses to "
                 "start", f"as their owner: {fix}")


UNIT = "minimix.service"


def check_systemd_unit(
    env: Mapping[str, str] = os.environ,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    which: Callable[[str], str | None] = shutil.which,
) -> Check:
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME", "~")).expanduser() / ".config")
    unit_file = config_home / "systemd" / "user" / UNIT
    install = (
        "to run it as a service: install -Dm644 systemd/minimix.service "
        f"{unit_file} && systemctl --user daemon-reload && systemctl --user enable --now minimix"
    )
    state = None
    if which("systemctl"):
        try:
            result = run(
                ["systemctl", "--user", "is-enabled", UNIT],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            state = result.stdout.strip() or None
            if state and " " in state:  # an error message, not a state
                state = None
        except (OSError, subprocess.TimeoutExpired):
            state = None
    if state in ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias"):
        return Check("systemd unit", Status.OK, f"{UNIT} is installed and {state}")
    if state in ("disabled", "indirect", "static") or (state is None and unit_file.is_file()):
        where = unit_file if unit_file.is_file() else UNIT
        what = state or "installed (systemctl --user not available here)"
        return Check(
            "systemd unit",
            Status.WARN if state else Status.INFO,
            f"{where}: {what}" + (": minimix does not start with your session" if state else ""),
            "systemctl --user enable --now minimix" if state else None,
        )
    return Check(
        "systemd unit",
        Status.WARN,
        f"{UNIT} is not installed (checked {unit_file}"
        + (", systemctl --user" if which("systemctl") else "")
        + "): fine when you run minimix by hand",
        install,
    )


# -- rendering ----------------------------------------------------------------------------------
