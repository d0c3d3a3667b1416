"""Playback: a client that was offline gets, when it comes back, what its mode selects
and it has not had yet — once, in order, with the original time — and nothing else.

Clients go offline by closing their stream (the server tells the daemon) and come back
with a new stream on the same resource. "Nothing more" is checked after a later live
message reached the client: the daemon handles a client's presence (and loads its
playback) before anything that reaches it later, and sends to one client in order.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from harness import tostring, wait_until
from harness.relays import answers_to, post, relays_to, tally, texts, wait_text
from harness.store import awaiting_receipts, query, state_dir

NICK = "Ally"


def go_offline(user, *clients) -> None:
    """Close each client's stream; a ping through the daemon from a client that stays
    online then comes after the server told the daemon (in-order delivery)."""
    for c in clients:
        c.disconnect()
    assert user.bob.ping(user.server.domain) == "result"


def come_back(user, c) -> int:
    """Reconnect `c` (same resource); the index of its first new message. Its presence
    reached the daemon before anything bob says after this returns."""
    mark = len(c.messages)
    c.connect()
    assert c.ping(user.full_jid) == "result"
    return mark


@pytest.mark.interop
def test_a_returning_client_gets_what_its_mode_selects_once_and_the_others_nothing_again(user):
    room = user.room(prefix="kitchen")
    phone = user.phone  # mentions
    laptop = user.other("laptop")  # all, online all along
    tablet = user.other("tablet")  # all, offline with the phone, back later
    user.phone.publish_bookmark(room, nick=NICK)
    user.start({"relay": {"clients": {"phone": "mentions", "laptop": "all", "tablet": "all"}}})
    user.wait_joined(room, NICK)
    post(user, room, [f"hello {NICK}"])
    for c in (phone, laptop, tablet):
        wait_text(user, c, f"hello {NICK}")

    go_offline(user, phone, tablet)
    assert laptop.ping(user.full_jid) == "result"  # the daemon knows they are gone
    said = [f"while away {i}" + (f", {NICK}?" if i in (2, 5, 9) else "") for i in range(1, 11)]
    mentions = [said[1], said[4], said[8]]
    laptop_mark = len(laptop.messages)
    said_from = time.time()
    ids = post(user, room, said)
    said_until = time.time()
    wait_text(user, laptop, said[-1], since=laptop_mark)

    # The phone comes back: the mentions among the ten, once, in order, as they were.
    phone_mark = come_back(user, phone)
    post(user, room, [f"welcome back {NICK}"])
    wait_text(user, phone, f"welcome back {NICK}", since=phone_mark)
    wait_text(user, laptop, f"welcome back {NICK}", since=laptop_mark)
    got = relays_to(phone, user.full_jid, phone_mark)
    assert [r.text for r in got] == [*mentions, f"welcome back {NICK}"], tally(
        [r.text for r in got], [*mentions, f"welcome back {NICK}"]
    ).summary()
    for r in got[:-1]:
        assert r.inner is not None, tostring(r.stanza)
        assert r.stanza_id(room) == ids[r.text], tostring(r.stanza)
        assert r.delay is not None and said_from - 1 <= r.delay.timestamp() <= said_until + 0.1, (
            r.text,
            r.delay,
        )
    assert [r.delay for r in got[:-1]] == sorted(r.delay for r in got[:-1])
    # The laptop had them live: nothing again.
    assert texts(user, laptop, laptop_mark) == [*said, f"welcome back {NICK}"]

    # The tablet comes back later: its own playback (all ten and the welcome), not the
    # phone's leftovers; the phone and the laptop get nothing again.
    tablet_mark = come_back(user, tablet)
    phone_mark2, laptop_mark2 = len(phone.messages), len(laptop.messages)
    post(user, room, [f"and the tablet {NICK}"])
    for c in (tablet, phone, laptop):
        wait_text(user, c, f"and the tablet {NICK}", since=tablet_mark if c is tablet else 0)
    assert texts(user, tablet, tablet_mark) == [
        *said,
        f"welcome back {NICK}",
        f"and the tablet {NICK}",
    ]
    assert texts(user, phone, phone_mark2) == [f"and the tablet {NICK}"]
    assert texts(user, laptop, laptop_mark2) == [f"and the tablet {NICK}"]

    # Never twice: the phone goes away and comes back with nothing new said meanwhile.
    go_offline(user, phone)
    assert laptop.ping(user.full_jid) == "result"
    phone_mark3 = come_back(user, phone)
    post(user, room, [f"once more {NICK}"])
    wait_text(user, phone, f"once more {NICK}", since=phone_mark3)
    assert texts(user, phone, phone_mark3) == [f"once more {NICK}"]
    for c in (phone, laptop, tablet):
        assert not [a for a in answers_to(c, user.full_jid) if "not shown" in a]


def test_a_message_relayed_to_two_clients_carries_the_original_in_both(user):
    """(5ceff27 forwarded one lxml element to every client: only one relay had it.)"""
    room = user.room(prefix="kitchen")
    laptop = user.other("laptop")
    user.phone.publish_bookmark(room, nick=NICK)
    user.start({"relay": {"clients": {"phone": "all", "laptop": "all"}}})
    user.wait_joined(room, NICK)
    ids = post(user, room, ["for both of you"])
    for c in (user.phone, laptop):
        r = wait_text(user, c, "for both of you")
        assert r.inner is not None, f"{c.jid}: {tostring(r.stanza)}"
        assert r.stanza_id(room) == ids["for both of you"]


def test_a_mention_owed_when_the_daemon_starts_is_played_back(user):
    """The phone was away when it was mentioned; the daemon restarts while the phone is
    back: the daemon's start (the phone's presence comes first) must play the mention back."""
    room = user.room(prefix="kitchen")
    phone, laptop = user.phone, user.other("laptop")
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"relay": {"clients": {"phone": "mentions", "laptop": "all"}}})
    user.wait_joined(room, NICK)
    post(user, room, [f"hello {NICK}"])
    wait_text(user, phone, f"hello {NICK}")

    go_offline(user, phone)
    assert laptop.ping(user.full_jid) == "result"
    post(user, room, [f"while you were out, {NICK}"])
    wait_text(user, laptop, f"while you were out, {NICK}")  # logged, owed to the phone
    assert d.stop() == 0
    mark = len(phone.messages)
    phone.connect()
    d.start()
    user.wait_joined(room, NICK)
    post(user, room, [f"welcome back {NICK}"])
    wait_text(user, phone, f"welcome back {NICK}", since=mark)
    assert texts(user, phone, mark) == [f"while you were out, {NICK}", f"welcome back {NICK}"]


@pytest.mark.interop
def test_relays_a_client_session_never_acknowledged_come_again_when_it_logs_in_anew(user):
    """A phone in a tunnel: its session got the relays from the server but never
    acknowledged them (XEP-0198), and the phone logs in again without resuming.  The server
    ends the old session and gives back what it had not acknowledged (Prosody and ejabberd:
    an error message per relay, to the daemon; Prosody 13's carry by= on the error).  Those
    relays come again, once, in order, in the new session's playback — the server had
    acknowledged them to the daemon long before."""
    room = user.room(prefix="tunnel")
    user.phone.publish_bookmark(room, nick=NICK)
    user.start({"relay": {"clients": {"tablet": "all"}}})
    user.wait_joined(room, NICK)
    tablet = user.other("tablet")
    tablet.send_raw("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")  # and never an <a/>
    assert tablet.ping(user.server.domain) == "result"  # the server has it enabled
    said = [f"in the tunnel {i}" for i in range(1, 4)]
    post(user, room, said)
    wait_text(user, tablet, said[-1])  # they reached the old session, which acknowledges none

    again = user.other("tablet")  # a new login of the same resource, not a resumption
    post(user, room, ["out of the tunnel"])
    wait_text(user, again, "out of the tunnel")
    got = texts(user, again, 0)
    assert got == [*said, "out of the tunnel"], tally(got, [*said, "out of the tunnel"]).summary()


@pytest.mark.interop
def test_a_client_that_answers_receipts_gets_again_what_it_never_answered(user):
    """XEP-0184: a client that answers the relays' receipt requests has a relay when its
    receipt comes, not when the server took it.  Relays it never answered before it went
    away (a connection that died under it) come again when it is back: once, in order."""
    room = user.room(prefix="receipts")
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"relay": {"clients": {"tablet": "all"}}})
    user.wait_joined(room, NICK)
    tablet = user.other("tablet")
    post(user, room, ["answered"])
    first = wait_text(user, tablet, "answered")
    tablet.send_raw(f"<message to='{user.full_jid}'><received xmlns='urn:xmpp:receipts' id='{first.id}'/></message>")
    assert tablet.ping(user.full_jid) == "result"  # the daemon has the receipt (in order)
    said = [f"never answered {i}" for i in range(1, 4)]
    post(user, room, said)
    wait_text(user, tablet, said[-1])  # they reach it, and it answers none of them
    # The server has acknowledged them to the daemon: only their receipts are due.  (A relay
    # the server acknowledges only after the client is back, logged in anew, is not covered:
    # the closing note of issue 7 says why.)
    wait_until(lambda: len(awaiting_receipts(d) or []) == 3)

    tablet.abort()  # its connection dies
    mark = come_back(user, tablet)
    post(user, room, ["back again"])
    wait_text(user, tablet, "back again", since=mark)
    got = texts(user, tablet, mark)
    assert got == [*said, "back again"], tally(got, [*said, "back again"]).summary()


def test_beyond_playback_max_the_newest_and_a_late_mention_come_after_one_notice(user):
    """playback_max 2: a mentions client once got nothing of a mention said after 15 plain
    messages (a window of playback_max * 5 rows, filtered after); an all client got the
    oldest two. Now each gets the newest of what its mode selects, after one notice."""
    room = user.room(prefix="kitchen")
    phone, laptop = user.phone, user.other("laptop")
    user.phone.publish_bookmark(room, nick=NICK)
    user.start({"relay": {"playback_max": 2, "clients": {"phone": "mentions", "laptop": "all"}}})
    user.wait_joined(room, NICK)
    post(user, room, [f"hello {NICK}"])
    for c in (phone, laptop):
        wait_text(user, c, f"hello {NICK}")
    go_offline(user, phone, laptop)
    said = [f"plain {i}" for i in range(1, 16)] + [f"lunch, {NICK}?"]
    post(user, room, said)

    # the laptop, still away, also misses what is said when the phone is back
    for c, expected, skipped in (
        (phone, [f"lunch, {NICK}?"], 0),
        (laptop, [f"lunch, {NICK}?", f"back phone {NICK}"], 15),
    ):
        mark = come_back(user, c)
        back = f"back {c.resource} {NICK}"
        post(user, room, [back])
        wait_text(user, c, back, since=mark)
        assert texts(user, c, mark) == [*expected, back]
        notices = [a for a in answers_to(c, user.full_jid) if "not shown" in a]
        assert notices == ([f"{skipped} earlier messages from while you were away are not shown"] if skipped else [])


def test_a_client_gone_while_the_daemon_was_down_is_owed_every_room(user):
    """The phone had a relay in one room only; it went away while the daemon was stopped.
    The other room's mention, caught up at the start, was once never delivered."""
    room_a, room_b = user.room(prefix="rooma"), user.room(prefix="roomb")
    phone = user.phone
    for room in (room_a, room_b):
        phone.publish_bookmark(room, nick=NICK)
    d = user.start({"relay": {"clients": {"phone": "mentions"}}})
    user.wait_joined(room_a, NICK)
    user.wait_joined(room_b, NICK)
    post(user, room_a, [f"hello {NICK}"])
    wait_text(user, phone, f"hello {NICK}")
    d.stop()
    go_offline(user, phone)
    post(user, room_a, [f"A while down {NICK}"])
    post(user, room_b, [f"B while down {NICK}"])
    mark = len(d.lines)
    d.start()
    for room in (room_a, room_b):
        d.wait_log(rf"caught up room={room}", since=mark)
    mark = come_back(user, phone)
    post(user, room_b, [f"welcome {NICK}"])
    wait_text(user, phone, f"welcome {NICK}", since=mark)
    got = texts(user, phone, mark)
    # in the order they were logged (the rooms' catch-ups ran side by side), the live one last
    assert sorted(got[:-1]) == [f"A while down {NICK}", f"B while down {NICK}"] and got[-1] == f"welcome {NICK}", got


def test_clients_never_seen_again_are_forgotten_and_one_that_comes_back_loses_nothing(user):
    """A client that picks a new resource at every login left its cursors (one a room) and
    its mark behind each time, for ever.  Now a client away longer than the log keeps a
    message loses its cursors (its playback goes by its mark), and one away ten times
    that long is forgotten: back, it starts with live traffic."""
    room = user.room(prefix="kitchen")
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"relay": {"clients": {"r-*": "all"}}, "storage": {"retention_days": 1}})
    user.wait_joined(room, NICK)
    clients = {name: user.other(name) for name in ("r-long", "r-very-long", "r-short")}
    post(user, room, ["while they were here"])
    for c in clients.values():
        wait_text(user, c, "while they were here")
    wait_until(lambda: not query(d, "SELECT * FROM inflight"))  # acknowledged: cursors
    go_offline(user, *clients.values())
    post(user, room, ["while they were away"])
    wait_until(lambda: query(d, "SELECT seq FROM message WHERE body = 'while they were away'"))
    assert d.stop() == 0
    with sqlite3.connect(state_dir(d) / "minimix.sqlite3") as db:  # days pass
        for name, days in (("r-long", 2), ("r-very-long", 20)):
            db.execute("UPDATE client_seen SET away_since = away_since - ? WHERE client = ?", (days * 86400, name))

    since = len(d.lines)
    d.start()
    d.wait_log(r"clients away for long forgotten .*clients=1", since=since)
    # (the store commits a batch after its sends: wait for it, not for the log line alone)
    wait_until(lambda: {c for (c,) in query(d, "SELECT client FROM cursor")} == {"r-short"},
               message=lambda: f"cursors kept for {query(d, 'SELECT client FROM cursor')}")
    assert {c for (c,) in query(d, "SELECT client FROM client_seen")} == {"r-long", "r-short"}
    user.wait_joined(room, NICK)
    marks = {name: come_back(user, c) for name, c in clients.items()}
    post(user, room, ["welcome back"])
    for name, c in clients.items():
        wait_text(user, c, "welcome back", since=marks[name])
    assert texts(user, clients["r-short"], marks["r-short"]) == ["while they were away", "welcome back"]
    assert texts(user, clients["r-long"], marks["r-long"]) == ["while they were away", "welcome back"]
    assert texts(user, clients["r-very-long"], marks["r-very-long"]) == ["welcome back"]
