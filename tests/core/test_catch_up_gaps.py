"""A catch-up that fails, or is given up, loses nothing: the room has a gap the archive
still owes, the archive is asked again with a bounded backoff, and what it gives then is
taken once each (what came live meanwhile is not relayed again), with the cursor at the
newest; the gap survives a restart."""

from __future__ import annotations

import random

from minimix.core import actions as A
from minimix.core import catchup
from minimix.core.catchup import HELD_MAX, RETRY_S
from minimix.core.engine import Engine
from minimix.core.events import (
    CatchUpDone,
    CatchUpPage,
    ClientPresence,
    KnownMessages,
    PepBookmarksLoaded,
    RoomMessage,
    SelfAvailable,
    SelfUnavailable,
    SessionEstablished,
    SessionLost,
    TimerFired,
    TimerKind,
)
from minimix.core.ledger_records import Change, Logged
from minimix.core.memstore import MemoryLedgerStore
from minimix.core.types import RawItem, Source

from .test_bounce import NOW, ROOM, of
from .test_catch_up_pages import relayed_texts

RETRY = TimerFired(ROOM, TimerKind.CATCH_UP)


def live(name: str) -> RoomMessage:
    return RoomMessage(ROOM, "bob", name, stanza_id=name, ref=f"<{name}/>")


def archived(name: str, stamp: float) -> RoomMessage:
    return RoomMessage(ROOM, "bob", name, stanza_id=name, ref=f"<{name}/>", stamp=stamp, archived=True)


def texts(*names: str) -> list[str]:
    return [f"[r1] bob: {n}" for n in names]


class Daemon:
    """The engine with the store it runs on: the actions that persist are carried out
    (the log, the room's cursor and gap; the keys read back), as the app does."""

    def __init__(self, store: MemoryLedgerStore | None = None) -> None:
        self.store = store or MemoryLedgerStore()
        self.engine = Engine(default_nick="alice", relay_globs={"laptop": "all"}, rng=random.Random(1))
        self.store.apply(self.engine.restore(self.store.load(), rooms=self.store.room_states(),
                                             gaps=self.store.room_gaps()))
        self.armed: dict[str, float] = {}  # the catch-up retry timers

    def __call__(self, event, now: float) -> list[A.Action]:
        actions = self.engine.handle(event, now)
        for a in list(actions):
            match a:
                case Change():
                    self.store.apply([a])
                case A.SaveRoom(room, cursor, _):
                    if cursor is not None:
                        self.store.set_room_cursor(room, *cursor)
                case A.SaveGap(room, after):
                    self.store.set_room_gap(room, after)
                case A.LoadKeys(room, since, after):
                    actions += self(KnownMessages(room, tuple(self.store.keys_since(room, since, after))), now)
                case A.Arm(room, TimerKind.CATCH_UP, at):
                    self.armed[room] = at
                case A.Disarm(room, TimerKind.CATCH_UP):
                    del self.armed[room]
        return actions

    def join(self, now: float) -> A.CatchUp:
        """A session, the laptop, the bookmark, the join: its catch-up (a first join's look)."""
        self(SessionEstablished(), now)
        self(ClientPresence("laptop", True), now)
        self(PepBookmarksLoaded((RawItem(ROOM, Source.PEP, ROOM, autojoin="true", nick="alice"),)), now)
        return self.rejoin(now)

    def rejoin(self, now: float) -> A.CatchUp:
        (catch_up,) = of(self(SelfAvailable(ROOM, "alice", frozenset({110})), now), A.CatchUp)
        return catch_up

    def reconnect(self, now: float) -> A.CatchUp:
        self(SessionLost(), now)
        self(SessionEstablished(), now)
        self(ClientPresence("laptop", True), now)
        return self.rejoin(now)

    @property
    def cursor(self):
        return self.store.room_cursors.get(ROOM)


def warm() -> Daemon:
    """Joined, the archive looked at, "s1" said live: the cursor is at it."""
    d = Daemon()
    look = d.join(NOW)
    d(CatchUpDone(ROOM, mam=True, head=("s0", NOW), token=look.token), NOW)
    assert relayed_texts(d(live("s1"), NOW + 1)) == texts("s1")
    assert d.cursor == ("s1", NOW + 1)
    return d


def failed(d: Daemon, now: float, held: tuple[str, ...] = ()) -> tuple[A.CatchUp, list[A.Action]]:
    """Reconnected; the live messages `held` came while it caught up; the archive failed."""
    catch_up = d.reconnect(now)
    for name in held:
        assert d(live(name), now) == []
    return catch_up, d(CatchUpDone(ROOM, error="resource-constraint", token=catch_up.token), now + 1)


