"""`minimix doctor` against real servers, run as a user runs it:
`python -m minimix doctor --config FILE [--json]`.

The server differences must show up as the right statuses (Prosody: #compat and retract
notifications; ejabberd 23.01: neither, publish-options refused, no MAM #extended), failures
must say what to fix, and the doctor must never change the user's bookmarks or print the
password."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from harness import BOOKMARKS_NODE, LegacyBookmark, daemon_config, el_of, to_toml
from servers import Account, XmppServer

EX_NOPERM = 77
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
DOCTOR_BUDGET_S = 30  # the whole doctor, even when rooms do not answer


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    took: float

    @property
    def report(self) -> dict:
        return json.loads(self.stdout)

    @property
    def rows(self) -> dict[str, dict]:
        return {c["check"]: c for c in self.report["checks"]}

    def status(self, check: str) -> str:
        return self.rows[check]["status"]

    def __str__(self) -> str:
        return f"rc={self.rc} took={self.took:.1f}s\n{self.stdout}\nstderr:\n{self.stderr}"


@pytest.fixture
def doctor(tmp_path):
    """doctor(server, account, *args, extra=None) -> Run of `python -m minimix doctor`."""
    counter = iter(range(1, 1000))

    def run(server: XmppServer, account: Account, *args: str, extra: dict | None = None) -> Run:
        n = next(counter)
        config = tmp_path / f"doctor{n}.toml"
        config.write_text(to_toml(daemon_config(server, account, tmp_path / "state", extra=extra)))
        env = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "minimix", "doctor", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=DOCTOR_BUDGET_S + 30,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started)

    return run


def pep_nodes(client) -> set[str]:
    """The PEP nodes of the client's own account (disco#items on its bare JID)."""
    reply = client.iq("<query xmlns='http://jabber.org/protocol/disco#items'/>", client.bare)
    return {i.get("node") for i in el_of(reply).iter(f"{{{DISCO_ITEMS}}}item")}


def bookmark_snapshot(client) -> tuple[dict[str, str], list[LegacyBookmark]]:
    return (
        {room: b.raw_xml for room, b in client.get_bookmarks().items()},
        client.get_legacy_bookmarks(),
    )


def assert_no_secret(run: Run, account: Account) -> None:
    assert account.password not in run.stdout
    assert account.password not in run.stderr


# -- a healthy account, on both servers ------------------------------------------------------


@pytest.mark.interop
def test_doctor_shows_the_server_differences_and_changes_nothing(server, user, doctor):
    phone = user.phone
    room, gone = user.room(), server.new_room("gone")  # `gone` never existed
    phone.publish_bookmark(room, nick="me", password="room-secret")
    phone.publish_bookmark(gone, nick="me")
    off = user.room()
    phone.publish_bookmark(off, autojoin=False, name="not autojoin")
    before, nodes_before = bookmark_snapshot(phone), pep_nodes(phone)
    assert BOOKMARKS_NODE in nodes_before  # the server does list the account's PEP nodes

    run = doctor(server, user.account, "--json")

    assert run.rc == 0, run
    assert run.took < DOCTOR_BUDGET_S, run
    rows = run.rows
    assert rows["connection"]["status"] == "ok"
    assert rows["tls"]["status"] == "ok" and "ca_file" in rows["tls"]["detail"], rows["tls"]
    assert rows["login"]["status"] == "ok" and "SCRAM-SHA-1" in rows["login"]["detail"]
    assert rows["stream management"]["status"] == "ok", rows["stream management"]
    assert rows["account mam"]["status"] == "ok"
    assert rows["carbons"]["status"] == "info"
    assert rows["pep notify"]["status"] == "ok", rows["pep notify"]
    if server.bookmarks_compat:
        assert rows["bookmarks"]["status"] == "ok" and "#compat" in rows["bookmarks"]["detail"]
    else:
        assert rows["bookmarks"]["status"] == "warn"
        assert "without #compat" in rows["bookmarks"]["detail"]
        assert "poll_interval_s" in rows["bookmarks"]["detail"]
    if server.retract_notifications:
        assert rows["retract notify"]["status"] == "ok", rows["retract notify"]
    else:
        assert rows["retract notify"]["status"] == "warn", rows["retract notify"]
        assert "polling every poll_interval_s" in rows["retract notify"]["detail"]
    if server.kind == "ejabberd":  # rejects max_items in publish-options (#3044)
        assert rows["publish-options"]["status"] == "info"
        assert "resource-constraint" in rows["publish-options"]["detail"]
    else:
        assert rows["publish-options"]["status"] == "ok"
    # The phone published with XEP-0402 options (ejabberd: then configured max_items=max).
    assert rows["bookmark node size"]["status"] == "ok", rows["bookmark node size"]
    assert rows["bookmark node access"]["status"] == "ok", rows["bookmark node access"]

    assert rows["rooms"]["detail"].startswith("2 autojoin rooms"), rows["rooms"]
    assert f"room {off}" not in rows
    here = rows[f"room {room}"]
    assert "reachable" in here["detail"] and "self-ping of me answered" in here["detail"], here
    if server.mam_extended:
        assert here["status"] == "ok", here
    else:
        assert here["status"] == "warn" and "#extended" in here["detail"], here
    missing = rows[f"room {gone}"]
    assert missing["status"] == "warn" and "does not exist" in missing["detail"], missing
    assert missing["fix"]

    assert run.report["summary"]["fail"] == 0
    assert run.report["summary"]["exit_code"] == 0
    # Read only: the bookmarks (both stores) byte for byte, and no scratch node left behind.
    assert bookmark_snapshot(phone) == before
    assert pep_nodes(phone) == nodes_before
    assert_no_secret(run, user.account)
    assert "room-secret" not in run.stdout


