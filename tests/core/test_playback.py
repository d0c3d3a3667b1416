"""Playback for a client that comes back: read from the log page by page, filtered by its
mode, bounded by playback_max only for what came while it was away (the newest kept), and
whole for what was owed from before (relays in flight at a crash)."""

from __future__ import annotations

import random

import pytest

from minimix.core import actions as A
from minimix.core import ledger as ledger_module
from minimix.core.engine import Engine
from minimix.core.events import (
    ClientPresence,
    PepBookmarksLoaded,
    PlaybackLoaded,
    ReadAt,
    ReadUpTo,
    SessionEstablished,
    Stored,
)
from minimix.core.ledger_records import Away, LedgerState
from minimix.core.types import RawItem, Source

A_ROOM, B_ROOM = "a@muc.example", "b@muc.example"
NOW = 1000.0


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    monkeypatch.setattr(ledger_module, "PLAYBACK_PAGE", 4)


class Log:
    """The store's message log, as the app serves LoadPlayback from it."""

    def __init__(self):
        self.rows: dict[int, Stored] = {}
        self.loads: list[A.LoadPlayback] = []

    def add(self, seq: int, room: str, body: str) -> None:
        self.rows[seq] = Stored(seq, room, "bob", False, NOW, body, None, f"[r] bob: {body}", f"<m{seq}/>")

    def run(self, engine: Engine, actions: list) -> list:
        """Carry out the loads (as the app does, at once): every other action is returned."""
        out = []
        for a in actions:
            if isinstance(a, A.LoadPlayback):
                self.loads.append(a)
                found = [
                    m for seq, m in sorted(self.rows.items())
                    if seq > a.cursors.get(m.room, a.default) and seq > a.after
                ]  # fmt: skip
                page = tuple(found[: a.limit])
                out += self.run(engine, engine.handle(PlaybackLoaded(a.client, page, int(len(found) > a.limit)), NOW))
            else:
                out.append(a)
        return out


def engine_with(log: Log, *, playback_max: int, cursors, offline_since, next_seq: int, mode="all") -> Engine:
    engine = Engine(default_nick="alice", relay_globs={"phone": mode}, rng=random.Random(1), playback_max=playback_max)
    engine.restore(LedgerState(last_seq=next_seq - 1, cursors=cursors, away=offline_since))
    engine.handle(SessionEstablished(), NOW)
    bookmarks = tuple(RawItem(r, Source.PEP, r, autojoin="true") for r in (A_ROOM, B_ROOM))
    engine.handle(PepBookmarksLoaded(bookmarks), NOW)
    return engine


def relayed(actions) -> list[int]:
    return [a.seq for a in actions if isinstance(a, A.Relay)]


def notices(actions) -> list[str]:
    return [a.text for a in actions if isinstance(a, A.Reply)]


def test_a_mention_after_many_plain_messages_is_played_back():
    """The log was once read in one window of playback_max * 5 rows and filtered after:
    a mention past the window was lost for good."""
    log = Log()
    for seq in range(2, 40):
        log.add(seq, A_ROOM, "plain talk")
    log.add(40, A_ROOM, "alice: lunch?")
    engine = engine_with(log, playback_max=2, cursors={("phone", A_ROOM): 1}, offline_since={"phone": 1},
                         next_seq=41, mode="mentions")  # fmt: skip
    out = log.run(engine, engine.handle(ClientPresence("phone", True), NOW))
    assert relayed(out) == [40]
    assert notices(out) == []
    assert len(log.loads) == 10  # 39 messages, 4 at a time


def test_beyond_playback_max_the_newest_are_kept_after_one_notice():
    log = Log()
    for seq in range(1, 11):
        log.add(seq, A_ROOM, f"m{seq}")
    engine = engine_with(log, playback_max=3, cursors={}, offline_since={"phone": 0}, next_seq=11)
    out = log.run(engine, engine.handle(ClientPresence("phone", True), NOW))
    assert relayed(out) == [8, 9, 10]
    assert notices(out) == ["7 earlier messages from while you were away are not shown"]
    assert out.index(next(a for a in out if isinstance(a, A.Reply))) < out.index(
        next(a for a in out if isinstance(a, A.Relay))
    )  # the notice first


def test_what_was_owed_from_before_the_client_left_goes_out_whole():
    """Relays in flight at a crash, owed again: the client was there; none is dropped."""
    log = Log()
    for seq in range(1, 21):
        log.add(seq, A_ROOM, f"m{seq}")
    engine = engine_with(log, playback_max=2, cursors={("phone", A_ROOM): 0}, offline_since={"phone": 15},
                         next_seq=21)  # fmt: skip
    out = log.run(engine, engine.handle(ClientPresence("phone", True), NOW))
    assert relayed(out) == [*range(1, 16), 19, 20]
    assert notices(out) == ["3 earlier messages from while you were away are not shown"]


def test_a_client_there_when_the_daemon_stopped_is_owed_every_room_from_then_on():
    """Seen in one room only, then gone while the daemon was down: the other room's messages
    from the catch-up are owed too (there is no cursor for it)."""
    log = Log()
    engine = Engine(default_nick="alice", relay_globs={"phone": "all"}, rng=random.Random(1))
    marks = engine.restore(LedgerState(last_seq=5, cursors={("phone", A_ROOM): 5}), now=NOW)
    assert marks == [Away("phone", 5, NOW)]
    engine.handle(SessionEstablished(), NOW)
    engine.handle(PepBookmarksLoaded(tuple(RawItem(r, Source.PEP, r, autojoin="true") for r in (A_ROOM, B_ROOM))), NOW)
    log.add(6, A_ROOM, "caught up in a")
    log.add(7, B_ROOM, "caught up in b")
    out = log.run(engine, engine.handle(ClientPresence("phone", True), NOW))
    assert relayed(out) == [6, 7]


def test_what_the_user_read_elsewhere_is_not_played_back_in_that_room_only():
    log = Log()
    for seq in range(1, 7):
        log.add(seq, A_ROOM if seq % 2 else B_ROOM, f"m{seq}")
    engine = engine_with(log, playback_max=10, cursors={}, offline_since={"phone": 0}, next_seq=7)
    assert engine.handle(ReadUpTo(A_ROOM, "sid-3"), NOW) == [A.FindRead(A_ROOM, "sid-3")]
    engine.handle(ReadAt(A_ROOM, 3, 1), NOW)  # the store found it: message 5 came after
    engine.handle(ReadAt(A_ROOM, 1, 2), NOW)  # a client behind the others un-reads nothing
    out = log.run(engine, engine.handle(ClientPresence("phone", True), NOW))
    assert relayed(out) == [2, 4, 5, 6]
    assert engine.router.unread == {A_ROOM: 1}
