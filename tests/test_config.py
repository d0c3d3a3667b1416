"""Unit tests of minimix.config: schema checks, paths, password sources, secrecy."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest

from minimix import config as config_module
from minimix import password as password_module
from minimix.config import (
    Config,
    ConfigError,
    default_config_path,
    load_config,
    sections,
)
from minimix.password import password_source, resolve_password

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.toml"
SECRET = "s3cr3t-Pa55w0rd"
ACCOUNT = '[account]\njid = "alice@example.org"\n'


@pytest.fixture
def write(tmp_path: Path):
    """Write a config file (mode 0600) and return its path."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    return write


def load(path: Path, **env: str) -> Config:
    return load_config(path, env=env)


def error_of(path: Path, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path, **env)
    return str(caught.value)


# --- loading and defaults -------------------------------------------------------------------


def test_minimal_file_gets_defaults(write) -> None:
    path = write(ACCOUNT + f'password = "{SECRET}"\n')
    config = load(path)
    assert config.path == path
    assert config.account.jid == "alice@example.org"
    assert config.account.resource == "minimix"
    assert config.account.address is None  # SRV lookup
    assert config.rooms.default_nick == "alice"
    assert config.rooms.join_concurrency == 50
    assert config.bookmarks.resync_interval_s == 900.0
    assert config.storage.state_dir == config_module.default_state_dir()
    assert config.logging.level == "info"