@pytest.mark.interop
def test_bookmark_node_configuration_is_reported_as_it_really_is(server, user, doctor):
    """A node created by a plain publish (no publish-options) keeps the server's defaults:
    ejabberd gives it max_items=1, so a second bookmark would replace the first."""
    user.phone.publish_bookmark(user.room(), nick="me", options=False)
    real = user.phone.node_config(BOOKMARKS_NODE)

    run = doctor(server, user.account, "--json")

    assert run.rc == 0, run
    size, access = run.rows["bookmark node size"], run.rows["bookmark node access"]
    max_items = real["pubsub#max_items"][0]
    if server.kind == "ejabberd":
        assert max_items == "1"
    assert size["status"] == ("warn" if max_items == "1" else "ok"), (real, size)
    if max_items == "1":
        assert "replace the first" in size["detail"] and "max_items=max" in size["fix"]
    model = real["pubsub#access_model"][0]
    assert access["status"] == ("ok" if model == "whitelist" else "warn"), (real, access)
    assert model in access["detail"]


def test_human_table_is_the_default(server, user, doctor):
    user.phone.publish_bookmark(user.room(), nick="me")

    run = doctor(server, user.account)

    assert run.rc == 0, run
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    for check in ("connection", "tls", "login", "bookmarks", "retract notify", "state dir"):
        assert any(line.startswith(check + " ") for line in lines), (check, run.stdout)
    assert "nothing failed (exit 0)" in lines[-1], lines[-1]
    assert_no_secret(run, user.account)


def test_room_self_ping_while_the_daemon_is_in_the_room(server, user, doctor):
    """The doctor's own resource never replaces the daemon's session, and a room the daemon
    sits in answers the self-ping too."""
    room = user.room()
    user.phone.publish_bookmark(room, nick="me")
    d = user.start()
    user.wait_joined(room, "me")
    mark = len(d.lines)

    run = doctor(server, user.account, "--json")

    assert run.rc == 0, run
    row = run.rows[f"room {room}"]
    assert row["status"] == "ok" and "self-ping of me answered" in row["detail"], row
    user.settle()
    assert user.daemon_nick(room) == "me"
    assert d.running and not d.grep("session established", since=mark)


def test_legacy_only_bookmarks_are_a_warning(prosody_legacy, make_user, doctor):
    user = make_user(prosody_legacy, notify=False)
    room = user.room()
    user.phone.set_legacy_bookmarks([LegacyBookmark(room, autojoin=True, nick="old")])

    run = doctor(prosody_legacy, user.account, "--json")

    assert run.rc == 0, run
    assert run.status("bookmarks") == "warn"
    assert "legacy XEP-0048 bookmarks only" in run.rows["bookmarks"]["detail"]
    assert "self-ping of old answered" in run.rows[f"room {room}"]["detail"]
    assert run.status("bookmark node size") == "info"  # no XEP-0402 node yet


