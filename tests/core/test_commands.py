"""Chat commands end to end through the engine: what is refused, what is sent, what is
relayed.  Each test pins a defect found by trying the daemon as a user would."""

from __future__ import annotations

import random

import pytest

from minimix.core import actions as A
from minimix.core import commands as C
from minimix.core.engine import Engine
from minimix.core.events import (
    CatchUpDone,
    ClientCommand,
    ClientPresence,
    ClientText,
    PepBookmarksLoaded,
    PostRefused,
    RoomMessage,
    SelfAvailable,
    SessionEstablished,
)
from minimix.core.relay import Mode, mentions
from minimix.core.types import RawItem, Source

ROOM = "kitchen@muc.example"
NOW = 1000.0


def joined_engine(**kwargs) -> Engine:
    engine = Engine(default_nick="alice", relay_globs={"laptop": "all"}, rng=random.Random(1), **kwargs)
    engine.handle(SessionEstablished(), NOW)
    engine.handle(ClientPresence("laptop", True), NOW)
    engine.handle(PepBookmarksLoaded((RawItem(ROOM, Source.PEP, ROOM, autojoin="true", nick="alice"),)), NOW)
    engine.handle(SelfAvailable(ROOM, "alice", frozenset({110})), NOW)
    engine.handle(CatchUpDone(ROOM, mam=True, head=("s0", NOW)), NOW)
    return engine


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def command(engine: Engine, text: str, reply_to: str | None = None) -> tuple[list, str]:
    actions = engine.handle(ClientText("laptop", text, reply_to), NOW)
    (reply,) = of(actions, A.Reply)
    return actions, reply.text


@pytest.mark.parametrize(
    "room",
    [
        "kitchen@muc.example/resource",  # a full JID
        "@muc.example",  # no room name
        "a@b@c",
        "kitchen@",
        "kitchen@muc.example\u200b",  # a zero-width space
    ],
)
def test_join_never_bookmarks_what_is_not_a_room_address(room):
    actions, text = command(joined_engine(), f"join {room}")
    assert not of(actions, A.WriteBookmark)
    assert text.startswith("not bookmarked:")


def test_join_asks_the_edge_about_what_the_core_cannot_check():
    seen = []

    def check(room, nick):
        seen.append((room, nick))
        return "no such thing (stringprep)"

    actions, text = command(joined_engine(address_check=check), "join new@muc.example al")
    assert seen == [("new@muc.example", "al")]
    assert not of(actions, A.WriteBookmark)
    assert "stringprep" in text


def test_a_nick_the_bookmark_reader_would_skip_is_never_written():
    """The reader skips a bookmark whose nick is too long, and the room would be left."""
    actions, text = command(joined_engine(), "nick kitchen " + "N" * 1100)
    assert not of(actions, A.WriteBookmark)
    assert text.startswith("nick not changed:") and "1023 bytes" in text


def test_a_valid_join_and_nick_still_go_through():
    actions, _ = command(joined_engine(), "join new@muc.example al")
    assert of(actions, A.WriteBookmark) == [
        A.WriteBookmark("new@muc.example", None, "asked by a client", autojoin=True, nick="al")  # a new one
    ]
    engine = joined_engine()
    actions, _ = command(engine, "nick kitchen Jörg")
    assert of(actions, A.WriteBookmark) == [A.WriteBookmark(ROOM, engine.bookmark(ROOM), "asked by a client", nick="Jörg")]
    assert engine.bookmark(ROOM) is not None  # the one the user has, changed


def test_say_posts_long_text_whole():
    text = "x" * 6003
    actions, answer = command(joined_engine(), f"say kitchen {text}")
    (post,) = of(actions, A.SendToRoom)
    assert post.text == text
    assert answer == f"sent to {ROOM}"


