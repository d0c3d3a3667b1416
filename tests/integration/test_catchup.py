"""Catch-up: what a room said while the daemon was away reaches the opted-in clients,
from the room's archive (MAM), once each, in order, with the original time.

The daemon is stopped (SIGTERM) while bob talks, and started again. Every relay is
judged on the stanza the client received: its fallback body says which message it is,
its ``<forwarded/>`` carries the original with the room's ``<stanza-id/>`` and its
``<delay/>``. "Exactly these, once each" is checked after a later live message reached
the client: the daemon sends to one client in order, so nothing before it is still due.

The rooms have history before the daemon first joins them, and the tests wait until the
daemon has stored where their archive ends: a room that is silent at the first join, and
a relay still unacknowledged at a stop, are pinned down by tests of their own.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import NS, StanzaError, tostring, wait_until
from harness.relays import answers_to, post, relays_to, tally, texts, wait_text
from harness.store import in_flight, query, room_state, state_dir
from servers.prosody import lua_str

# Both Prosodies: 13.0's archive differs (no counts; an unknown after-id is no error).
pytestmark = pytest.mark.prosodies

NICK = "Ally"


def label(room: str) -> str:
    return room.split("@", 1)[0]


def start_in_room(user, room: str, clients: dict[str, str], extra: dict | None = None):
    """Bookmark `room`, start the daemon with [relay.clients] modes; once it joined."""
    user.phone.publish_bookmark(room, nick=NICK)
    config = {"relay": {"clients": clients}}
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    d = user.start(config)
    user.wait_joined(room, NICK)
    return d


def room_with_history(user, prefix: str, history: int = 1) -> str:
    """A room where bob said `history` things before the daemon ever came."""
    room = user.room(prefix=prefix)
    post(user, room, [f"long ago {i}" for i in range(history)])
    return room


def wait_archive_seen(d, room: str) -> None:
    """The daemon has stored where the room's archive ends (its first catch-up is over)."""
    wait_until(
        lambda: (room_state(d, room) or (None,))[0] is not None,
        message=lambda: f"no archive cursor for {room}: {room_state(d, room)}",
    )


def wait_settled(d) -> None:
    """No relay is in flight: the server acknowledged every one and the daemon knows it."""
    wait_until(lambda: in_flight(d) == [], message=lambda: f"still in flight: {in_flight(d)}")


def stop_and_post(user, d, room: str, said: list[str]) -> tuple[dict, float, float]:
    """Stop the daemon (SIGTERM), wait until bob sees it gone, post;
    (stanza-ids, time before the first, time after the last)."""
    assert d.stop() == 0
    user.wait_left(room)
    before = time.time()
    ids = post(user, room, said)
    assert user.daemon_nick(room) is None  # really said while the daemon was away
    return ids, before, time.time()


def missed_then_live(user, d, room: str, laptop, said: list[str]) -> None:
    """Stop the daemon, post `said`, restart it, post one live message: the laptop gets
    `said` (caught up) and then the live one, each once, in order."""
    stop_and_post(user, d, room, said)
    print("room_state after the first run:", room_state(d, room))
    mark = len(laptop.messages)
    d.start()
    user.wait_joined(room, NICK)
    post(user, room, ["live again"])
    wait_text(user, laptop, "live again", since=mark)
    assert texts(user, laptop, mark) == [*said, "live again"]


# -- (1) the daemon was stopped ------------------------------------------------------------