def test_full_file(write, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = write(
        ACCOUNT
        + 'resource = "bouncer"\npassword_file = "pw"\nhost = "127.0.0.1"\nport = 15222\n'
        + 'ca_file = "ca.pem"\n'
        + '[rooms]\ndefault_nick = "Al"\njoin_concurrency = 5\n'
        + "[bookmarks]\nresync_interval_s = 60.5\n"
        + '[storage]\nstate_dir = "~/minimix-state"\n'
        + '[logging]\nlevel = "debug"\n'
    )
    config = load(path)
    assert config.account.resource == "bouncer"
    assert config.account.password_file == tmp_path / "pw"  # relative to the file
    assert config.account.address == ("127.0.0.1", 15222)
    assert config.account.ca_file == tmp_path / "ca.pem"
    assert config.rooms == config_module.RoomsConfig(default_nick="Al", join_concurrency=5)
    assert config.bookmarks.resync_interval_s == 60.5
    assert config.storage.state_dir == Path.home() / "minimix-state"
    assert config.logging.level == "debug"


def test_host_without_port_uses_5222(write) -> None:
    config = load(write(ACCOUNT + 'password = "x"\nhost = "xmpp.example.org"\n'))
    assert config.account.address == ("xmpp.example.org", 5222)


def test_int_accepted_for_float(write) -> None:
    config = load(write(ACCOUNT + "[bookmarks]\nresync_interval_s = 30\n"))
    assert config.bookmarks.resync_interval_s == 30.0
    assert isinstance(config.bookmarks.resync_interval_s, float)


def test_state_directory_from_systemd_wins(write, tmp_path: Path) -> None:
    path = write(ACCOUNT + '[storage]\nstate_dir = "/elsewhere"\n')
    config = load(path, STATE_DIRECTORY=f"{tmp_path}/one:{tmp_path}/two")
    assert config.storage.state_dir == tmp_path / "one"


def test_default_path_follows_xdg(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "minimix" / "config.toml"


def test_config_is_frozen(write) -> None:
    config = load(write(ACCOUNT))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.account.jid = "mallory@example.org"  # type: ignore[misc]


# --- errors name the file and the key -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (ACCOUNT + "resourc = 'x'\n", "account.resourc", "unknown key (did you mean resource?)"),
        (ACCOUNT + "[room]\n", "[room]", "unknown section (did you mean rooms?)"),
        (ACCOUNT + "[rooms]\nfoo = 1\n", "rooms.foo", "unknown key (known: default_nick,"),
        ("[account]\n", "account.jid", "required, but missing"),
        ("", "account.jid", "required, but missing"),
        ('rooms = "x"\n' + ACCOUNT, "rooms", "expected a table [rooms], got a string"),
        (
            ACCOUNT + "port = '5222'\nhost = 'h'\n",
            "account.port",
            "expected an integer, got a string",
        ),
        (
            ACCOUNT + "port = true\nhost = 'h'\n",
            "account.port",
            "expected an integer, got a boolean",
        ),
        (ACCOUNT + "port = 70000\nhost = 'h'\n", "account.port", "between 1 and 65535, got 70000"),
        (ACCOUNT + "port = 5222\n", "[account]", "port needs host"),
        (ACCOUNT + "[rooms]\njoin_concurrency = 0\n", "rooms.join_concurrency", "at least 1"),
        (
            ACCOUNT + "[bookmarks]\nresync_interval_s = '1h'\n",
            "bookmarks.resync_interval_s",
            "expected a float, got a string",
        ),
        (
            ACCOUNT + "[logging]\nlevel = 'verbose'\n",
            "logging.level",
            "must be one of 'debug', 'info', 'warning', 'error', got 'verbose'",
        ),
        (
            ACCOUNT + "password_command = 'pass show x'\n",
            "account.password_command",
            "expected an array, got a string",
        ),
        (ACCOUNT + "password_command = []\n", "account.password_command", "must not be empty"),
        (
            ACCOUNT + "password_command = ['pass', 1]\n",
            "account.password_command",
            "expected a string, got an integer",
        ),
        (ACCOUNT + "ca_file = 'missing.pem'\n", "account.ca_file", "missing.pem: no such file"),
        ('[account]\njid = "alice@example.org/phone"\n', "account.jid", "without a resource"),
        ('[account]\njid = "example.org"\n', "account.jid", "must be a bare JID like"),
        ('[account]\njid = "@example.org"\n', "account.jid", "must be a bare JID like"),
        ('[account]\njid = "alice@"\n', "account.jid", "must be a bare JID like"),
        (ACCOUNT + "jid = 'x'\n", "", "not valid TOML"),  # duplicate key
        # accepted once, then a traceback at run (exit 70, restarted by systemd for ever)
        ('[account]\njid = "al ice@exa mple.org"\n', "account.jid", "not a valid JID: it contains ' '"),
        ('[account]\njid = "a<b@example.org"\n', "account.jid", "not a valid JID: it contains '<'"),
        (ACCOUNT + "[bookmarks]\nresync_interval_s = inf\n", "bookmarks.resync_interval_s", "finite number"),
        (ACCOUNT + "[bookmarks]\nresync_interval_s = 1e12\n", "bookmarks.resync_interval_s", "finite number"),
        (ACCOUNT + "[rooms]\nbackoff_cap_s = nan\n", "rooms.backoff_cap_s", "finite number"),
        (ACCOUNT + "[relay]\nplayback_max = 100000000000\n", "relay.playback_max", "finite number"),
    ],
)
def test_errors_name_file_and_key(write, text: str, key: str, reason: str) -> None:
    path = write(text)
    message = error_of(path)
    assert message.startswith(f"{path}: {key}")
    assert reason in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.toml")
    assert message == f"{tmp_path / 'nope.toml'}: no such file (start from config.example.toml)"