def test_a_refused_post_is_reported_to_its_client_and_no_other_error_is():
    """Prosody 13 refuses a private message in a room that allows none (policy-violation)."""
    engine = joined_engine()
    actions, _ = command(engine, "say kitchen/bob hi")
    (sent,) = of(actions, A.SendToRoom)
    refusal = PostRefused(f"{ROOM}/bob", sent.origin_id, "policy-violation", "No PMs " + "x" * 1000)
    (reply,) = engine.handle(refusal, NOW)
    assert reply.resource == "laptop" and reply.text.startswith(f"not sent to {ROOM}/bob: No PMs xx")
    assert reply.text.endswith(" (policy-violation)") and len(reply.text) < 400
    assert engine.handle(PostRefused(ROOM, "mmx-made-up", "forbidden"), NOW) == []


def test_say_with_nothing_to_say_sends_nothing():
    engine = joined_engine()
    actions = engine.handle(ClientCommand("laptop", C.Say("kitchen", "  ")), NOW)  # an ad-hoc form left empty
    assert not of(actions, A.SendToRoom)
    assert of(actions, A.Reply)[0].text.startswith("usage: say ROOM TEXT")


@pytest.mark.parametrize("sep", ["\t", "\u00a0", "  \t "])
def test_any_whitespace_separates_words(sep):
    assert C.parse(f"relay{sep}all") == C.Relay(Mode.ALL)
    assert C.parse(f"relay{sep}mentions{sep}kitchen").room == "kitchen"
    assert C.parse(f"say{sep}kitchen{sep}hi there") == C.Say("kitchen", "hi there")


def relayed_id(engine: Engine) -> str:
    actions = engine.handle(RoomMessage(ROOM, "bob", "lunch?", stanza_id="s1", ref="<m1/>"), NOW + 1)
    (relay,) = of(actions, A.Relay)
    return dict(relay.deliveries)["laptop"]


def test_a_reply_that_is_nothing_but_its_quote_posts_nothing():
    engine = joined_engine()
    relay_id = relayed_id(engine)
    actions, text = command(engine, "", reply_to=relay_id)  # the edge cut the quote: nothing left
    assert not of(actions, A.SendToRoom)
    assert "nothing was sent" in text


def test_an_occupant_copying_our_origin_id_is_still_relayed():
    """Only our own occupant's echo of what a client posted is held back from that client."""
    engine = joined_engine()
    actions, _ = command(engine, "say kitchen hello")
    (post,) = of(actions, A.SendToRoom)
    echo = engine.handle(RoomMessage(ROOM, "alice", "hello", stanza_id="s1", origin_id=post.origin_id, ref="<e/>"), NOW)
    assert not of(echo, A.Relay)  # our echo, not back to the laptop that said it
    forged = engine.handle(
        RoomMessage(ROOM, "bob", "bob's own words", stanza_id="s2", origin_id=post.origin_id, ref="<b/>"), NOW
    )
    (relay,) = of(forged, A.Relay)
    assert [r for r, _ in relay.deliveries] == ["laptop"]


def test_private_messages_with_the_same_forged_stanza_id_are_both_relayed():
    engine = joined_engine()
    got = []
    for body in ("pm A", "pm B"):
        msg = RoomMessage(ROOM, "bob", body, private=True, stanza_id="fake-1", message_id=None, ref=f"<{body[-1]}/>")
        got += of(engine.handle(msg, NOW), A.Relay)
    assert [r.ref for r in got] == ["<A/>", "<B/>"]
    same = RoomMessage(ROOM, "bob", "pm B", private=True, stanza_id="fake-1", ref="<B/>")
    assert not of(engine.handle(same, NOW), A.Relay)  # the same message again: once


@pytest.mark.parametrize("typed", ["hallo Jo\u0308rg", "hallo J\u00f6rg", "hallo JO\u0308RG"])
def test_a_mention_matches_whichever_way_the_accent_was_typed(typed):
    assert mentions(typed, ["Jörg"])
    assert mentions("hallo Jörg", ["Jo\u0308rg"])  # a keyword typed decomposed
    assert not mentions("hallo Jörgen", ["Jo\u0308rg"])
