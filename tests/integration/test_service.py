"""The daemon as a service: its command line, signals, restarts, reloads and its log.

The command line is run as a user runs it (``python -m minimix …``); what the daemon does
in rooms is judged by bob (in every room) and the user's phone (another resource)."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import minimix
from harness import muc_codes, to_toml, wait_until
from servers import Account

EX_CONFIG = 78
SYSTEMD_ENV = ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NOTIFY_SOCKET")
SECRET = "Cli-S3cret-Pa55word"


def minimix_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """`python -m minimix ARGS`, outside systemd, as a user types it."""
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV}
    return subprocess.run(
        [sys.executable, "-m", "minimix", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(
        f'[account]\njid = "alice@example.org"\npassword = "{SECRET}"\n'
        f'host = "127.0.0.1"\nport = 1\n\n[storage]\nstate_dir = "{path.parent / "state"}"\n{extra}'
    )
    return path


# -- the command line -------------------------------------------------------------------


def test_version():
    r = minimix_cli("--version")
    assert (r.returncode, r.stdout.strip()) == (0, f"minimix {minimix.__version__}")


def test_check_config_accepts_a_good_file_and_never_prints_the_password(tmp_path):
    config = write_config(tmp_path / "config.toml")
    r = minimix_cli("check-config", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert "alice@example.org" in r.stdout and str(config) in r.stdout
    assert SECRET not in r.stdout + r.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('[rooms]\ndefualt_nick = "x"\n', "rooms.defualt_nick"),  # unknown key
        ('[rooms]\njoin_concurrency = "ten"\n', "rooms.join_concurrency"),  # wrong type
        ("[bookmarks]\nresync_interval_s = true\n", "bookmarks.resync_interval_s"),
        ('[logging]\nlevel = "loud"\n', "logging.level"),
    ],
)
def test_a_bad_config_exits_78_naming_the_key_and_the_file(tmp_path, command, extra, key):
    config = write_config(tmp_path / "config.toml", extra)
    r = minimix_cli(command, "--config", str(config))
    assert r.returncode == EX_CONFIG, r.stdout + r.stderr
    assert key in r.stderr and str(config) in r.stderr, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert SECRET not in r.stdout + r.stderr


def test_run_without_a_config_file_exits_78(tmp_path):
    r = minimix_cli("run", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == EX_CONFIG and "missing.toml" in r.stderr
    assert "Traceback" not in r.stderr


# -- stopping and starting ------------------------------------------------------------------


def unavailable_from(client, jid: str, since: int = 0) -> list[int]:
    """Indexes in client.presences of unavailable presences from `jid`."""
    return [
        i
        for i, p in enumerate(client.presences[since:], since)
        if str(p["from"]) == jid and p["type"] == "unavailable"
    ]


def watch_leaves(user, rooms: dict[str, str]) -> tuple[int, int]:
    """The phone joins `rooms` (room -> the daemon's nick there) to watch; marks to pass to
    assert_left_cleanly."""
    for i, room in enumerate(rooms):
        user.phone.join(room, f"phone{i}")
    return len(user.bob.presences), len(user.phone.presences)


def assert_left_cleanly(user, rooms: dict[str, str], marks: tuple[int, int]) -> None:
    """The daemon left every room itself before going offline.

    Without a leave of its own the server would still tell the rooms, but only while
    cleaning up after the closed session: the phone (in the same rooms) would then get the
    daemon resource's own unavailable first and the rooms' after it."""
    bob_mark, phone_mark = marks
    for room in rooms:
        user.wait_left(room)
    wait_until(lambda: unavailable_from(user.phone, user.full_jid, phone_mark))
    offline = unavailable_from(user.phone, user.full_jid, phone_mark)[0]
    for room, nick in rooms.items():
        left = unavailable_from(user.phone, f"{room}/{nick}", phone_mark)
        assert left and left[0] < offline, (room, left, offline)
        (gone,) = [
            user.bob.presences[i] for i in unavailable_from(user.bob, f"{room}/{nick}", bob_mark)
        ]
        assert not muc_codes(gone) - {110}, muc_codes(gone)  # not kicked, not "technical"
        assert "Disconnected" not in (gone["status"] or "")


def test_sigterm_leaves_every_room_cleanly_then_a_restart_rejoins_but_not_a_removed_one(user):
    rooms = {user.room(): f"mm{i}" for i in range(3)}
    for room, nick in rooms.items():
        user.phone.publish_bookmark(room, nick=nick)
    d = user.start()
    for room, nick in rooms.items():
        user.wait_joined(room, nick)
    marks = watch_leaves(user, rooms)

    assert d.stop(signal.SIGTERM) == 0

    assert_left_cleanly(user, rooms, marks)
    assert d.grep(r"<6>stopped exit_code=0")

    # While it is down, the phone removes one bookmark.
    first, second, removed = rooms
    user.phone.retract_bookmark(removed)
    mark = len(d.lines)
    d.start()
    d.wait_log(r"<6>session established", since=mark)
    user.wait_joined(first, rooms[first])
    user.wait_joined(second, rooms[second])
    user.barrier()
    assert user.daemon_nick(removed) is None


def test_sigint_exits_0_after_leaving_cleanly(user):
    rooms = {user.room(): "ctrl-c"}
    user.phone.publish_bookmark(*rooms, nick="ctrl-c")
    d = user.start()
    user.wait_joined(*rooms, "ctrl-c")
    marks = watch_leaves(user, rooms)

    assert d.stop(signal.SIGINT) == 0

    assert_left_cleanly(user, rooms, marks)


@pytest.mark.prosodies
def test_every_stop_ends_the_session_at_once(user):
    """Prosody 13 can leave TLS records it read in one go unprocessed while the session
    waits (its reading paused) until more bytes come: the closing <a/> and the stream's end,
    written as records of their own, left the end unread.  The stop gave up after 5 s, the
    connection dropped and the server kept the session for resumption: the daemon's resource
    stayed online for minutes (and a room's <r/> arriving meanwhile logged an internal
    error).  Eight stops in a row, each seen by the phone at once."""
    rooms = {user.room(prefix=f"stop{i}"): f"stop{i}" for i in range(3)}
    for room, nick in rooms.items():
        user.phone.publish_bookmark(room, nick=nick)
    d = user.start()
    for _ in range(8):
        for room, nick in rooms.items():
            user.wait_joined(room, nick)
        mark = len(user.phone.presences)
        assert d.stop() == 0
        wait_until(lambda m=mark: unavailable_from(user.phone, user.full_jid, m), message="not offline")
        d.start()
    assert not d.grep(r"internal error"), d.tail()


# -- SIGHUP ----------------------------------------------------------------------------------


def rewrite_config(d, change) -> None:
    config = tomllib.loads(d.config_file.read_text())
    change(config)
    d.config_file.write_text(to_toml(config))


def test_sighup_rereads_the_config_default_nick(user):
    plain, named = user.room(), user.room()
    user.phone.publish_bookmark(plain)
    user.phone.publish_bookmark(named, nick="fixed")
    d = user.start(extra={"rooms": {"default_nick": "first"}})
    user.wait_joined(plain, "first")
    user.wait_joined(named, "fixed")

    rewrite_config(d, lambda c: c["rooms"].update(default_nick="second"))
    d.send_signal(signal.SIGHUP)

    user.wait_joined(plain, "second")
    assert "first" not in user.bob.occupants(plain)
    user.settle()
    assert user.daemon_nick(named) == "fixed"


def test_sighup_rereads_the_log_level_and_the_relay_globs(user):
    """A reload once said "configuration reloaded" and kept both as they were."""
    room = user.room()
    user.phone.publish_bookmark(room)
    d = user.start(extra={"logging": {"level": "info"}})
    user.wait_joined(room)
    conv = user.other("Conversations.x1")  # never sends a command
    user.settle()
    assert not d.grep(r"^<7>")

    def change(c):
        c["logging"]["level"] = "debug"
        c.setdefault("relay", {})["clients"] = {"Conversations.*": "all"}

    rewrite_config(d, change)
    mark = len(d.lines)
    d.send_signal(signal.SIGHUP)
    d.wait_log(r"configuration reloaded", since=mark)
    user.bob.say(room, "after the reload")
    user.wait_relay(conv, "after the reload")
    assert d.grep(r"^<7>", since=mark)


def test_sighup_with_a_broken_config_keeps_the_daemon_running_as_it_was(user):
    room = user.room()
    user.phone.publish_bookmark(room)
    d = user.start(extra={"rooms": {"default_nick": "steady"}})
    user.wait_joined(room, "steady")
    good = d.config_file.read_text()

    d.config_file.write_text(good.replace("[rooms]", "[rooms]\nwhat is this = ", 1))
    d.send_signal(signal.SIGHUP)
    d.wait_log(r"<3>reload failed")
    d.config_file.write_text(good + "\n[unknown_section]\nx = 1\n")
    mark = len(d.lines)
    d.send_signal(signal.SIGHUP)
    d.wait_log(r"<3>reload failed", since=mark)

    assert d.running
    assert user.phone.ping(user.full_jid) == "result"
    user.barrier()  # still following the bookmarks, with the old settings
    assert user.daemon_nick(room) == "steady"
    assert not user.daemon_presences("unavailable")


# -- the log ---------------------------------------------------------------------------------


def test_the_log_never_shows_a_password_even_at_debug_and_every_line_has_a_priority(
    server, make_user
):
    account_pw, room_pw, new_room_pw, other_pw, skipped_pw = (
        "Acct-Pa55-q8Zr",
        "Room-Pa55-w3Xk",
        "Room-Pa55-n7Yt",
        "Other-Pa55-u2Vb",
        "Skip-Pa55-k4Jm",
    )
    localpart = f"sec{server.new_account().localpart}"
    account = Account(server.register(localpart, account_pw), localpart, account_pw)
    user = make_user(server, account=account)
    protected, unjoined, broken = user.room(password=room_pw), user.room(), user.room()
    user.phone.publish_bookmark(protected, nick="vault", password=room_pw)
    user.phone.publish_bookmark(unjoined, autojoin=False, password=other_pw)
    user.phone.publish_bookmark(broken, autojoin="maybe", password=skipped_pw)
    d = user.start(extra={"logging": {"level": "debug"}})
    user.wait_joined(protected, "vault")

    # The room's password changes, and the bookmark with it: a rejoin with the new one.
    user.set_room_password(protected, new_room_pw)
    mark = len(user.bob.presences)
    user.phone.publish_bookmark(protected, nick="vault", password=new_room_pw)
    user.bob.wait_presence(
        lambda p: str(p["from"]) == f"{protected}/vault" and p["type"] == "unavailable",
        since=mark,
    )
    user.wait_joined(protected, "vault")
    assert d.stop() == 0

    text = d.output()
    assert len(d.lines) > 100, "debug logging is not on"
    for secret in (account_pw, room_pw, new_room_pw, other_pw, skipped_pw):
        assert secret not in text, f"{secret} is in the log"
        for fragment in base64_forms(secret):
            assert fragment not in text, f"{secret} is in the log, base64-encoded"
    plain = base64.b64encode(f"\0{localpart}\0{account_pw}".encode()).decode()
    assert plain not in text
    bad = [line for line in d.lines if not re.match(r"<[0-7]>\S", line)]
    assert not bad, bad[:5]


def base64_forms(secret: str) -> list[str]:
    """What base64 of any payload containing `secret` must contain, at each of the three
    alignments: the encoding of the secret's bytes from a 3-byte group boundary on."""
    raw = secret.encode()
    return [base64.b64encode(raw[k : k + 3 * ((len(raw) - k) // 3)]).decode() for k in range(3)]