def test_a_failed_catch_up_leaves_a_gap_asked_again_and_taken_once_with_the_cursor_at_the_newest():
    d = warm()
    catch_up, actions = failed(d, NOW + 10, held=("l1",))
    assert catch_up.after == ("s1", NOW + 1)
    # The live message goes out; the room has a gap from the log's last message, and the
    # archive is asked again in 10 s; the log says so.
    assert relayed_texts(actions) == texts("l1")
    assert of(actions, A.SaveGap) == [A.SaveGap(ROOM, 1)]  # "s1" was the log's message 1
    assert of(actions, A.Arm) == [A.Arm(ROOM, TimerKind.CATCH_UP, NOW + 11 + RETRY_S[0])]
    (note,) = of(actions, A.Note)
    assert (note.level, note.event) == ("warning", "catch-up failed; asking the archive again later")
    assert note.fields["error"] == "resource-constraint" and note.fields["retry_in"] == RETRY_S[0]
    # Live traffic flows on; the cursor stays at the start of the gap, in the store too.
    assert relayed_texts(d(live("l2"), NOW + 12)) == texts("l2")
    assert [c.room_cursor for c in of(actions, Logged)] == [None]
    assert d.cursor == ("s1", NOW + 1)

    retry = d(RETRY, NOW + 21)
    (load,) = of(retry, A.LoadKeys)
    assert (load.room, load.after) == (ROOM, 1)
    (again,) = of(retry, A.CatchUp)
    assert again.after == ("s1", NOW + 1) and again.token != catch_up.token
    assert relayed_texts(d(live("l3"), NOW + 22)) == texts("l3")  # not held back by a retry

    answer = tuple(archived(n, NOW + i) for i, n in enumerate(("g1", "l1", "g2", "l2", "l3"), start=2))
    done = d(CatchUpDone(ROOM, answer, mam=True, token=again.token), NOW + 23)
    assert relayed_texts(done) == texts("g1", "g2")  # the live ones came before: not again
    assert d.cursor == ("l3", NOW + 6)  # the newest, not the gap's last
    assert d.store.room_gaps() == {} and not d.engine.catchups.gaps
    assert ("info", "caught up", "closed") in [(n.level, n.event, n.fields.get("gap")) for n in of(done, A.Note)]
    assert relayed_texts(d(live("s9"), NOW + 24)) == texts("s9")
    assert d.cursor == ("s9", NOW + 24)  # the cursor moves with each message again


def test_a_live_message_past_the_archive_s_answer_is_the_cursor():
    d = warm()
    failed(d, NOW + 10)
    (again,) = of(d(RETRY, NOW + 21), A.CatchUp)
    page = d(CatchUpPage(ROOM, (archived("g1", NOW + 12),), again.token), NOW + 22)
    assert relayed_texts(page) == texts("g1")
    d(live("l1"), NOW + 23)  # said after the archive was read
    d(CatchUpDone(ROOM, (), mam=True, streamed=1, token=again.token), NOW + 24)
    assert d.cursor == ("l1", NOW + 23)


def retried_after_live(n: int) -> tuple[Daemon, A.CatchUp]:
    """catchup_max 2; a catch-up failed, `n` live messages came ("l0"…), the retry asked."""
    d = warm()
    d.engine.catchups.catchup_max = 2
    failed(d, NOW + 10)
    for i in range(n):
        d(live(f"l{i}"), NOW + 12 + i)
    (again,) = of(d(RETRY, NOW + 21), A.CatchUp)
    return d, again


def test_what_came_live_during_a_gap_does_not_crowd_the_gap_out_of_the_retry():
    """The archive's answer is its newest `catchup_max` after the cursor: what came live
    since the gap opened is among them, and would leave no room for what the gap owes."""
    d, again = retried_after_live(3)
    assert again.limit == 2 + 3  # room for the three that come again
    answer = tuple(archived(n, NOW + i) for i, n in enumerate(("g2", "g3", "l0", "l1", "l2"), start=3))
    done = d(CatchUpDone(ROOM, answer, more=1, mam=True, token=again.token), NOW + 22)
    assert relayed_texts(done) == texts("g2", "g3")
    assert [r.text for r in of(done, A.Reply)] == [f"[r1] 1 more messages in {ROOM} not shown"]
    assert d.cursor == ("l2", NOW + 7)


def test_a_gap_that_saw_more_live_messages_than_a_retry_reads_asks_for_the_newest_as_ever(monkeypatch):
    """More came live than a retry makes room for: what the gap owes is out of reach (the
    notice counts it), and the newest are what came live, each known, none taken twice."""
    monkeypatch.setattr(catchup, "GAP_KEYS_MAX", 3)
    d, again = retried_after_live(4)
    assert again.limit == 2
    answer = tuple(archived(n, NOW + i) for i, n in enumerate(("l2", "l3"), start=14))
    done = d(CatchUpDone(ROOM, answer, more=3, mam=True, token=again.token), NOW + 22)
    assert relayed_texts(done) == []
    assert [r.text for r in of(done, A.Reply)] == [f"[r1] 3 more messages in {ROOM} not shown"]


