"""Self-tests of the integration harness against the real servers (fast: well under a minute)."""

from __future__ import annotations

import signal
import sys
import textwrap
import tomllib
from types import SimpleNamespace

import pytest

from harness import (
    BOOKMARKS_NODE,
    NS,
    ConnectError,
    LegacyBookmark,
    StanzaError,
    TestClient,
    el_of,
    muc_codes,
    wait_until,
)
from servers import Account

# -- servers, accounts, rooms -----------------------------------------------------------


@pytest.mark.interop
def test_two_clients_join_a_room_and_see_each_other(server, client):
    assert server.port not in (5222, 0) and server.ca_file.exists()
    alice, bob = client(server, resource="laptop"), client(server, resource="phone")
    room = server.new_room()

    created = alice.join(room, "alice")
    assert {110, 201} <= muc_codes(created)
    bob.join(room, "bob")
    alice.wait_occupant(room, "bob")
    assert set(bob.occupants(room)) == {"alice", "bob"}
    assert bob.occupants(room)["alice"].affiliation == "owner"

    with pytest.raises(StanzaError) as taken:
        client(server).join(room, "bob")
    assert taken.value.condition == "conflict"

    alice.say(room, "hello bob")
    assert bob.wait_groupchat(room, "hello bob")["from"] == f"{room}/alice"
    assert bob.ping(f"{room}/bob") == "result"  # XEP-0410: joined

    bob.leave(room)
    alice.wait_occupant(room, "bob", present=False)
    assert bob.ping(f"{room}/bob") != "result"


@pytest.mark.interop
def test_kick_by_owner(server, client):
    owner, victim = client(server), client(server)
    room = server.new_room()
    owner.join(room, "owner")
    victim.join(room, "victim")

    owner.kick(room, "victim", "behave")

    wait_until(lambda: not victim.in_room(room), message="victim still in room")
    gone = victim.self_presence(room)
    assert 307 in muc_codes(gone)
    assert gone.xml.findtext("muc_user:x/muc_user:item/muc_user:reason", namespaces=NS) == "behave"
    owner.wait_occupant(room, "victim", present=False)


@pytest.mark.interop
def test_owner_operations(server, client):
    owner, member, outsider = client(server), client(server), client(server)
    room, elsewhere = server.new_room(), server.new_room()
    owner.join(room, "owner")
    member.join(room, "member")

    member.change_nick(room, "renamed")
    owner.wait_occupant(room, "renamed")
    owner.wait_occupant(room, "member", present=False)

    owner.set_affiliation(room, member.bare, "member")
    owner.set_members_only(room)
    assert owner.room_config(room)["muc#roomconfig_membersonly"][0] in ("1", "true")
    with pytest.raises(StanzaError) as refused:
        outsider.join(room, "outsider")
    assert refused.value.condition == "registration-required"

    owner.ban(room, member.bare, "out")
    wait_until(
        lambda: 301 in muc_codes(member.self_presence(room)), message="no 301 for the member"
    )

    owner.destroy_room(room, alternate=elsewhere, reason="moving")
    wait_until(lambda: not owner.in_room(room), message="owner still in the destroyed room")
    destroy = owner.self_presence(room).xml.find("muc_user:x/muc_user:destroy", NS)
    assert (destroy.get("jid"), destroy.findtext("muc_user:reason", namespaces=NS)) == (
        elsewhere,
        "moving",
    )


@pytest.mark.interop
def test_bookmarks_publish_get_retract(server, client):
    """On ejabberd the second bookmark must not replace the first (publish fallback)."""
    c = client(server)
    r1, r2 = server.new_room(), server.new_room()
    c.publish_bookmark(
        r1,
        name="One",
        nick="me",
        password="s3cret",
        extensions_xml="<state xmlns='urn:example:x' v='1'/>",
    )
    c.publish_bookmark(r2, autojoin=False)

    marks = c.get_bookmarks()
    assert set(marks) == {r1, r2}
    assert (marks[r1].name, marks[r1].nick, marks[r1].password, marks[r1].autojoin) == (
        "One",
        "me",
        "s3cret",
        True,
    )
    assert "urn:example:x" in marks[r1].extensions_xml
    assert marks[r2].autojoin is False
    assert c.node_config(BOOKMARKS_NODE)["pubsub#max_items"] == ["max"]

    c.retract_bookmark(r1)
    assert set(c.get_bookmarks()) == {r2}