def test_not_utf8(write, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[account]\njid = "\xff"\n')
    assert error_of(path) == f"{path}: not UTF-8 text"


def test_two_password_sources_is_an_error_that_hides_the_password(write) -> None:
    path = write(ACCOUNT + f'password = "{SECRET}"\npassword_file = "pw"\n')
    message = error_of(path)
    assert "set only one of password, password_file" in message
    assert SECRET not in message


def test_password_is_not_in_repr(write) -> None:
    config = load(write(ACCOUNT + f'password = "{SECRET}"\n'))
    assert config.account.password == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in str(config)


# --- the password ---------------------------------------------------------------------------


def test_inline_password(write) -> None:
    config = load(write(ACCOUNT + f'password = "{SECRET}"\n'))
    assert resolve_password(config, env={}) == SECRET
    assert password_source(config, env={}) == f"password in {config.path}"


def test_password_file_first_line(write, tmp_path: Path) -> None:
    write(f"{SECRET}\nsecond line\n", name="pw")
    config = load(write(ACCOUNT + 'password_file = "pw"\n'))
    assert resolve_password(config, env={}) == SECRET
    assert password_source(config, env={}) == f"password_file {tmp_path / 'pw'}"


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_password_file_private_modes_accepted(write, mode: int) -> None:
    write(SECRET, name="pw").chmod(mode)
    assert resolve_password(load(write(ACCOUNT + 'password_file = "pw"\n')), env={}) == SECRET


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_password_file_readable_by_others_is_refused(write, tmp_path: Path, mode: int) -> None:
    write(SECRET, name="pw").chmod(mode)
    config = load(write(ACCOUNT + 'password_file = "pw"\n'))
    with pytest.raises(ConfigError, match=r"readable by others .* chmod 600") as caught:
        resolve_password(config, env={})
    assert SECRET not in str(caught.value)


def test_password_file_missing(write, tmp_path: Path) -> None:
    config = load(write(ACCOUNT + 'password_file = "~/../nonexistent/pw"\n'))
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        resolve_password(config, env={})


def test_empty_password(write) -> None:
    write("\n", name="pw")
    config = load(write(ACCOUNT + 'password_file = "pw"\n'))
    with pytest.raises(ConfigError, match="the password from password_file .* is empty"):
        resolve_password(config, env={})


def command(script: str) -> str:
    """A password_command line running *script* with this Python."""
    return f"password_command = [{sys.executable!r}, '-c', {script!r}]\n"


def test_password_command(write) -> None:
    config = load(write(ACCOUNT + command(f"print('{SECRET}'); print('more')")))
    assert resolve_password(config, env={}) == SECRET
    assert password_source(config, env={}) == f"password_command ({sys.executable} …)"


def test_password_command_failure_does_not_show_its_output(write) -> None:
    script = f"import sys; print('{SECRET}'); sys.exit(3)"
    config = load(write(ACCOUNT + command(script)))
    with pytest.raises(ConfigError, match="failed with exit status 3") as caught:
        resolve_password(config, env={})
    assert SECRET not in str(caught.value)
    assert caught.value.__context__ is None


def test_password_command_timeout(write, monkeypatch) -> None:
    monkeypatch.setattr(password_module, "PASSWORD_COMMAND_TIMEOUT_S", 0.2)
    config = load(
        write(ACCOUNT + command(f"print('{SECRET}', flush=True); import time; time.sleep(30)"))
    )
    with pytest.raises(ConfigError, match=r"no answer within 0.2 s") as caught:
        resolve_password(config, env={})
    assert SECRET not in str(caught.value)
    context = caught.value.__context__  # TimeoutExpired carries the output
    assert context is None or caught.value.__suppress_context__


SHORT = "k;7~"  # a short password: no word of the log could be mistaken for it


def script(tmp_path: Path, body: str) -> str:
    """A password_command line running a bash script (*body*) that traces every command."""
    path = tmp_path / "get-password"
    path.write_text(f"#!/bin/bash\nset -x\n{body}\n")
    path.chmod(0o700)
    return f"password_command = [{str(path)!r}]\n"


@pytest.mark.parametrize("password", [SHORT, "x", SECRET])
def test_password_command_stderr_is_shown_without_the_password(write, tmp_path, capfd, password) -> None:
    """A script run with ``set -x`` echoes the password to stderr, which is the journal's."""
    body = f"echo 'opening the vault' >&2\necho '{password}'\necho \"got $(echo '{password}' | wc -c) bytes\" >&2"
    config = load(write(ACCOUNT + script(tmp_path, body)))
    assert resolve_password(config, env={}) == password
    out, err = capfd.readouterr()
    name = "minimix: password_command " + str(tmp_path / "get-password") + ": "
    assert all(line.startswith(name) for line in err.splitlines())
    shown = [line.removeprefix(name) for line in err.splitlines()]
    assert password not in out + "\n".join(shown)
    assert shown[:3] == [
        "+ echo 'opening the vault'",
        "opening the vault",
        "+ echo " + ("'***'" if ";" in password else "***"),  # as bash quotes it
    ]


def test_password_command_stderr_is_shown_when_it_fails_escaped(write, tmp_path, capfd) -> None:
    body = f"echo '{SHORT}'\nprintf 'vault locked\\r<3>forged\\033[31m\\n' >&2\nexit 3"
    config = load(write(ACCOUNT + script(tmp_path, body)))
    with pytest.raises(ConfigError, match="failed with exit status 3"):
        resolve_password(config, env={})
    err = capfd.readouterr().err
    assert SHORT not in err
    assert ": vault locked\\r<3>forged\\x1b[31m\n" in err


def test_password_command_stderr_is_bounded(write, tmp_path, capfd) -> None:
    """What is kept ends in the middle of the password: its line goes too."""
    cut = password_module.PASSWORD_COMMAND_STDERR_MAX - 2
    body = f"echo '{SECRET}'\n{{ set +x; }} 2>/dev/null\nprintf 'x%.0s' $(seq {cut}) >&2\necho '{SECRET}' >&2\nhead -c 100000 /dev/zero | tr '\\0' y >&2"
    config = load(write(ACCOUNT + script(tmp_path, body)))
    assert resolve_password(config, env={}) == SECRET
    err = capfd.readouterr().err
    assert SECRET[:2] not in err
    name = "minimix: password_command " + str(tmp_path / "get-password")
    shown = [line for line in err.splitlines() if line.startswith(name)]
    assert shown[-1] == f"{name}: ({cut + len(SECRET) + 1 + 100000} more bytes not shown)"
    assert len(err) < password_module.PASSWORD_COMMAND_STDERR_MAX + 500


def test_password_command_not_found(write) -> None:
    config = load(write(ACCOUNT + "password_command = ['/nonexistent/pass']\n"))
    with pytest.raises(ConfigError, match="/nonexistent/pass: cannot run: No such file"):
        resolve_password(config, env={})


def test_systemd_credential_wins(write, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "xmpp-password").write_text(f"{SECRET}\n")
    config = load(write(ACCOUNT + 'password = "from-the-file"\n'))
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert resolve_password(config, env=env) == SECRET
    assert password_source(config, env=env) == f"systemd credential {credentials}/xmpp-password"


def test_no_password_source(write, tmp_path: Path) -> None:
    config = load(write(ACCOUNT))  # loading alone does not need one
    with pytest.raises(ConfigError, match=r"\[account\]: no password: set one of password"):
        resolve_password(config, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})


