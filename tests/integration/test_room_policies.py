"""Rooms that stay joined: what minimix does about everything a room or a server does to it.

Moderators and occupants are independent slixmpp clients; the daemon runs from its config
file as a user runs it, with short timers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import BOOKMARKS_NODE, wait_until
from harness.client import StanzaError

FAST = {
    "rooms": {
        "kick_rejoin_delay_s": 1,
        "nick_regain_interval_s": 2,
        "backoff_base_s": 0.5,
        "backoff_cap_s": 3,
        "self_ping_idle_s": 2,
        "self_ping_retry_s": 1,
    }
}


def status(d) -> dict:
    """`minimix status --json` for the daemon's config (its state dir)."""
    out = subprocess.run(
        [sys.executable, "-m", "minimix", "status", "--json", "--config", str(d.config_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(out.stdout) if out.stdout.startswith("{") else {}


def room_status(d, room: str) -> dict:
    return next((r for r in status(d).get("rooms", []) if r["room"] == room), {})


@pytest.fixture
def setup(server, client, daemon):
    """An account (alice) with an editing client, an owner (bob) of fresh rooms, and a runner."""

    class Setup:
        alice = server.new_account("alice")
        bob_account = server.new_account("bob")
        editor = client(server, alice, "editor", notify=[BOOKMARKS_NODE])
        bob = client(server, bob_account, "desk")

        def room(self, nick="bob", **config):
            room = server.new_room()
            self.bob.join(room, nick)
            if config:
                self.bob.configure_room(room, config)
            return room

        def bookmark(self, room, **kw):
            kw.setdefault("nick", "alice")
            self.editor.publish_bookmark(room, **kw)

        def start(self, extra=None):
            merged = {"rooms": {**FAST["rooms"], **((extra or {}).get("rooms", {}))}}
            return daemon(server, self.alice, extra={**(extra or {}), **merged})

    return Setup()


def sees(client, room, nick):
    return nick in client.occupants(room)


def disco_error(client, jid) -> str | None:
    try:
        client.disco_info(jid)
    except StanzaError as exc:
        return exc.condition
    return None


@pytest.mark.interop
def test_nick_conflict_falls_back_then_regains_when_holder_leaves(setup, server, client):
    room = setup.room()
    holder = client(server, server.new_account("carol"), "x")
    holder.join(room, "alice")  # someone else holds alice's nick
    setup.bookmark(room, nick="alice")
    setup.start()
    wait_until(lambda: sees(setup.bob, room, "alice_"), message="joined with the fallback nick")
    holder.leave(room)
    wait_until(
        lambda: sees(setup.bob, room, "alice") and not sees(setup.bob, room, "alice_"),
        message="regained the wanted nick once its holder left",
    )


def test_nick_regained_on_schedule_when_holder_changes_nick_silently(setup, server, client):
    room = setup.room()
    holder = client(server, server.new_account("carol"), "x")
    holder.join(room, "alice")
    setup.bookmark(room, nick="alice")
    setup.start()
    wait_until(lambda: sees(setup.bob, room, "alice_"))
    holder.change_nick(room, "carol")
    wait_until(
        lambda: sees(setup.bob, room, "alice"), message="regained after the holder's nick change"
    )


@pytest.mark.interop
def test_kick_rejoins_after_the_delay(setup):
    room = setup.room()
    setup.bookmark(room)
    d = setup.start()
    wait_until(lambda: sees(setup.bob, room, "alice"))
    setup.bob.kick(room, "alice", "cool down")
    wait_until(lambda: not sees(setup.bob, room, "alice"), message="kicked")
    wait_until(
        lambda: sees(setup.bob, room, "alice"),
        timeout=15,
        message="rejoined after kick_rejoin_delay_s",
    )
    d.wait_log(r"room state room=\S+ from=joined to=backoff reason=\"kicked by bob")


def test_three_kicks_give_up(setup):
    room = setup.room()
    setup.bookmark(room)
    d = setup.start({"rooms": {"kick_rejoin_max": 3}})
    for _ in range(2):
        wait_until(lambda: sees(setup.bob, room, "alice"))
        setup.bob.kick(room, "alice")
        wait_until(lambda: not sees(setup.bob, room, "alice"))
    wait_until(lambda: sees(setup.bob, room, "alice"))
    setup.bob.kick(room, "alice")
    d.wait_log(r"<4>room state room=\S+ from=joined to=gave-up reason=\"kicked 3 times")
    wait_until(
        lambda: room_status(d, room).get("state") == "gave-up", message="status shows gave-up"
    )
    assert not sees(setup.bob, room, "alice")


@pytest.mark.interop
def test_ban_is_never_retried_and_autojoin_is_turned_off(setup):
    room = setup.room()
    setup.bookmark(room, name="Banned here", extensions_xml="<keep xmlns='urn:example:x'>me</keep>")
    d = setup.start()
    wait_until(lambda: sees(setup.bob, room, "alice"))
    setup.bob.ban(room, setup.alice.jid, "spam")
    bookmark = wait_until(
        lambda: (b := setup.editor.get_bookmarks().get(room)) is not None and not b.autojoin and b,
        message="bookmark rewritten with autojoin=false",
    )
    assert bookmark.name == "Banned here"  # every other field kept
    assert "urn:example:x" in (bookmark.extensions_xml or "")
    d.wait_log(r"room state room=\S+ from=joined to=gave-up reason=\"banned by bob: spam")
    assert not sees(setup.bob, room, "alice")


def test_ban_keep_bookmark(setup):
    room = setup.room()
    setup.bookmark(room)
    d = setup.start({"rooms": {"on_ban": "keep-bookmark"}})
    wait_until(lambda: sees(setup.bob, room, "alice"))
    setup.bob.ban(room, setup.alice.jid)
    d.wait_log(r"to=gave-up reason=\"banned")
    assert setup.editor.get_bookmarks()[room].autojoin  # left alone


def test_forbidden_on_join_gives_up(setup):
    room = setup.room()
    setup.bob.ban(room, setup.alice.jid)
    setup.bookmark(room)
    d = setup.start({"rooms": {"on_ban": "keep-bookmark"}})
    d.wait_log(r"to=gave-up reason=\"banned: join forbidden")


@pytest.mark.interop
def test_destroyed_room_with_venue_moves_the_bookmark_and_joins_it(setup):
    room, venue = setup.room(), setup.room()
    setup.bookmark(room, nick="al", name="Old home")
    setup.start()
    wait_until(lambda: sees(setup.bob, room, "al"))
    setup.bob.destroy_room(room, alternate=venue, reason="moving")
    wait_until(
        lambda: venue in setup.editor.get_bookmarks() and room not in setup.editor.get_bookmarks(),
        message="bookmark moved to the alternate venue",
    )
    moved = setup.editor.get_bookmarks()[venue]
    assert (moved.nick, moved.name, moved.autojoin) == ("al", "Old home", True)
    wait_until(lambda: sees(setup.bob, venue, "al"), message="joined the new room")


def test_a_venue_bookmarked_already_keeps_its_bookmark_and_the_daemon(setup):
    """The move once overwrote the venue's own bookmark (nick, name), and the daemon left it."""
    room, venue = setup.room(), setup.room()
    setup.bookmark(room, nick="al", name="Old home")
    setup.bookmark(venue, nick="vee", name="Mine")
    d = setup.start()
    wait_until(lambda: sees(setup.bob, room, "al") and sees(setup.bob, venue, "vee"))
    setup.bob.destroy_room(room, alternate=venue, reason="moving")
    d.wait_log(rf"bookmark updated room={room} .*autojoin off.*bookmarked already")
    marks = setup.editor.get_bookmarks()
    assert not marks[room].autojoin
    assert (marks[venue].nick, marks[venue].name, marks[venue].autojoin) == ("vee", "Mine", True)
    assert sees(setup.bob, venue, "vee")


def test_a_room_named_as_its_own_venue_keeps_its_bookmark(setup):
    room = setup.room()
    setup.bookmark(room, nick="al")
    d = setup.start()
    wait_until(lambda: sees(setup.bob, room, "al"))
    setup.bob.destroy_room(room, alternate=room, reason="moving")
    d.wait_log(rf"bookmark updated room={room} .*autojoin off.*the venue is the room itself")
    assert not setup.editor.get_bookmarks()[room].autojoin  # still there


def test_room_destroyed_while_away_is_gone(setup):
    room = setup.room()
    setup.bob.destroy_room(room)  # Prosody remembers it: joining gives <gone/>
    setup.bookmark(room)
    d = setup.start()
    d.wait_log(rf"room={room} from=joining to=gave-up reason=\"the room is gone")
    wait_until(lambda: not setup.editor.get_bookmarks()[room].autojoin, message="autojoin off")


def test_destroyed_room_without_venue_turns_autojoin_off(setup):
    room = setup.room()
    setup.bookmark(room)
    setup.start()
    wait_until(lambda: sees(setup.bob, room, "alice"))
    setup.bob.destroy_room(room, reason="bye")
    wait_until(lambda: not setup.editor.get_bookmarks()[room].autojoin, message="autojoin off")


def test_members_only_gives_up_with_reason(setup):
    room = setup.room()
    setup.bookmark(room)
    d = setup.start()
    wait_until(lambda: sees(setup.bob, room, "alice"))
    setup.bob.set_members_only(room, True)
    d.wait_log(
        r"to=gave-up reason=\"(the room became members-only|removed by an affiliation change)"
    )
    closed = setup.room(**{"muc#roomconfig_membersonly": True})
    setup.bookmark(closed)
    d.wait_log(rf"room={closed} from=joining to=gave-up reason=\"members-only room, not a member")


def test_wrong_password_gives_up_until_the_bookmark_changes(setup):
    room = setup.room(
        **{"muc#roomconfig_passwordprotectedroom": True, "muc#roomconfig_roomsecret": "r1ght-pw"}
    )
    setup.bookmark(room, password="wr0ng-pw")
    d = setup.start()
    d.wait_log(rf"room={room} from=joining to=gave-up reason=\"password required or wrong")
    setup.bookmark(room, password="r1ght-pw")
    wait_until(
        lambda: sees(setup.bob, room, "alice"),
        message="joined once the bookmark has the right password",
    )


def test_room_that_did_not_exist_is_not_created(setup, server):
    room = server.new_room()  # never created
    setup.bookmark(room)
    d = setup.start()
    d.wait_log(rf"room={room} from=joining to=gave-up reason=\"the room did not exist")
    wait_until(lambda: not setup.editor.get_bookmarks()[room].autojoin, message="autojoin off")
    wait_until(
        lambda: disco_error(setup.bob, room) in ("item-not-found", "gone"),
        message="room destroyed again",
    )


def test_ghost_is_detected_by_self_ping_and_rejoined(setup, server):
    if not hasattr(server, "remove_occupant"):
        pytest.skip("needs a server-side way to drop an occupant silently")
    room = setup.room()
    setup.bookmark(room)
    d = setup.start()
    wait_until(lambda: sees(setup.bob, room, "alice"))
    server.remove_occupant(room, "alice")  # the room forgets alice; the daemon is not told
    d.wait_log(
        r"room state room=\S+ from=joined to=waiting reason=\"self-ping: no longer in the room"
    )
    wait_until(lambda: sees(setup.bob, room, "alice"), message="rejoined after the self-ping")


def test_occupants_are_tracked_and_shown_by_status(setup, server, client):
    room = setup.room()
    carol = client(server, server.new_account("carol"), "x")
    carol.join(room, "carol")
    setup.bookmark(room)
    d = setup.start()
    wait_until(lambda: room_status(d, room).get("occupants") == 3, message="alice, bob, carol")
    carol.change_nick(room, "caroline")
    carol.leave(room)
    wait_until(lambda: room_status(d, room).get("occupants") == 2, message="carol's leave seen")
    out = subprocess.run(
        [sys.executable, "-m", "minimix", "status", "--config", str(d.config_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and room in out.stdout and "joined" in out.stdout


@pytest.mark.interop
def test_server_restart_rejoins_every_room(setup, server, client):
    rooms = [setup.room() for _ in range(3)]
    for room in rooms:
        setup.bookmark(room)
    d = setup.start()
    for room in rooms:
        wait_until(lambda r=room: sees(setup.bob, r, "alice"))
    server.restart()
    bob = client(server, setup.bob_account, "desk2")
    for room in rooms:
        bob.join(room, "bob")
    for room in rooms:
        wait_until(lambda r=room: sees(bob, r, "alice"), timeout=60, message=f"rejoined {room}")
    assert d.running


@pytest.mark.interop
def test_writing_a_bookmark_repairs_a_node_that_keeps_one_item(setup):
    """A node created by a plain publish keeps one item (and is readable by contacts): the
    daemon's first write configures it (max_items=max, whitelist), so no bookmark is lost."""
    room, other = setup.room(), setup.room()
    setup.editor.publish_bookmark(room, nick="alice", options=False)
    assert setup.editor.node_config(BOOKMARKS_NODE)["pubsub#max_items"] == ["1"]  # the trap
    setup.start()
    wait_until(lambda: sees(setup.bob, room, "alice"))
    setup.bob.ban(room, setup.alice.jid)
    wait_until(lambda: not setup.editor.get_bookmarks()[room].autojoin, message="autojoin off")
    config = setup.editor.node_config(BOOKMARKS_NODE)
    assert config["pubsub#max_items"] in (["max"], ["10000"]) or int(config["pubsub#max_items"][0]) > 1
    assert config["pubsub#access_model"] == ["whitelist"]
    setup.editor.publish_bookmark(other, nick="alice", options=False)
    assert {room, other} <= set(setup.editor.get_bookmarks())