@pytest.mark.interop
def test_bookmark_notifications_reach_notify_resources(server, client):
    account = server.new_account()
    phone = client(server, account, "phone", notify=[BOOKMARKS_NODE])
    laptop = client(server, account, "laptop")
    caps_query = phone.wait_caps_queried()
    room = server.new_room()
    laptop.publish_bookmark(room)
    phone.wait_message(
        lambda m: (
            m.xml.find(
                f".//pubsub_event:items[@node='{BOOKMARKS_NODE}']/pubsub_event:item[@id='{room}']",
                NS,
            )
            is not None
        )
    )
    # Where the caps query comes from: Prosody asks from the bare JID, ejabberd from our own full JID.
    assert caps_query["from"].bare == account.jid


@pytest.mark.interop
def test_legacy_bookmarks_roundtrip(server, client):
    c = client(server)
    room = server.new_room()
    marks = [LegacyBookmark(room, autojoin=True, name="Legacy", nick="old", password="pw")]
    c.set_legacy_bookmarks(marks)
    assert c.get_legacy_bookmarks() == marks
    # Prosody's mod_bookmarks mirrors them into XEP-0402; ejabberd keeps the stores apart.
    assert (room in c.get_bookmarks()) == server.bookmarks_compat


def test_legacy_bookmarks_stay_legacy_without_mod_bookmarks(prosody_legacy, client):
    c = client(prosody_legacy)
    room = prosody_legacy.new_room()
    c.set_legacy_bookmarks([LegacyBookmark(room, autojoin=True)])
    assert [b.jid for b in c.get_legacy_bookmarks()] == [room]
    assert c.get_bookmarks() == {}
    assert "urn:xmpp:bookmarks:1#compat" not in c.disco_info(c.bare).features


@pytest.mark.interop
def test_capability_facts_match_the_server(server, client):
    c = client(server)
    room = server.new_room()
    c.join(room, "me")
    assert (
        "urn:xmpp:bookmarks:1#compat" in c.disco_info(c.bare).features
    ) == server.bookmarks_compat
    assert ("urn:xmpp:mam:2#extended" in c.disco_info(room).features) == server.mam_extended
    c.say(room, "counted")
    c.wait_groupchat(room, "counted")
    rsm_max_0 = f"<query xmlns='{NS['mam']}'><set xmlns='{NS['rsm']}'><max>0</max></set></query>"
    count = el_of(c.iq(rsm_max_0, room, "set")).find("mam:fin/rsm:set/rsm:count", NS)
    assert (count is not None) == server.mam_counts


# -- TLS fixtures are meaningful ---------------------------------------------------------


@pytest.mark.interop
def test_wrong_ca_and_hostname_mismatch_are_refused(server, client):
    account = server.new_account()
    with pytest.raises(ConnectError, match="certificate verify failed"):
        TestClient(server, account, ca_file=server.wrong_ca_file, timeout=10).connect()

    localpart = f"mm{account.localpart}"
    other = Account(server.register(localpart, "pw", server.mismatch_domain), localpart, "pw")
    with pytest.raises(ConnectError, match="Hostname mismatch"):
        TestClient(server, other, timeout=10).connect()

    client(server, account)  # control: the right CA and host connect


# -- Prosody admin shell ---------------------------------------------------------------


def test_remove_occupant_server_side_makes_a_ghost(prosody, client):
    ghost, witness = client(prosody), client(prosody)
    room = prosody.new_room()
    ghost.join(room, "ghost")
    witness.join(room, "witness")
    ghost.wait_occupant(room, "witness")
    before = len(ghost.presences)

    assert "removed" in prosody.remove_occupant(room, "ghost")

    gone = witness.wait_presence(
        lambda p: p["from"] == f"{room}/ghost" and p["type"] == "unavailable"
    )
    assert 333 in muc_codes(gone)
    assert ghost.in_room(room)  # the client was not told ...
    assert not any(p["from"].bare == room for p in ghost.presences[before:])
    assert ghost.ping(f"{room}/ghost") == "not-acceptable"  # ... but the room forgot it