@pytest.mark.interop
def test_messages_said_while_the_daemon_was_stopped_arrive_once_in_order_with_delay_and_stanza_id(
    user,
):
    room = room_with_history(user, "kitchen")
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    wait_archive_seen(d, room)

    said = [f"missed {i:02d}" for i in range(1, 21)]
    ids, said_from, said_until = stop_and_post(user, d, room, said)
    mark, since = len(laptop.messages), len(d.lines)
    d.start()
    user.wait_joined(room, NICK)
    wait_text(user, laptop, said[-1], since=mark)
    d.wait_log(r"caught up .*messages=20 more=0", since=since)  # from the room's archive
    post(user, room, ["live again"])
    wait_text(user, laptop, "live again", since=mark)

    got = relays_to(laptop, user.full_jid, mark)
    assert [r.text for r in got] == [*said, "live again"], tally(
        [r.text for r in got], [*said, "live again"]
    ).summary()
    stamps = []
    for r in got[:-1]:
        inner = r.inner
        assert inner is not None, f"relay without the original: {tostring(r.stanza)}"
        assert r.inner_body == r.text
        assert inner.get("from") == f"{room}/bob" and inner.get("type") == "groupchat"
        assert r.stanza_id(room) == ids[r.text], tostring(r.stanza)
        assert r.delay is not None, tostring(r.stanza)
        # the time bob said it (the daemon was not running then), not the relay's time
        assert said_from - 1 <= r.delay.timestamp() <= said_until + 0.1, (r.text, r.delay)
        stamps.append(r.delay)
    assert stamps == sorted(stamps)
    assert got[-1].stanza_id(room) is not None and got[-1].delay is not None
    assert answers_to(laptop, user.full_jid, mark) == []  # no "more messages" notice


def test_a_relay_received_just_before_a_clean_stop_is_not_relayed_again(user):
    """A clean stop waits for the server's acks of the last relays: nothing is left in
    flight (a closed session's count is gone), so nothing is relayed twice after it."""
    room = room_with_history(user, "kitchen")
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    wait_archive_seen(d, room)
    mark = len(laptop.messages)
    for attempt in range(3):
        text = f"just before the stop {attempt}"
        post(user, room, [text])
        wait_text(user, laptop, text)  # the client has it: so has the server
        assert d.stop() == 0
        assert in_flight(d) == [], "a relay was left in flight by a clean stop"
        d.start()
        user.wait_joined(room, NICK)
    post(user, room, ["after the restart"])
    wait_text(user, laptop, "after the restart", since=mark)
    assert texts(user, laptop, mark) == [f"just before the stop {n}" for n in range(3)] + ["after the restart"]


def test_a_room_that_was_silent_when_the_daemon_first_joined_is_caught_up_too(user):
    """Nothing was ever said in the room before the daemon joined: its archive was empty."""
    room = user.room(prefix="quiet")
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    # The first catch-up is over: the daemon knows the room keeps an archive.
    wait_until(lambda: (room_state(d, room) or (None, None, None))[2] == 1)
    assert texts(user, laptop) == []

    missed_then_live(user, d, room, laptop, [f"first ever {i}" for i in range(1, 6)])


# -- (6) catchup_max ---------------------------------------------------------------------

NOTICE = re.compile(r"^\[(?P<label>[^\]]+)\] (?P<n>\d+) more messages in (?P<room>\S+) not shown$")


def missed_with_catchup_max_5(user, history: int):
    """`history` messages before the daemon came, 12 while it was away, catchup_max 5:
    (room, the 12, the relays' texts, the answers) once a live message came after them."""
    room = room_with_history(user, "busy", history)
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"}, extra={"relay": {"catchup_max": 5}})
    wait_archive_seen(d, room)

    said = [f"busy {i:02d}" for i in range(1, 13)]
    stop_and_post(user, d, room, said)
    mark, since = len(laptop.messages), len(d.lines)
    d.start()
    user.wait_joined(room, NICK)
    d.wait_log(r"caught up", since=since)  # else the live one is among the newest five
    post(user, room, ["live again"])
    wait_text(user, laptop, "live again", since=mark)
    return room, said, texts(user, laptop, mark), answers_to(laptop, user.full_jid, mark)


def test_catchup_max_relays_the_newest_in_order_and_one_notice_for_the_rest(user):
    room, said, relayed, answers = missed_with_catchup_max_5(user, history=1)
    assert relayed == [*said[-5:], "live again"]
    assert len(answers) == 1 and (notice := NOTICE.match(answers[0])), answers
    assert (notice["label"], notice["room"]) == (label(room), room)
    assert int(notice["n"]) >= 7, answers


def test_catchup_max_notice_counts_exactly_the_messages_not_shown(user):
    room, said, relayed, answers = missed_with_catchup_max_5(user, history=6)
    assert relayed == [*said[-5:], "live again"]
    assert answers == [f"[{label(room)}] 7 more messages in {room} not shown"]