# -- failures -------------------------------------------------------------------------------


@pytest.mark.interop
def test_wrong_ca_is_a_tls_failure_and_the_rest_is_skipped(server, doctor):
    account = server.new_account()

    run = doctor(server, account, "--json", extra={"account": {"ca_file": str(server.wrong_ca_file)}})

    assert run.rc == 1, run
    tls = run.rows["tls"]
    assert tls["status"] == "fail" and "not trusted" in tls["detail"], tls
    assert "ca_file" in tls["fix"], tls
    network = ["login", "bookmarks", "retract notify", "pep notify", "rooms", "stream management"]
    assert all(run.status(c) == "skip" for c in network), run
    assert run.status("state dir") == "ok"  # local checks still run
    assert run.took < 20, run
    assert_no_secret(run, account)


@pytest.mark.interop
def test_wrong_password_exits_77_without_showing_it(server, doctor):
    account = server.new_account()
    wrong = Account(account.jid, account.localpart, "not-the-Passw0rd")

    run = doctor(server, wrong, "--json")

    assert run.rc == EX_NOPERM, run
    assert run.status("tls") == "ok"
    login = run.rows["login"]
    assert login["status"] == "fail" and "refused" in login["detail"], login
    assert "password" in login["fix"]
    assert run.status("bookmarks") == "skip"
    assert run.report["summary"]["exit_code"] == EX_NOPERM
    assert_no_secret(run, wrong)


def test_certificate_not_naming_the_domain_is_a_tls_failure(server, doctor):
    jid = server.register("mismatched", "pw-mismatched", domain=server.mismatch_domain)

    run = doctor(server, Account(jid, "mismatched", "pw-mismatched"), "--json")

    assert run.rc == 1, run
    tls = run.rows["tls"]
    assert tls["status"] == "fail", tls
    assert f"not {server.mismatch_domain}" in tls["detail"] and "localhost" in tls["detail"], tls


def test_nothing_listening_is_a_connection_failure(server, doctor):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    run = doctor(server, server.new_account(), "--json", extra={"account": {"port": port}})

    assert run.rc == 1, run
    assert run.status("connection") == "fail" and "refused" in run.rows["connection"]["detail"]
    assert run.status("tls") == "skip"


def test_a_server_that_never_answers_is_given_up_in_time(server, doctor):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (in the backlog), never speaks

        run = doctor(server, server.new_account(), extra={"account": {"port": silent.getsockname()[1]}})

    assert run.rc == 1, run
    assert run.took < 20, run
    assert "connection" in run.stdout and "no session within" in run.stdout, run



BLACKHOLE = (
    ">prosody.minimix_doctor_blackhole = function(event) "
    "local to = event.stanza.attr.to or ''; "
    "if to:match('^silent') then return true end end; "
    "for _, name in ipairs({'iq/bare', 'iq/full'}) do "
    "prosody.hosts['conference.localhost'].events.add_handler(name, prosody.minimix_doctor_blackhole, 1000) end"
)
UNBLACKHOLE = (
    ">for _, name in ipairs({'iq/bare', 'iq/full'}) do "
    "prosody.hosts['conference.localhost'].events.remove_handler(name, prosody.minimix_doctor_blackhole) end"
)


def test_rooms_that_never_answer_cost_a_bounded_time(prosody, user, doctor):
    """Rooms whose service swallows every IQ: warned about, and the doctor still ends in time."""
    silent = [prosody.new_room("silent") for _ in range(3)]
    for room in silent:
        user.phone.publish_bookmark(room, nick="me")
    prosody.shell(BLACKHOLE)
    try:
        with pytest.raises(TimeoutError):  # the black hole works
            user.phone.ping(f"{silent[0]}/me", timeout=1)
        run = doctor(prosody, user.account, "--json")
    finally:
        prosody.shell(UNBLACKHOLE)

    assert run.rc == 0, run
    assert run.took < DOCTOR_BUDGET_S, run
    for room in silent:
        row = run.rows[f"room {room}"]
        assert row["status"] == "warn" and "unreachable (disco#info: timeout)" in row["detail"], row
    assert run.status("retract notify") == "ok"  # the rest was checked meanwhile
    assert user.phone.ping(f"{silent[0]}/me") == "item-not-found"  # answered: no black hole left