def test_prosodyctl_shell_reaches_the_running_server(prosody, client):
    room = prosody.new_room()
    client(prosody).join(room, "me")
    r = prosody.prosodyctl("shell", f"muc:list('{prosody.muc_domain}')")
    assert r.returncode == 0 and room in r.stdout, r.stdout + r.stderr


# -- lifecycle (last: they restart the module's server) ---------------------------------


@pytest.mark.interop
def test_restart_and_crash_keep_accounts_and_rooms(server, client):
    account = server.new_account()
    room = server.new_room()
    owner = client(server, account)
    owner.join(room, "owner")
    owner.disconnect()
    old_pid, port = server.pid, server.port

    server.restart()
    assert server.port == port and server.pid != old_pid
    wait_until(lambda: not _alive(old_pid), message=f"old server pid {old_pid} still alive")
    c = client(server, account)
    assert 201 not in muc_codes(c.join(room, "owner"))  # the room survived
    c.disconnect()

    crashed = server.pid
    server.kill()
    assert not _alive(crashed)
    server.start()
    client(server, account)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- harness pieces without a server -----------------------------------------------------


def test_wait_until_returns_the_value_or_fails_with_the_last_one():
    values = iter([0, None, "ready"])
    assert wait_until(lambda: next(values), timeout=5, interval=0) == "ready"
    with pytest.raises(AssertionError, match=r"never true \(after 0.05 s; last value: \[\]\)"):
        wait_until(lambda: [], timeout=0.05, message="never true")
    with pytest.raises(AssertionError, match=r"last value: ValueError\(42\)"):
        wait_until(lambda: _raise(ValueError(42)), timeout=0.05)


def _raise(exc):
    raise exc


STAND_IN = textwrap.dedent("""
    import signal, sys, tomllib, os
    args = sys.argv[1:]
    cfg = tomllib.load(open(args[args.index("--config") + 1], "rb"))
    print("starting as", cfg["account"]["jid"], "state", cfg["storage"]["state_dir"], flush=True)
    print("extra", cfg.get("relay", {}).get("mode"), os.environ.get("STANDIN_GREETING"), file=sys.stderr, flush=True)
    if "--ignore-term" in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: (print("stopping", flush=True), sys.exit(0)))
    print("ready", flush=True)
    while True:
        signal.pause()
""")


def _stand_in(daemon, tmp_path, *flags, **kw):
    script = tmp_path / "standin.py"
    script.write_text(STAND_IN)
    fake_server = SimpleNamespace(host="127.0.0.1", port=1, ca_file=tmp_path / "ca.crt")
    account = Account("someone@localhost", "someone", "pw")
    return daemon(
        fake_server,
        account,
        argv=[sys.executable, str(script), "run", "--config", "{config}", *flags],
        **kw,
    )


def test_daemon_helper_runs_stops_and_restarts(daemon, tmp_path):
    d = _stand_in(
        daemon,
        tmp_path,
        extra={"relay": {"mode": "mentions"}, "account": {"resource": "bot"}},
        env={"STANDIN_GREETING": "hi"},
    )

    assert d.wait_log(r"starting as (\S+)").group(1) == "someone@localhost"
    d.wait_log(r"^extra mentions hi$")  # stderr is captured too
    d.wait_log("ready")
    config = tomllib.loads(d.config_file.read_text())
    assert config["account"] == {
        "jid": "someone@localhost",
        "resource": "bot",
        "password": "pw",
        "host": "127.0.0.1",
        "port": 1,
        "ca_file": str(tmp_path / "ca.crt"),
    }
    assert config["relay"] == {"mode": "mentions"} and "state_dir" in config["storage"]

    assert d.stop() == 0
    assert "stopping" in d.lines and "ready" in d.log_file.read_text()
    with pytest.raises(AssertionError, match="exited with 0 without a line matching"):
        d.wait_log("never printed")

    first_pid, mark = d.pid, len(d.lines)
    d.start()
    d.wait_log("ready", since=mark)
    assert d.pid != first_pid and not _alive(first_pid)


def test_daemon_helper_falls_back_to_sigkill(daemon, tmp_path):
    d = _stand_in(daemon, tmp_path, "--ignore-term")
    d.wait_log("ready")
    assert d.stop(signal.SIGTERM, timeout=0.5) == -signal.SIGKILL
    assert not _alive(d.pid)