# -- (7), (8) rooms without an archive ------------------------------------------------------


def room_without_archive(user, prefix: str = "nomam") -> str:
    """A room whose owner turned archiving off (Prosody's mod_muc_mam room option, or
    ejabberd's "mam")."""
    room = user.room(prefix=prefix)
    field = "mam" if "mam" in user.bob.room_config(room) else "muc#roomconfig_enablearchiving"
    user.bob.configure_room(room, {field: False})
    features = user.bob.disco_info(room).features
    assert NS["mam"] not in features, features
    return room


def test_a_room_without_archive_is_caught_up_from_its_history_once(user):
    room = room_without_archive(user)
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    wait_until(lambda: (room_state(d, room) or (None, None, None))[2] == 0)  # no archive, it knows
    post(user, room, ["before the break"])
    wait_text(user, laptop, "before the break")
    wait_settled(d)

    missed_then_live(user, d, room, laptop, [f"unarchived {i}" for i in range(1, 6)])


def minimix_status(d) -> tuple[int, str]:
    r = subprocess.run(
        [sys.executable, "-m", "minimix", "status", "--config", str(d.config_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return r.returncode, r.stdout + r.stderr


def test_status_shows_the_rooms_without_an_archive(user):
    archived = user.room(prefix="archived")
    plain = room_without_archive(user, prefix="plain")
    user.phone.publish_bookmark(archived, nick=NICK)
    d = start_in_room(user, plain, {})
    user.wait_joined(archived, NICK)

    def rows():
        code, out = minimix_status(d)
        assert code == 0, out
        found = {line.split()[0]: line for line in out.splitlines() if "@" in line.split(" ")[0]}
        assert "no archive (MAM)" in found.get(plain, ""), out
        return found

    found = wait_until(rows)
    assert "catch-up from the room's history" in found[plain]
    assert "no archive" not in found[archived], found[archived]
    r = subprocess.run(
        [sys.executable, "-m", "minimix", "status", "--json", "--config", str(d.config_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    archive = {room["room"]: room.get("archive") for room in json.loads(r.stdout)["rooms"]}
    assert archive == {archived: True, plain: False}


# -- (5) a corrupt store ---------------------------------------------------------------------

GARBAGE = b"this is not an SQLite database\x00\xff\xfe" * 512


@pytest.mark.parametrize("damage", ["garbage", "header-kept"])
def test_a_corrupt_store_is_moved_aside_and_the_daemon_starts_fresh(user, damage):
    room = user.room(prefix="kitchen")
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    post(user, room, ["before the damage"])
    wait_text(user, laptop, "before the damage")
    assert d.stop() == 0
    user.wait_left(room)

    store = state_dir(d) / "minimix.sqlite3"
    assert store.exists() and in_flight(d) is not None
    if damage == "garbage":
        bad = GARBAGE
    else:  # a valid SQLite header, every page after the first overwritten
        page = 4096
        good = store.read_bytes()
        bad = good[:page] + GARBAGE[: max(len(good) - page, page)]
    store.write_bytes(bad)
    leftovers = {p.name for p in store.parent.iterdir()}
    mark = len(d.lines)
    d.start()
    line = d.wait_log(r"store was unreadable", since=mark)
    moved = re.search(r"moved_to=(\S+)", line.string)
    assert moved, line.string
    aside = Path(moved[1].strip("\"'"))
    assert aside.parent == store.parent and aside.name.startswith("minimix.sqlite3.corrupt")
    assert aside.read_bytes() == bad  # kept as it was, for a post-mortem
    assert aside.name not in leftovers
    assert aside.with_name(aside.name + ".journal").exists()  # its journal with it, not deleted

    user.wait_joined(room, NICK)  # the bookmarks still say where to be
    post(user, room, ["after the damage"])
    wait_text(user, laptop, "after the damage")
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
    assert not d.grep(r"Traceback|internal error", since=mark), d.tail()


def test_a_cursor_expired_from_the_archive_is_caught_up_by_time(user):
    """Prosody's archive expiry (muc_log_expires_after) deleted the daemon's cursor message
    while it was stopped: the catch-up by id once ended with item-not-found (0.12), and the
    five messages still in the archive were never relayed.  Prosody 13.0 answers the unknown
    id with no error (everything, paging backwards): found out, the same by time."""
    room = room_with_history(user, "kitchen")
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    post(user, room, ["last seen by the daemon"])
    wait_text(user, laptop, "last seen by the daemon")
    wait_settled(d)
    assert d.stop() == 0
    user.wait_left(room)
    # Archive times are whole seconds: the cut falls strictly between the two groups (a
    # wait on the clock, not on anything that can be slow).
    cut = int(time.time()) + 1  # after everything said so far, to the second or not
    wait_until(lambda: time.time() >= cut + 1.05, timeout=4, message="the second after the cut")
    said = [f"missed {i}" for i in range(1, 6)]
    post(user, room, said)
    node = label(room)
    user.server.shell(
        f'>local s = require"core.storagemanager".open("{user.server.muc_domain}","muc_log","archive"); '
        f'return s:delete("{node}", {{["end"]={cut}}})'
    )
    mark, since = len(laptop.messages), len(d.lines)
    d.start()
    d.wait_log(r"no longer has our cursor: catching up by time", since=since)
    user.wait_joined(room, NICK)
    post(user, room, ["live again"])
    wait_text(user, laptop, "live again", since=mark)
    assert texts(user, laptop, mark) == [*said, "live again"]


# -- (9) occupants cannot poison the catch-up ------------------------------------------------

FAR_FUTURE = "<delay xmlns='urn:xmpp:delay' stamp='2999-01-01T00:00:00Z'/>"


def poison(user, room: str, laptop) -> None:
    """Bob says a line stamped 2999 (his own <delay/>, which the rooms pass on), and sends
    the daemon's occupant a private message claiming a stanza-id of the room, stamped 2999
    too; both reached the laptop."""
    mark = len(laptop.messages)
    user.bob.say(room, "a line from the future", extra_xml=FAR_FUTURE)
    user.bob.send_message(
        f"{room}/{NICK}", "a private word", "chat",
        extra_xml=f"<x xmlns='{NS['muc_user']}'/><stanza-id xmlns='{NS['sid']}' by='{room}' id='forged'/>"
                  f"<delay xmlns='{NS['delay']}' from='{room}' stamp='2999-01-01T00:00:00Z'/>",
    )  # fmt: skip
    wait_text(user, laptop, "a private word", since=mark)
    wait_text(user, laptop, "a line from the future", since=mark)


def assert_no_future(d) -> None:
    """Nothing the daemon stored is dated after now: retention prunes it, and the room's
    cursor is one the archive knows."""
    now = time.time() + 1
    assert query(d, "SELECT room, last_stanza_id, last_stamp FROM room_state WHERE last_stamp > ?", (now,)) == []
    assert query(d, "SELECT seq, text, stamp FROM message WHERE stamp > ?", (now,)) == []
    assert query(d, "SELECT last_stanza_id FROM room_state WHERE last_stanza_id = 'forged'") == []


@pytest.mark.interop
def test_a_stamp_from_the_future_and_a_forged_private_id_lose_nothing_said_while_stopped(user):
    """An occupant's line stamped 2999 became the room's cursor time, and a private message
    claiming a stanza-id of the room its id (on disk only): after a restart the catch-up
    by id failed (item-not-found) and by time asked for what came after 2999 (on ejabberd,
    without MAM #extended, by time at once): 0 of the 15 lines said meanwhile arrived."""
    room = room_with_history(user, "kitchen")
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    wait_archive_seen(d, room)
    poison(user, room, laptop)
    wait_settled(d)
    assert_no_future(d)

    said = [f"while stopped {i:02d}" for i in range(1, 16)]
    missed_then_live(user, d, room, laptop, said)
    assert_no_future(d)


@pytest.mark.interop
def test_a_stamp_from_the_future_does_not_empty_the_history_of_a_room_without_archive(user):
    """In a room without an archive, the cursor is a time: the next join asks the room for
    its history since then.  An occupant's line stamped 2999 made it ask for what came
    after 2999: nothing.  The history keeps the times the room gives it."""
    room = room_without_archive(user)
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    wait_until(lambda: (room_state(d, room) or (None, None, None))[2] == 0)  # no archive, it knows
    poison(user, room, laptop)
    wait_settled(d)
    assert_no_future(d)

    said = [f"unarchived {i}" for i in range(1, 6)]
    _, said_from, said_until = stop_and_post(user, d, room, said)
    mark = len(laptop.messages)
    d.start()
    user.wait_joined(room, NICK)
    post(user, room, ["live again"])
    wait_text(user, laptop, "live again", since=mark)
    got = relays_to(laptop, user.full_jid, mark)
    assert [r.text for r in got] == [*said, "live again"]
    for r in got[:-1]:  # the room's time for each (its history's <delay/>), not the relay's
        assert said_from - 1 <= r.delay.timestamp() <= said_until + 1, (r.text, r.delay)
    assert_no_future(d)


# -- (10) nothing waits for ever --------------------------------------------------------------

ROOM_QUERY_TIMEOUT_S = 30.0  # minimix.xmpp.link's


def silence_disco_info(server, room: str) -> None:
    """Prosody's MUC service takes the room's disco#info queries from now on and never
    answers them (a handler ahead of the room's that swallows them)."""
    server.shell(
        ">if not minimix_silent then minimix_silent = {}; "
        f"prosody.hosts[{lua_str(server.muc_domain)}].events.add_handler("
        "'iq-get/bare/http://jabber.org/protocol/disco#info:query', "
        "function(e) if minimix_silent[e.stanza.attr.to] then return true end end, 1000) end; "
        f"minimix_silent[{lua_str(room)}] = true; return 'silent'"
    )


def test_a_room_that_never_answers_its_disco_info_does_not_hold_its_live_traffic_for_ever(user):
    """The catch-up after a join asks the room's disco#info whether it keeps an archive,
    and waited for the answer without a timeout: a room service that never answered held
    the room's live traffic back for ever, unrelayed (and one of the catch-up slots)."""
    room = room_with_history(user, "mute")
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    wait_archive_seen(d, room)
    assert d.stop() == 0
    user.wait_left(room)
    silence_disco_info(user.server, room)
    with pytest.raises(TimeoutError):  # really silent
        user.bob.iq(f"<query xmlns='{NS['disco_info']}'/>", room, timeout=2)

    mark, since = len(laptop.messages), len(d.lines)
    d.start()
    user.wait_joined(room, NICK)
    post(user, room, ["said while the room is silent"])
    wait_text(user, laptop, "said while the room is silent", since=mark, timeout=ROOM_QUERY_TIMEOUT_S + 30)
    d.wait_log(r"catch-up failed; asking the archive again later .*error=.*no answer in 30 s", since=since)
    post(user, room, ["and after"])
    wait_text(user, laptop, "and after", since=mark)
    assert texts(user, laptop, mark) == ["said while the room is silent", "and after"]


# -- (12) an archive that fails ------------------------------------------------------------------


def archive_fails(user, room: str, failing: bool = True) -> None:
    """Prosody's MUC service answers the room's archive queries with <resource-constraint/>
    from now on (a handler ahead of the archive's), or no longer (``failing=False``): bob's
    query says which."""
    server = user.server
    # (rawset: the shell's own globals go with its session, and Prosody's _G is strict)
    server.shell(
        ">local down = rawget(_G, 'minimix_mam_down'); if not down then down = {}; "
        "rawset(_G, 'minimix_mam_down', down); "
        f"prosody.hosts[{lua_str(server.muc_domain)}].events.add_handler("
        "'iq-set/bare/urn:xmpp:mam:2:query', function(e) if down[e.stanza.attr.to] then "
        "e.origin.send(require'util.stanza'.error_reply(e.stanza, 'wait', 'resource-constraint')); "
        "return true end end, 1000) end; "
        f"down[{lua_str(room)}] = {'true' if failing else 'nil'}; return 'ok'"
    )
    ask = f"<query xmlns='{NS['mam']}'/>"
    if not failing:
        assert user.bob.iq(ask, room, type_="set")["type"] == "result"
        return
    with pytest.raises(StanzaError) as refused:
        user.bob.iq(ask, room, type_="set")
    assert refused.value.condition == "resource-constraint"


def gap_after(d, room: str) -> int | None:
    """Where the gap the daemon keeps for `room` opened (the log's last message then), or None."""
    rows = query(d, "SELECT gap_after FROM room_state WHERE room = ?", (room,))
    return rows[0][0] if rows else None


def back_with_a_failing_archive(user, prefix: str) -> tuple:
    """The daemon stopped, bob says five things, the room's archive fails; the daemon back:
    its catch-up fails and is to be asked again, and what bob says live meanwhile reaches
    the laptop at once.  (daemon, room, laptop, mark, since, said, live)."""
    room = room_with_history(user, prefix)
    laptop = user.other("laptop")
    d = start_in_room(user, room, {"laptop": "all"})
    wait_archive_seen(d, room)
    said = [f"missed {i}" for i in range(1, 6)]
    stop_and_post(user, d, room, said)
    archive_fails(user, room)
    mark, since = len(laptop.messages), len(d.lines)
    d.start()
    user.wait_joined(room, NICK)
    d.wait_log(r"catch-up failed; asking the archive again later .*retry_in=10", since=since)
    live = ["live while the archive fails 1", "live while the archive fails 2"]
    post(user, room, live)
    wait_text(user, laptop, live[-1], since=mark)
    assert texts(user, laptop, mark) == live
    wait_until(lambda: gap_after(d, room) is not None, message="the gap is not in the store")
    return d, room, laptop, mark, since, said, live


def test_a_catch_up_the_archive_failed_is_asked_again_and_each_missed_message_arrives_once(user):
    """The room's archive answered the catch-up after a restart with an error: what bob
    said while the daemon was stopped was lost for good (the live messages moved the
    cursor past it).  Now the archive is asked again, 10 s later, and what came live
    meanwhile is not relayed twice."""
    d, room, laptop, mark, since, said, live = back_with_a_failing_archive(user, "flaky")
    wait_until(lambda: "catch-up failed: the archive still owes messages" in minimix_status(d)[1],
               message=lambda: minimix_status(d)[1])
    archive_fails(user, room, failing=False)
    d.wait_log(r"caught up .*messages=7 .*gap=closed", since=since, timeout=120)  # 5 missed, 2 known
    post(user, room, ["after the archive is back"])
    wait_text(user, laptop, "after the archive is back", since=mark)
    assert texts(user, laptop, mark) == [*live, *said, "after the archive is back"]
    assert gap_after(d, room) is None


def test_a_gap_open_at_a_sigkill_is_caught_up_after_the_restart_each_message_once(user):
    d, room, laptop, mark, _, said, live = back_with_a_failing_archive(user, "flaky")
    wait_settled(d)
    assert d.kill() < 0
    archive_fails(user, room, failing=False)
    since = len(d.lines)
    d.start()
    d.wait_log(r"caught up .*gap=closed", since=since, timeout=60)
    post(user, room, ["after the restart"])
    wait_text(user, laptop, "after the restart", since=mark)
    assert texts(user, laptop, mark) == [*live, *said, "after the restart"]
    assert gap_after(d, room) is None


# -- (11) what the daemon keeps is bounded ----------------------------------------------------

KEY = re.compile(r"^(sid|oid|msg)#[0-9a-f]{32}$|^pm:[0-9a-f]{32}$")


def test_an_occupant_s_huge_message_is_kept_bounded_and_played_back_well_formed(user):
    """The log kept an occupant's message whole, several times over: its original, its
    body, its fallback text, and (in a room without ids) its de-duplication key, which
    was its text too.  Now the key is a hash, and the rest is cut to a bound; a client
    that comes back gets a well-formed reduced original, the live one got it whole."""
    room = room_without_archive(user)
    laptop = user.other("laptop")  # online: the message live, whole
    tablet = user.other("tablet")  # away: its playback
    d = start_in_room(user, room, {"laptop": "all", "tablet": "all"})
    wait_until(lambda: (room_state(d, room) or (None, None, None))[2] == 0)  # no archive, it knows
    tablet.disconnect()
    assert laptop.ping(user.full_jid) == "result"  # the daemon knows the tablet is gone
    # Beyond what the log keeps (16 Ki characters of text, 24 KiB of original), within what
    # one relay holds twice over (STANZA_MAX_BYTES, 60,000 bytes; beyond that, a relay is
    # its text alone: test_hostile's test of a message too big to relay whole).
    huge = "<&> " + "x" * 25_000
    post(user, room, [huge])
    assert wait_text(user, laptop, huge).inner_body == huge

    mark = len(tablet.messages)
    tablet.connect()
    assert tablet.ping(user.full_jid) == "result"
    post(user, room, ["after"])
    wait_text(user, tablet, "after", since=mark)
    played, after = relays_to(tablet, user.full_jid, mark)
    assert played.inner is not None, tostring(played.stanza)
    assert (played.inner.get("from"), played.inner.get("type")) == (f"{room}/bob", "groupchat")
    assert played.inner.get("id") is not None
    assert played.inner_body.startswith("<&> xxx") and played.inner_body.endswith("more characters not kept]")
    assert played.text.startswith("<&> xxx") and played.text.endswith("more characters not kept]")
    assert len(tostring(played.stanza)) < 2 * 17_000 + 4_096
    rows = query(d, "SELECT length(CAST(xml AS BLOB)), length(text), length(body), key FROM message")
    assert rows and all(xml <= 24 * 1024 and text <= 17_000 and body <= 17_000 for xml, text, body, _ in rows), rows
    assert all(KEY.match(key) for *_, key in rows), [key[:80] for *_, key in rows]


# -- (13) a catch-up out when the server goes (restarts the server: last in this module) --------


def count_disco_info(server, room: str) -> None:
    """As silence_disco_info, and Prosody counts the queries it swallowed (count_swallowed)."""
    server.shell(
        ">local s = rawget(_G, 'minimix_swallowed'); if not s then s = {}; rawset(_G, 'minimix_swallowed', s); "
        f"prosody.hosts[{lua_str(server.muc_domain)}].events.add_handler("
        "'iq-get/bare/http://jabber.org/protocol/disco#info:query', function(e) "
        "local n = s[e.stanza.attr.to]; if n then s[e.stanza.attr.to] = n + 1; return true end end, 1000) end; "
        f"s[{lua_str(room)}] = 0; return 'counting'"
    )


def count_swallowed(server, room: str) -> int:
    out = server.shell(f">return rawget(_G, 'minimix_swallowed')[{lua_str(room)}]")
    return int(re.findall(r"\d+", out)[-1])


def test_a_catch_up_out_when_the_server_restarts_ends_as_a_lost_connection(user):
    """The server restarts while a catch-up's query is out (the room's disco#info, which
    it never answers): nothing is logged as a failure, and the next session joins and
    catches up what was said meanwhile. (What a full run once showed here, a query *sent*
    in the instant between TLS's end and aioxmpp noticing it, failed with OpenSSL's
    ZeroReturnError and logged as "task failed", cannot be timed from a test against the
    server: tests/compat/test_lost_connection.py and test_send_after_loss.py show it on the
    stock library.)"""
    room = room_with_history(user, "gone")
    d = start_in_room(user, room, {})
    wait_archive_seen(d, room)
    assert d.stop() == 0
    user.wait_left(room)
    post(user, room, ["said while it was stopped"])
    count_disco_info(user.server, room)
    since = len(d.lines)
    d.start()
    user.wait_joined(room, NICK)
    wait_until(lambda: count_swallowed(user.server, room) > 0, message="the catch-up never asked the room")
    mark = len(d.lines)

    user.server.restart()

    d.wait_log(r"<6>session established", since=mark, timeout=40)
    d.wait_log(r"<6>caught up .*room=" + re.escape(room) + r" messages=1 ", since=mark, timeout=40)
    failures = [line for line in d.lines[since:] if line.startswith(
        ("<0>", "<1>", "<2>", "<3>", "<4>task failed", "<4>failed to send stanza", "<4>catch-up failed"))]
    assert not failures, failures
