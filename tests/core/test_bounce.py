"""A relay the server acknowledged can still come back: the client's session ended without
acknowledging it, and the server bounces it to the daemon (an error message with the
relay's id).  It is owed again, from that message on, at the client's next playback."""

from __future__ import annotations

import random

from minimix.core import actions as A
from minimix.core.engine import Engine
from minimix.core.events import (
    CatchUpDone,
    ClientPresence,
    PepBookmarksLoaded,
    RelayBounced,
    RelaysAcked,
    RoomMessage,
    SelfAvailable,
    SessionEstablished,
)
from minimix.core.ledger_records import CursorMoved, Settled
from minimix.core.types import RawItem, Source

ROOM = "r1@muc.example"
NOW = 1000.0


def joined_engine() -> Engine:
    engine = Engine(default_nick="alice", relay_globs={"phone": "all", "laptop": "all"}, rng=random.Random(1))
    engine.handle(SessionEstablished(), NOW)
    engine.handle(ClientPresence("phone", True), NOW)
    engine.handle(ClientPresence("laptop", True), NOW)
    engine.handle(PepBookmarksLoaded((RawItem(ROOM, Source.PEP, ROOM, autojoin="true", nick="alice"),)), NOW)
    engine.handle(SelfAvailable(ROOM, "alice", frozenset({110})), NOW)
    engine.handle(CatchUpDone(ROOM, mam=True, head=("s0", NOW)), NOW)
    return engine


def say(engine: Engine, n: int) -> dict[str, str]:
    """Bob's message n, relayed: {client: relay id}."""
    actions = engine.handle(RoomMessage(ROOM, "bob", f"m{n}", stanza_id=f"s{n}", ref=f"<m{n}/>"), NOW + n)
    (relay,) = [a for a in actions if isinstance(a, A.Relay)]
    return dict(relay.deliveries)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def test_a_bounced_relay_is_owed_again_from_that_message_on():
    engine = joined_engine()
    relays = [say(engine, n) for n in (1, 2, 3)]
    engine.handle(RelaysAcked(tuple(r for d in relays for r in d.values())), NOW + 4)
    seq2 = engine.ledger.inflight.get(relays[1]["phone"])  # acked: no longer in flight
    assert seq2 is None
    cursor = engine.ledger.cursors[("phone", ROOM)]
    # The phone's old session ends: the server gives back the last two relays it held.
    back = engine.handle(RelayBounced("phone", relays[2]["phone"]), NOW + 5)
    back += engine.handle(RelayBounced("phone", relays[1]["phone"]), NOW + 5)
    rewinds = of(back, CursorMoved)
    assert [(r.client, r.room) for r in rewinds] == [("phone", ROOM)] * 2
    assert rewinds[-1].seq == cursor - 2  # before message 2
    assert engine.ledger.cursors[("phone", ROOM)] == cursor - 2
    assert engine.ledger.cursors[("laptop", ROOM)] == cursor  # the laptop had them
    # The phone is seen again: its playback starts after message 1.
    engine.handle(ClientPresence("phone", False), NOW + 6)
    (load,) = of(engine.handle(ClientPresence("phone", True), NOW + 7), A.LoadPlayback)
    assert load.cursors[ROOM] == cursor - 2


def test_a_relay_bounced_before_the_servers_ack_is_not_delivered():
    engine = joined_engine()
    relay = say(engine, 1)["phone"]
    actions = engine.handle(RelayBounced("phone", relay), NOW + 2)
    assert of(actions, Settled) == [Settled((relay,))] and not of(actions, CursorMoved)
    assert engine.handle(RelaysAcked((relay,)), NOW + 3) == []  # the late ack changes nothing
    assert engine.ledger.cursors[("phone", ROOM)] == 0  # still before message 1 (seq 1)
    engine.handle(ClientPresence("phone", False), NOW + 4)
    (load,) = of(engine.handle(ClientPresence("phone", True), NOW + 5), A.LoadPlayback)
    assert load.cursors == {ROOM: 0}  # owed: not skipped for the mark of when it left


def test_only_the_client_a_relay_was_for_can_give_it_back():
    engine = joined_engine()
    relays = say(engine, 1)
    engine.handle(RelaysAcked(tuple(relays.values())), NOW + 2)
    cursors = dict(engine.ledger.cursors)
    assert engine.handle(RelayBounced("laptop", relays["phone"]), NOW + 3) == []
    assert engine.handle(RelayBounced("phone", "mmx-unknown"), NOW + 3) == []
    assert engine.ledger.cursors == cursors


def test_a_second_bounce_of_the_same_relay_changes_nothing_more():
    engine = joined_engine()
    relays = [say(engine, n)["phone"] for n in (1, 2)]
    engine.handle(RelaysAcked(tuple(relays)), NOW + 3)
    first = engine.handle(RelayBounced("phone", relays[1]), NOW + 4)
    assert of(first, CursorMoved)
    assert of(engine.handle(RelayBounced("phone", relays[1]), NOW + 5), CursorMoved) == []