# --- config.example.toml documents every key ------------------------------------------------


def documented_keys(text: str) -> set[str]:
    """``section.key`` for every ``key = …`` line, commented out or not, under ``[section]``,
    and for every ``[section.key]`` table header (a key whose value is a table)."""
    keys, section = set(), ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header[1]
        elif table := re.fullmatch(r"#?\s*\[(\w+)\.(\w+)\]", line):
            keys.add(f"{table[1]}.{table[2]}")
        elif assignment := re.match(r"#? ?(\w+) = ", line):
            keys.add(f"{section}.{assignment[1]}")
    return keys


def test_example_documents_every_key() -> None:
    schema = {
        f"{name}.{f.name}" for name, cls in sections().items() for f in dataclasses.fields(cls)
    }
    assert schema - documented_keys(EXAMPLE.read_text()) == set()


def test_example_parses(write) -> None:
    text = EXAMPLE.read_text().replace("[account]\n", f'[account]\npassword = "{SECRET}"\n', 1)
    config = load(write(text))
    assert config.account.jid == "alice@example.org"
    assert resolve_password(config, env={}) == SECRET


def test_password_command_errors_name_the_file_and_the_key(write) -> None:
    """An empty answer once said only "the password from password_command (true …) is empty";
    a command killed by a signal "failed with exit status -9"."""
    path = write(ACCOUNT + 'password_command = ["true"]\n')
    with pytest.raises(ConfigError) as empty:
        resolve_password(load(path), env={})
    assert str(empty.value).startswith(f"{path}: account.password_command: ") and "is empty" in str(empty.value)
    path = write(ACCOUNT + 'password_command = ["sh", "-c", "kill -9 $$"]\n')
    with pytest.raises(ConfigError, match="killed by SIGKILL"):
        resolve_password(load(path), env={})
