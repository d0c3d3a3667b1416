"""Crashes and outages: SIGKILL at any moment, or the server restarting, loses no message
for an opted-in client and delivers none twice.

The verdict is taken on the stanzas the clients received: each room message has a
unique text, so every relay is counted by its fallback body; duplicates and gaps are
tallied and printed (run with -s to see it; MINIMIX_CRASH_SEED=N picks the same kinds
of kill points again, not the same timing). The mentions client matches a keyword: nick mentions owed at a
start are skipped (test_playback.py pins that bug down), so they are only checked for
duplicates. The last test restarts the server: it runs last in this module.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time

import pytest

from harness import NS, el_of, wait_until
from harness.relays import post, relays_to, tally, texts, wait_text
from harness.store import in_flight

# Both Prosodies: 13's restarts and stream management (bounces, resumption) are not 0.12's.
pytestmark = pytest.mark.prosodies

NICK = "Ally"


class Burst(threading.Thread):
    """Bob says each text in `room`, one every `pace` seconds, in a thread of its own."""

    def __init__(self, bob, room: str, said: list[str], pace: float):
        super().__init__(name="burst", daemon=True)
        self.bob, self.room, self.said, self.pace = bob, room, said, pace
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for text in self.said:
                self.bob.say(self.room, text)
                self.sent += 1
                time.sleep(self.pace)  # pacing the burst, not waiting for anything
        except BaseException as exc:  # reported by the test
            self.error = exc


# -- (4) SIGKILL during a burst ---------------------------------------------------------------

BURST = 200
PACE_S = 0.06
MIN_KILLS = 3


KEYWORD = "pizza"


def burst_texts() -> tuple[list[str], list[str], list[str]]:
    """(all of them, the keyword mentions, the nick mentions)."""
    said = [
        f"burst {i:03d}" + (f" {KEYWORD}" if i % 7 == 3 else f" {NICK}" if i % 11 == 5 else "")
        for i in range(BURST)
    ]
    return said, [t for t in said if t.endswith(KEYWORD)], [t for t in said if t.endswith(NICK)]


@pytest.mark.slow
def test_sigkill_at_random_moments_during_a_burst_loses_nothing_and_repeats_nothing(user):
    seed = int(os.environ.get("MINIMIX_CRASH_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    room = user.room(prefix="burst")
    phone, laptop = user.phone, user.other("laptop")
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"relay": {"clients": {"phone": "mentions", "laptop": "all"}}})
    user.wait_joined(room, NICK)
    user.command(phone, f"keywords add {KEYWORD}")
    post(user, room, [f"warm-up {KEYWORD}"])
    wait_text(user, laptop, f"warm-up {KEYWORD}")
    wait_text(user, phone, f"warm-up {KEYWORD}")
    marks = {laptop: len(laptop.messages), phone: len(phone.messages)}

    said, mentions, nick_mentions = burst_texts()
    burst = Burst(user.bob, room, said, PACE_S)
    started = time.monotonic()
    kills: list[str] = []
    died: list[str] = []  # the daemon exited by itself (restarted, as systemd would)

    def restart() -> int:
        """Start the daemon again; where its output starts."""
        mark = len(d.lines)
        d.start()
        return mark

    last_start = 0
    burst.start()
    while burst.is_alive() or len(kills) < MIN_KILLS:
        point = rng.choice(["relays", "relays", "message", "started", "session", "joined"])
        try:
            if point == "relays":  # while relays flow
                n = len(relays_to(laptop, user.full_jid, marks[laptop])) + rng.randint(3, 30)
                wait_until(
                    lambda n=n: (
                        len(relays_to(laptop, user.full_jid, marks[laptop])) >= n
                        or not burst.is_alive()
                        or not d.running
                    ),
                    timeout=30,
                )
            elif point == "message":  # bob's next message is on its way to the daemon
                sent = burst.sent
                wait_until(lambda sent=sent: burst.sent > sent or not burst.is_alive())
            elif point == "started":  # settling the last run's relays, connecting
                d.wait_log(r"\bstarting\b", since=last_start)
            elif point == "session":  # joining; the clients' presences (playback)
                d.wait_log(r"session established", since=last_start)
            else:  # joined: catching up
                d.wait_log(r"to=joined", since=last_start)
        except AssertionError as exc:
            if d.running:
                pytest.fail(f"kill point {point!r} never came: {exc}\n{d.tail(40)}")
        if not d.running:
            died.append(f"exit {d.returncode}@{burst.sent}")
            last_start = restart()
            continue
        time.sleep(rng.uniform(0, 0.2))  # a random moment after that point
        d.kill()
        kills.append(f"{point}@{burst.sent}")
        last_start = restart()
    burst.join(30)
    assert burst.error is None, repr(burst.error)
    assert burst.sent == BURST

    for _ in range(3):  # back in the room (restarted if it died at its last start)
        try:
            d.wait_log(r"to=joined", since=last_start, timeout=60)
            break
        except AssertionError:
            if d.running:
                raise
            died.append(f"exit {d.returncode} at the end")
            last_start = restart()
    end = [f"the end {KEYWORD}"]
    post(user, room, end)
    for c in (laptop, phone):
        wait_text(user, c, end[0], since=marks[c], timeout=60)
        assert c.ping(user.full_jid) == "result"
    elapsed = time.monotonic() - started

    laptop_tally = tally(texts(user, laptop, marks[laptop]), [*said, *end])
    phone_texts = texts(user, phone, marks[phone])
    phone_tally = tally([t for t in phone_texts if not t.endswith(NICK)], [*mentions, *end])
    nick_tally = tally([t for t in phone_texts if t.endswith(NICK)], nick_mentions)
    settled = [
        re.sub(r"\s*logger=\S+", "", line.split("relays in flight at the last stop", 1)[1])
        for line in d.grep(r"relays in flight at the last stop")
    ]
    probe_crashes = d.grep(r"unexpected error.*probe_previous_session")
    print(
        f"\nSIGKILL burst: seed {seed}, {len(kills)} kills at {kills}, {elapsed:.1f} s"
        f"\n  the daemon died by itself: {died or 'never'}"
        f"\n  laptop (all):      {laptop_tally.summary()}"
        f"\n  phone (mentions):  {phone_tally.summary()} (keyword mentions)"
        f"\n                     {nick_tally.summary()} (nick mentions)"
        f"\n  settled at start: {settled}"
    )
    assert not probe_crashes, probe_crashes  # the start-up probe never takes the daemon down
    for name, t in (("laptop", laptop_tally), ("phone", phone_tally)):
        assert t.exact, (
            f"{name}: {t.summary()}; duplicates {t.duplicates}, gaps {t.gaps[:20]}, "
            f"unexpected {t.unexpected[:20]} (seed {seed}, kills {kills})"
        )
    assert nick_tally.exact, nick_tally.summary()  # nick mentions too: none lost, none twice


# -- (2) the server restarts (last in this module) ----------------------------------------------


def reconnect(c) -> None:
    """A client whose server went away connects again (same resource)."""
    c.abort()
    c.connect()


@pytest.mark.slow
def test_messages_said_while_the_daemon_reconnects_after_a_server_restart_arrive_once(user, server):
    room = user.room(prefix="kitchen")
    laptop = user.other("laptop")
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start({"relay": {"clients": {"laptop": "all"}}})
    user.wait_joined(room, NICK)
    post(user, room, ["before the restart"])
    wait_text(user, laptop, "before the restart")
    wait_until(lambda: in_flight(d) == [])  # acknowledged: nothing in flight at the outage

    # The server goes down; bring it back while the daemon waits a few seconds before its
    # next attempt, so bob is back in the room (and the daemon is not) for a while.
    since = len(d.lines)
    server.stop()
    d.wait_log(r"connection failed .*retry_in=([4-9]|\d\d)", since=since, timeout=30)
    server.start()
    reconnect(user.bob)
    user.bob.join(room, "bob")
    reconnect(laptop)
    assert user.daemon_nick(room) is None
    mark = len(laptop.messages)
    said = [f"during the outage {i:02d}" for i in range(1, 21)]
    post(user, room, said)
    # The room echoed the last one before any presence of the daemon's: said in its absence.
    assert user.daemon_nick(room) is None, "the daemon was back before bob was done"

    user.wait_joined(room, NICK, timeout=60)
    d.wait_log(r"caught up .*messages=20 more=0", since=since)  # from the room's archive
    post(user, room, ["after the outage"])
    wait_text(user, laptop, "after the outage", since=mark)
    got = relays_to(laptop, user.full_jid, mark)
    t = tally([r.text for r in got], [*said, "after the outage"])
    assert [r.text for r in got] == [*said, "after the outage"], t.summary()
    ids = {
        m["body"]: el_of(m).find("sid:stanza-id", NS).get("id")
        for m in user.bob.messages
        if m["type"] == "groupchat" and m["body"] in said
    }
    for r in got[:-1]:
        assert r.stanza_id(room) == ids[r.text] and r.delay is not None, r.body
