"""Connecting: refused credentials, a server that is not there yet, a server restart.

The server-restart test restarts this module's server: it runs last here."""

from __future__ import annotations

import re
import time

import pytest

from harness import BOOKMARKS_NODE, TestClient, wait_until
from servers import Account, ProsodyServer

EX_NOPERM = 77


def wrong_password_run(user):
    wrong = Account(user.account.jid, user.account.localpart, "not-the-password")
    started = time.monotonic()
    d = user.start_as(wrong)
    rc = d.wait(timeout=30)
    return d, rc, time.monotonic() - started


def test_wrong_password_exits_77_at_once_without_retrying(user):
    d, rc, took = wrong_password_run(user)

    assert rc == EX_NOPERM, d.tail()
    assert took < 15, f"took {took:.1f} s to give up"
    assert not d.grep("connection failed|retry"), d.grep("connection failed|retry")
    assert len(d.grep(r"login failed")) == 1, d.grep(r"login failed")
    assert "not-the-password" not in d.output()
    assert not user.daemon_presences()  # it never came online


def test_wrong_password_says_so_in_one_clear_error_line_naming_the_account(user):
    d, rc, _ = wrong_password_run(user)

    assert rc == EX_NOPERM
    errors = d.grep(r"^<[0-3]>")
    assert len(errors) == 1, errors
    assert "login failed" in errors[0] and f"account={user.account.jid}" in errors[0], errors[0]
    assert "Traceback" not in d.output()


def test_unreachable_server_is_retried_with_growing_delays_until_it_is_there(
    tmp_path_factory, client, daemon
):
    if why_not := ProsodyServer.available():
        pytest.skip(why_not)
    server = ProsodyServer(tmp_path_factory.mktemp("late-prosody"))
    server.start()
    try:
        account, bob_account = server.new_account(), server.new_account()
        room = server.new_room()
        with TestClient(server, account, "phone") as phone:
            phone.publish_bookmark(room, nick="patient")
        with TestClient(server, bob_account, "bob") as bob:
            bob.join(room, "bob")  # the room exists (and persists)
        server.stop()  # nothing listens on the port now

        d = daemon(server, account)
        wait_until(lambda: len(d.grep("<4>connection failed")) >= 3, timeout=30)
        failures = d.grep("<4>connection failed")
        assert all(f"server=127.0.0.1:{server.port} " in line for line in failures), failures
        delays = [float(re.search(r"retry_in=([\d.]+)", line).group(1)) for line in failures]
        assert delays[0] < delays[1] < delays[2], delays
        assert d.running

        server.start()  # the same port
        bob = client(server, bob_account, "bob")
        bob.join(room, "bob")
        daemon_jid = f"{account.jid}/minimix"
        wait_until(
            lambda: any(o.jid == daemon_jid for o in bob.occupants(room).values()),
            timeout=40,  # the next attempt may be up to 12 s away
            message=lambda: f"the daemon never joined; bob sees {bob.occupants(room)}",
        )
        assert bob.occupants(room)["patient"].jid == daemon_jid
    finally:
        server.stop()


# -- last: restarts the module's server ---------------------------------------------------------


def test_server_restart_rejoins_every_room(user, client):
    server = user.server
    rooms = [user.room() for _ in range(3)]
    for i, room in enumerate(rooms):
        user.phone.publish_bookmark(room, nick=f"r{i}")
    d = user.start()
    for i, room in enumerate(rooms):
        user.wait_joined(room, f"r{i}")
    mark = len(d.lines)

    server.restart()

    d.wait_log(r"<6>session established", since=mark, timeout=40)
    # The loss is logged once, at warning, with why; no traceback, nothing at error level.
    # (An attempt made while the server is still starting fails, and says so.)
    lost = d.lines[mark:]
    (loss,) = [line for line in lost if line.startswith("<4>connection lost ")]
    why = loss.split(" error=", 1)[1].split(" logger=")[0]
    assert not [line for line in lost if line.startswith("<4>connection failed ") and why in line], lost
    assert not [line for line in lost if line.startswith(("<0>", "<1>", "<2>", "<3>", "<4>task failed"))], lost
    user.bob = client(server, user.bob.account, "bob")
    for room in rooms:
        user.bob.join(room, "bob")
    for i, room in enumerate(rooms):
        user.wait_joined(room, f"r{i}")
    # Bookmarks are followed again too (a new phone: the old one was cut off).
    user.phone = client(server, user.account, "phone", notify=[BOOKMARKS_NODE])
    user.phone.wait_caps_queried()
    user.barrier()
