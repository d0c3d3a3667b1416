"""Unit tests of the minimix command line (minimix.app is replaced by a stand-in)."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import minimix
from minimix import logging as minimix_logging
from minimix.cli import EX_CONFIG, EX_NOPERM, EX_OK, EX_SOFTWARE, main
from minimix.config import Config, default_state_dir
from minimix.logging import get_logger

SECRET = "cli-Secret-Pa55"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[account]\njid = "alice@example.org"\npassword = "{SECRET}"\n'
        '[logging]\nlevel = "warning"\n'
    )
    path.chmod(0o600)  # it holds the password
    return path


@pytest.fixture(autouse=True)
def no_systemd_credentials(monkeypatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


@pytest.fixture
def app(monkeypatch) -> Iterator[types.SimpleNamespace]:
    """Stand in for minimix.app, recording what `run` hands over; reset logging afterwards."""
    calls = types.SimpleNamespace(run=[], exit_code=EX_OK, error=None)

    def run(config: Config, password: str) -> int:
        calls.run.append((config, password))
        if calls.error:
            raise calls.error
        return calls.exit_code

    fake = types.ModuleType("minimix.app")
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "minimix.app", fake)
    monkeypatch.setattr(minimix, "app", fake, raising=False)
    yield calls
    minimix_logging.reset()


def test_version(capsys) -> None:
    assert main(["--version"]) == EX_OK
    assert capsys.readouterr().out == f"minimix {minimix.__version__}\n"


def test_python_dash_m_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "minimix", "--version"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"minimix {minimix.__version__}\n")


def test_no_command_is_a_usage_error(capsys) -> None:
    assert main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_run_hands_config_and_password_to_the_app(app, config_file: Path, capsys) -> None:
    assert main(["run", "--config", str(config_file)]) == EX_OK
    ((config, password),) = app.run
    assert config.path == config_file
    assert password == SECRET
    # Logging is set up at the configured level (warning), with the password registered.
    assert capsys.readouterr().out == ""
    get_logger("minimix.app").warning("still running", detail=SECRET)
    assert capsys.readouterr().out == "<4>still running detail=*** logger=minimix.app\n"


def test_run_returns_the_apps_exit_code(app, config_file: Path) -> None:
    app.exit_code = EX_NOPERM
    assert main(["run", "--config", str(config_file)]) == EX_NOPERM


def test_run_logs_an_unexpected_error_redacted(app, config_file: Path, capsys) -> None:
    app.error = RuntimeError(f"bug near {SECRET}")
    assert main(["run", "--config", str(config_file)]) == EX_SOFTWARE
    (line,) = capsys.readouterr().out.splitlines()  # one journal record
    assert line.startswith('<2>unexpected error exception="Traceback')
    assert "RuntimeError: bug near ***" in line
    assert SECRET not in line


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_config_error_is_one_line_and_exit_78(app, capsys, tmp_path: Path, command: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[account]\njid = "alice@example.org"\nport = "x"\n')
    assert main([command, "--config", str(path)]) == EX_CONFIG
    assert capsys.readouterr().err == (
        f"minimix: config error: {path}: account.port: expected an integer, got a string\n"
    )
    assert app.run == []


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_password_error_is_exit_78(app, capsys, tmp_path: Path, command: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[account]\njid = "alice@example.org"\npassword_command = ["false"]\n')
    assert main([command, "--config", str(path)]) == EX_CONFIG
    assert "false: failed with exit status 1" in capsys.readouterr().err
    assert app.run == []


def test_check_config_summary_hides_the_password(capsys, config_file: Path) -> None:
    assert main(["check-config", "--config", str(config_file)]) == EX_OK
    out = capsys.readouterr().out
    assert SECRET not in out
    assert out.splitlines() == [
        f"config:    {config_file}",
        "account:   alice@example.org/minimix",
        "server:    SRV lookup for example.org",
        f"password:  password in {config_file}",
        f"state dir: {default_state_dir()}",
        "configuration OK",
    ]


@pytest.mark.parametrize(("mode", "warned"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_config_file_holding_the_password_readable_by_others_is_warned_about(
    app, capsys, config_file: Path, mode: int, warned: bool
) -> None:
    config_file.chmod(mode)
    assert main(["check-config", "--config", str(config_file)]) == EX_OK
    warning = f"holds the password and is readable by others (mode {mode:o}); run: chmod 600 {config_file}"
    assert (warning in capsys.readouterr().err) is warned
    assert main(["run", "--config", str(config_file)]) == EX_OK
    err = capsys.readouterr().out  # the log (level warning)
    assert ("holds the password and is readable by others" in err and f'fix="chmod 600 {config_file}"' in err) is warned


def test_a_config_file_without_the_password_is_not_warned_about(capsys, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    (tmp_path / "pw").write_text(SECRET)
    (tmp_path / "pw").chmod(0o600)
    path.write_text('[account]\njid = "alice@example.org"\npassword_file = "pw"\n')
    path.chmod(0o644)
    assert main(["check-config", "--config", str(path)]) == EX_OK
    assert "warning" not in capsys.readouterr().err


def test_check_config_shows_host_and_port(capsys, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[account]\njid = "a@b.example"\npassword = "x"\nhost = "::1"\nport = 5223\n')
    assert main(["check-config", "--config", str(path)]) == EX_OK
    assert "server:    [::1]:5223\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ('[account]\njid = "alice@example.org"\nresource = "\u05d0a"\npassword = "pw"\n', "not a valid JID"),
        ('[account]\njid = "alice@example.org"\npassword = "pw"\n[storage]\nstate_dir = "{file}/minimix"\n',
         "state_dir: cannot use"),
    ],
)
def test_what_only_shows_at_run_is_a_config_error_too(tmp_path: Path, capsys, extra: str, reason: str) -> None:
    """A resource stringprep refuses, a state dir that cannot be made: once a traceback and
    exit 70 (which systemd restarts for ever), now exit 78 and one line naming the file."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    config = tmp_path / "config.toml"
    config.write_text(extra.replace("{file}", str(a_file)))
    assert main(["run", "--config", str(config)]) == EX_CONFIG
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"minimix: config error: {config}:") and reason in err, err
    assert "\n" not in err and "Traceback" not in err