def test_the_retries_back_off_to_a_bound_and_go_on():
    d = warm()
    _, actions = failed(d, NOW + 10)
    waits = [RETRY_S[0]]
    now = NOW + 11
    for _ in range(len(RETRY_S) + 2):
        (again,) = of(d(RETRY, now), A.CatchUp)
        (arm,) = of(d(CatchUpDone(ROOM, error="remote-server-timeout", token=again.token), now), A.Arm)
        waits.append(arm.at - now)
        now = arm.at
    assert waits == [*RETRY_S, RETRY_S[-1], RETRY_S[-1], RETRY_S[-1]]
    assert d.store.room_gaps() == {ROOM: 1} and d.cursor == ("s1", NOW + 1)


def test_a_catch_up_given_up_for_too_much_live_traffic_leaves_a_gap_too():
    d = warm()
    catch_up = d.reconnect(NOW + 10)
    for n in range(HELD_MAX - 1):
        d(live(f"l{n}"), NOW + 11)
    released = d(live(f"l{HELD_MAX - 1}"), NOW + 11)
    assert len(relayed_texts(released)) == HELD_MAX
    assert of(released, A.SaveGap) == [A.SaveGap(ROOM, 1)]
    assert of(released, A.Arm) == [A.Arm(ROOM, TimerKind.CATCH_UP, NOW + 11 + RETRY_S[0])]
    assert d.cursor == ("s1", NOW + 1)
    assert d(CatchUpDone(ROOM, (archived("g1", NOW + 5),), mam=True, token=catch_up.token), NOW + 12) == []
    (again,) = of(d(RETRY, NOW + 21), A.CatchUp)
    done = d(CatchUpDone(ROOM, (archived("g1", NOW + 5), archived("l0", NOW + 11)), mam=True, token=again.token),
             NOW + 22)
    assert relayed_texts(done) == texts("g1")


def test_a_stale_failure_opens_no_gap_and_a_stale_answer_closes_none():
    d = warm()
    old = d.reconnect(NOW + 10)
    current = d.reconnect(NOW + 11)
    assert d(CatchUpDone(ROOM, error="connection lost", token=old.token), NOW + 12) == []
    assert not d.engine.catchups.gaps
    d(CatchUpDone(ROOM, error="internal-server-error", token=current.token), NOW + 13)
    (again,) = of(d(RETRY, NOW + 23), A.CatchUp)
    d(SessionLost(), NOW + 24)  # the retry's session is gone: its answer is stale
    assert d(CatchUpDone(ROOM, (archived("g1", NOW + 9),), mam=True, token=again.token), NOW + 25) == []
    assert d.store.room_gaps() == {ROOM: 1}


def test_a_first_look_that_fails_leaves_nothing_owed():
    d = Daemon()
    look = d.join(NOW)
    assert look.after is None
    actions = d(CatchUpDone(ROOM, error="resource-constraint", token=look.token), NOW + 1)
    assert not of(actions, A.Arm) and not of(actions, A.SaveGap) and not d.engine.catchups.gaps


def test_leaving_the_room_disarms_the_retry_and_the_next_join_asks_from_the_gap():
    d = warm()
    failed(d, NOW + 10)
    kicked = d(SelfUnavailable(ROOM, "alice", frozenset({110, 307})), NOW + 12)
    assert A.Disarm(ROOM, TimerKind.CATCH_UP) in kicked and ROOM not in d.armed
    assert d(RETRY, NOW + 21) == []  # (had it fired anyway: not joined, nothing asked)
    rejoin = d(SelfAvailable(ROOM, "alice", frozenset({110})), NOW + 30)
    (load,) = of(rejoin, A.LoadKeys)
    (catch_up,) = of(rejoin, A.CatchUp)
    assert load.after == 1 and catch_up.after == ("s1", NOW + 1)
    assert d(live("l1"), NOW + 31) == []  # a join's catch-up holds live messages back, as ever
    done = d(CatchUpDone(ROOM, (archived("g1", NOW + 5),), mam=True, token=catch_up.token), NOW + 32)
    assert relayed_texts(done) == texts("g1", "l1")
    assert d.cursor == ("l1", NOW + 32) and d.store.room_gaps() == {}  # (held: dated when taken)


def test_a_retry_is_not_asked_while_the_session_is_down():
    d = warm()
    failed(d, NOW + 10)
    lost = d(SessionLost(), NOW + 12)
    assert A.Disarm(ROOM, TimerKind.CATCH_UP) in lost
    assert d(RETRY, NOW + 21) == []


def test_a_gap_survives_a_restart_and_what_came_live_meanwhile_is_not_taken_twice():
    d = warm()
    failed(d, NOW + 10, held=("l1",))
    d(live("l2"), NOW + 12)
    # SIGKILL: the next run has only the store.
    again = Daemon(d.store)
    assert again.engine.catchups.gaps.keys() == {ROOM}
    catch_up = again.join(NOW + 20)
    assert catch_up.after == ("s1", NOW + 1)
    answer = tuple(archived(n, NOW + i) for i, n in enumerate(("g1", "l1", "l2", "g2"), start=2))
    done = again(CatchUpDone(ROOM, answer, mam=True, token=catch_up.token), NOW + 21)
    assert relayed_texts(done) == texts("g1", "g2")
    assert again.cursor == ("g2", NOW + 5) and again.store.room_gaps() == {}
