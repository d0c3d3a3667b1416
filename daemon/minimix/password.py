"""The account's password: from the systemd credential ``xmpp-password`` when there is one,
else from the one source the configuration file names (``password``, ``password_command``,
``password_file``).  No message, and no log line, ever contains it."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from minimix.config import Config, ConfigError, loose_mode
from minimix.logging import escape, redact

CREDENTIAL_NAME = "xmpp-password"
"""Name of the systemd credential (``LoadCredential=xmpp-password:…``) holding the password."""
PASSWORD_COMMAND_TIMEOUT_S = 10.0
PASSWORD_COMMAND_STDERR_MAX = 4096


def password_source(config: Config, env: Mapping[str, str] = os.environ) -> str:
    """Say where the password would come from, without reading it (for ``check-config``)."""
    return _password_source(config, env)[0]


def resolve_password(config: Config, env: Mapping[str, str] = os.environ) -> str:
    """Read the password. Raises ConfigError, whose message never contains the password.

    ``$CREDENTIALS_DIRECTORY/xmpp-password`` (systemd ``LoadCredential=``) wins over the file's
    ``password``, ``password_command`` or ``password_file``. Files and commands give their
    first line.
    """
    where, read = _password_source(config, env)
    # which file and key the password came from (a credential is systemd's, not the file's)
    key = where.partition(" ")[0]
    at = f"{config.path}: account.{key}: " if key in ("password_command", "password_file") else ""
    try:
        text = read().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{at}the password from {where} is not UTF-8 text") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ConfigError(f"{at}the password from {where} is empty")
    return password


def _password_source(config: Config, env: Mapping[str, str]) -> tuple[str, Callable[[], bytes]]:
    """(description, reader) of the password source that applies."""
    account = config.account
    directory = env.get("CREDENTIALS_DIRECTORY")
    if directory and (credential := Path(directory) / CREDENTIAL_NAME).is_file():
        return f"systemd credential {credential}", lambda: _read(credential)
    if (argv := account.password_command) is not None:
        return f"password_command ({argv[0]} …)", lambda: _run_password_command(argv, config.path)
    if (file := account.password_file) is not None:
        return f"password_file {file}", lambda: _read(file, private=True)
    if (password := account.password) is not None:
        return f"password in {config.path}", password.encode
    raise ConfigError(
        f"{config.path}: [account]: no password: set one of password, password_command or "
        f"password_file (or provide the systemd credential {CREDENTIAL_NAME})"
    )


def exposed_password(config: Config) -> int | None:
    """The mode of the configuration file when it holds the password and others may read
    it (a warning, not an error: the daemon runs all the same), else None."""
    if config.account.password is None:
        return None
    try:
        return loose_mode(config.path.stat().st_mode)
    except OSError:
        return None


def _read(path: Path, *, private: bool = False) -> bytes:
    """Read *path*; a *private* file must not be accessible to group or others."""
    try:
        with path.open("rb") as file:
            mode = loose_mode(os.fstat(file.fileno()).st_mode)
            if private and mode is not None:
                raise ConfigError(f"{path}: readable by others (mode {mode:o}); run: chmod 600 {path}")
            return file.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def _run_password_command(argv: tuple[str, ...], config_path: Path) -> bytes:
    """Run *argv* (no shell). Its stdout is never shown; its stderr is (see :func:`_show_stderr`)."""
    where = f"{config_path}: account.password_command: {argv[0]}"
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as error:
        raise ConfigError(f"{where}: cannot run: {error.strerror}") from None
    with process:
        stdout, stderr, more, finished = _communicate(process, PASSWORD_COMMAND_TIMEOUT_S)
        if not finished:
            process.kill()
    _show_stderr(f"password_command {argv[0]}", stderr, more, stdout)
    if not finished:
        raise ConfigError(f"{where}: no answer within {PASSWORD_COMMAND_TIMEOUT_S:g} s")
    if process.returncode < 0:
        try:
            name = signal.Signals(-process.returncode).name
        except ValueError:
            name = f"signal {-process.returncode}"
        raise ConfigError(f"{where}: killed by {name}")
    if process.returncode != 0:
        raise ConfigError(f"{where}: failed with exit status {process.returncode}")
    return stdout


def _communicate(process: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes, int, bool]:
    """(stdout, the first :data:`PASSWORD_COMMAND_STDERR_MAX` bytes of stderr, how many more
    bytes it wrote, whether it ended within *timeout*): what it reads is bounded by that."""
    out, err, more = bytearray(), bytearray(), 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        selector.register(process.stderr, selectors.EVENT_READ)  # type: ignore[arg-type]
        while selector.get_map():
            ready = selector.select(deadline - time.monotonic())
            if not ready:
                return bytes(out), bytes(err), more, False
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.fileobj is process.stdout:
                    out += chunk
                else:
                    kept = chunk[: max(0, PASSWORD_COMMAND_STDERR_MAX - len(err))]
                    err += kept
                    more += len(chunk) - len(kept)
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return bytes(out), bytes(err), more, False
    return bytes(out), bytes(err), more, True


def _show_stderr(name: str, stderr: bytes, more: int, stdout: bytes) -> None:
    """Pass on what a password command wrote to stderr (why it failed, a warning) on ours,
    which is the journal under systemd: one escaped line each, without the password — the
    first line of its stdout, whatever its length (``set -x`` in a script echoes it)."""
    if more:  # the cut may have split the password: its line goes too
        stderr, _, cut = stderr.rpartition(b"\n")
        more += len(cut)
    password = stdout.decode("utf-8", "replace").splitlines()[:1]
    text = redact(stderr.decode("utf-8", "replace"), password).removesuffix("\n")
    for line in text.split("\n") if text else ():  # a CR, say, is escaped: no line of its own
        print(f"minimix: {name}: {escape(line)}", file=sys.stderr)
    if more:
        print(f"minimix: {name}: ({more} more bytes not shown)", file=sys.stderr)
