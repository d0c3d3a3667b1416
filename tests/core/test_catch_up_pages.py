"""A catch-up paged forwards hands each page over as it comes: its messages are logged and
relayed at once, in order; live messages stay held back until the catch-up is done."""

from __future__ import annotations

from minimix.core import actions as A
from minimix.core.events import (
    CatchUpDone,
    CatchUpPage,
    ClientPresence,
    RoomMessage,
    SelfAvailable,
    SessionEstablished,
    SessionLost,
)
from minimix.core.ledger_records import Logged

from .test_bounce import NOW, ROOM, joined_engine, of


def archived(n: int) -> RoomMessage:
    return RoomMessage(ROOM, "bob", f"m{n}", stanza_id=f"s{n}", ref=f"<m{n}/>", stamp=NOW + n, archived=True)


def rejoined():
    engine = joined_engine()
    engine.handle(SessionLost(), NOW + 1)
    engine.handle(SessionEstablished(), NOW + 2)
    engine.handle(ClientPresence("phone", True), NOW + 2)
    engine.handle(ClientPresence("laptop", True), NOW + 2)
    (catch_up,) = of(engine.handle(SelfAvailable(ROOM, "alice", frozenset({110})), NOW + 3), A.CatchUp)
    return engine, catch_up


def relayed_texts(actions) -> list[str]:
    return [r.text for r in of(actions, A.Relay)]


def test_pages_are_relayed_as_they_come_and_live_messages_wait_for_the_end():
    engine, catch_up = rejoined()
    assert catch_up.after == ("s0", NOW)
    first = engine.handle(CatchUpPage(ROOM, (archived(1), archived(2))), NOW + 4)
    assert relayed_texts(first) == ["[r1] bob: m1", "[r1] bob: m2"]
    assert len(of(first, Logged)) == 2
    live = engine.handle(RoomMessage(ROOM, "bob", "m4", stanza_id="s4", ref="<m4/>"), NOW + 5)
    assert relayed_texts(live) == []  # held back: the archive's m3 comes first
    second = engine.handle(CatchUpPage(ROOM, (archived(3),)), NOW + 6)
    assert relayed_texts(second) == ["[r1] bob: m3"]
    done = engine.handle(CatchUpDone(ROOM, (), 0, mam=True, streamed=3), NOW + 7)
    assert relayed_texts(done) == ["[r1] bob: m4"]
    (note,) = [n for n in of(done, A.Note) if n.event == "caught up"]
    assert note.fields["messages"] == 3


def test_a_page_of_a_catch_up_whose_session_is_gone_is_dropped():
    engine, _ = rejoined()
    engine.handle(SessionLost(), NOW + 4)
    assert engine.handle(CatchUpPage(ROOM, (archived(1),)), NOW + 5) == []


def test_a_message_both_in_a_page_and_live_is_relayed_once():
    engine, _ = rejoined()
    engine.handle(RoomMessage(ROOM, "bob", "m1", stanza_id="s1", ref="<m1/>"), NOW + 4)  # held
    assert relayed_texts(engine.handle(CatchUpPage(ROOM, (archived(1),)), NOW + 5)) == ["[r1] bob: m1"]
    done = engine.handle(CatchUpDone(ROOM, (), 0, mam=True, streamed=1), NOW + 6)
    assert relayed_texts(done) == []
