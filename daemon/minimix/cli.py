"""The ``minimix`` command.

``minimix run`` runs the daemon in the foreground (systemd supervises it; it never forks);
``minimix check-config`` checks the configuration and the password source; ``minimix doctor``
checks the server and the setup against what minimix needs. Exit codes follow sysexits(3), so
the unit can restart on ``EX_IOERR`` (after a delay) and refuse to on ``EX_TEMPFAIL``,
``EX_NOPERM`` and ``EX_CONFIG``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from minimix import __version__
from minimix import logging as minimix_logging
from minimix import status as status_file
from minimix.config import Config, ConfigError, default_config_path, load_config
from minimix.password import exposed_password, password_source, resolve_password

EX_OK = os.EX_OK  # 0
EX_SOFTWARE = os.EX_SOFTWARE  # 70: a bug (an unexpected exception)
EX_IOERR = os.EX_IOERR  # 74: the store failed for a cause that may pass (an I/O error, a full disk)
EX_TEMPFAIL = os.EX_TEMPFAIL  # 75: another minimix runs with this state dir
EX_NOPERM = os.EX_NOPERM  # 77: the server refused the credentials
EX_CONFIG = os.EX_CONFIG  # 78: the configuration is unusable, or the store needs someone to act
EX_NOT_RUNNING = 3  # `minimix status`: not running (as LSB's "program is not running")

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line *argv* (default: ``sys.argv[1:]``) and return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else EX_OK
    command: Command = args.command
    return command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minimix",
        description="Keep an XMPP account in its bookmarked group chats.",
    )
    parser.add_argument("--version", action="version", version=f"minimix {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def add(name: str, command: Command, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(command=command)
        sub.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help=f"configuration file (default: {default_config_path()})",
        )
        return sub

    add("run", _run, "run the daemon in the foreground")
    add("check-config", _check_config, "check the configuration and the password source")
    status = add("status", _status, "show the running daemon's rooms and their state")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    doctor = add("doctor", _doctor, "check the server, the account and the setup for minimix")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    return parser


def _run(args: argparse.Namespace) -> int:
    """``minimix run``: load the configuration and the password, then run the daemon."""
    try:
        config = load_config(args.config)
        password = resolve_password(config)
    except ConfigError as error:
        return _config_error(error)
    minimix_logging.setup(level=config.logging.level, log_messages=config.logging.log_messages)
    minimix_logging.add_secret(password)
    if (mode := exposed_password(config)) is not None:
        minimix_logging.get_logger(__name__).warning(
            "the configuration file holds the password and is readable by others",
            path=str(config.path), mode=f"{mode:o}", fix=f"chmod 600 {config.path}")
    try:
        from minimix import app  # the daemon proper: imported only when it is to run

        return app.run(config, password)
    except ConfigError as error:
        return _config_error(error)
    except Exception:
        # Through the log pipeline, not a bare traceback: redacted, and one journal record.
        minimix_logging.get_logger(__name__).critical("unexpected error", exc_info=True)
        return EX_SOFTWARE


def _check_config(args: argparse.Namespace) -> int:
    """``minimix check-config``: validate, read the password (never shown), summarize."""
    try:
        config = load_config(args.config)
        resolve_password(config)
    except ConfigError as error:
        return _config_error(error)
    if (mode := exposed_password(config)) is not None:
        print(f"minimix: warning: {config.path}: holds the password and is readable by others "
              f"(mode {mode:o}); run: chmod 600 {config.path}", file=sys.stderr)
    print(_summary(config))
    return EX_OK


def _status(args: argparse.Namespace) -> int:
    """``minimix status``: what the daemon last wrote to its status file; exit 3 if not running."""
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return _config_error(error)
    path = status_file.snapshot_path(config.storage.state_dir)
    data = status_file.read_snapshot(path)
    if data is None:
        print(f"minimix: no status in {path}: the daemon has not run with this configuration")
        return EX_NOT_RUNNING
    if args.json:
        print(json.dumps({**data, "running": status_file.is_running(data)}, indent=1, sort_keys=True))
    else:
        print(status_file.format_status(data))
    return EX_OK if status_file.is_running(data) else EX_NOT_RUNNING


def _doctor(args: argparse.Namespace) -> int:
    """``minimix doctor``: one row per check; exit 1 if one failed, 77 if the login was refused."""
    try:
        config = load_config(args.config)
        password = resolve_password(config)
    except ConfigError as error:
        return _config_error(error)
    # The report goes to stdout; log records (errors only, unless level is debug) to stderr.
    level = "debug" if config.logging.level == "debug" else "error"
    minimix_logging.setup(level=level, stream=sys.stderr, log_messages=config.logging.log_messages)
    minimix_logging.add_secret(password)
    try:
        from minimix import doctor
        from minimix.xmpp import doctor as xmpp_doctor  # imports aioxmpp: only when it is to run

        outcome = xmpp_doctor.run(config, password)
        checks = [
            *outcome.checks,
            doctor.check_config_file(config.path, exposed_password(config)),
            doctor.check_state_dir(config.storage.state_dir),
            doctor.check_systemd_unit(),
        ]
    except Exception:
        minimix_logging.get_logger(__name__).critical("unexpected error", exc_info=True)
        return EX_SOFTWARE
    code = EX_NOPERM if outcome.login_refused else doctor.exit_status(checks)
    if args.json:
        print(doctor.render_json(checks, code))
    else:
        print(doctor.render_table(checks, code))
    return code


def _summary(config: Config) -> str:
    account = config.account
    if account.address is None:
        server = f"SRV lookup for {account.domain}"
    else:
        host, port = account.address
        server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return "\n".join(
        [
            f"config:    {config.path}",
            f"account:   {account.jid}/{account.resource}",
            f"server:    {server}",
            f"password:  {password_source(config)}",
            f"state dir: {config.storage.state_dir}",
            "configuration OK",
        ]
    )


def _config_error(error: ConfigError) -> int:
    print(f"minimix: config error: {error}", file=sys.stderr)
    return EX_CONFIG
