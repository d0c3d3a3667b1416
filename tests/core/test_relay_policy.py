"""Relay policy and the command language (table-driven + Hypothesis)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minimix.core import commands as C
from minimix.core.relay import ClientSettings, Incoming, Mode, Seen, config_mode, mentions, wants

R = "room@muc.example"


@pytest.mark.parametrize(
    ("text", "words", "expected"),
    [
        ("hi alice", ["alice"], True),
        ("Hi ALICE!", ["alice"], True),
        ("alice: ping", ["alice"], True),
        ("malice aforethought", ["alice"], False),
        ("alice_ is here", ["alice"], False),  # alice_ is another nick
        ("ping alice_", ["alice_"], True),
        ("[bot] says hi", ["[bot]"], True),
        ("Ärger mit Änne?", ["änne"], True),
        ("Ännelie", ["änne"], False),
        ("привет Алиса", ["алиса"], True),
        ("雪が降る", ["雪"], True),  # scripts without spaces still match the word itself
        ("nothing here", ["alice", "deploy"], False),
        ("the DEPLOY failed", ["alice", "deploy"], True),
        ("", ["alice"], False),
        ("alice", [""], False),
    ],
)
def test_mentions(text, words, expected):
    assert mentions(text, words) is expected


@pytest.mark.parametrize(
    ("mode", "msg", "expected"),
    [
        (Mode.ALL, Incoming(R, "hello"), True),
        (Mode.ALL, Incoming(R, None, subject="new topic"), True),
        (Mode.ALL, Incoming(R, None), False),  # chat states, receipts…: nothing to relay
        (Mode.MENTIONS, Incoming(R, "hello"), False),
        (Mode.MENTIONS, Incoming(R, "hello alice"), True),
        (Mode.MENTIONS, Incoming(R, "the build broke"), True),  # keyword
        (Mode.MENTIONS, Incoming(R, None, subject="alice"), False),
        (Mode.MENTIONS, Incoming(R, "psst", private=True), True),
        (Mode.OFF, Incoming(R, "hello alice"), False),
        (Mode.OFF, Incoming(R, "psst", private=True), False),
    ],
)
def test_wants(mode, msg, expected):
    assert wants(mode, msg, ["alice"], ["build"]) is expected


def test_room_setting_beats_default_beats_config():
    s = ClientSettings()
    assert s.mode(R, Mode.MENTIONS) is Mode.MENTIONS  # nothing chosen: the config's mode
    s = s.with_mode(Mode.ALL, None)
    assert s.mode(R, Mode.MENTIONS) is Mode.ALL
    s = s.with_mode(Mode.OFF, R)
    assert s.mode(R, Mode.MENTIONS) is Mode.OFF
    assert s.mode("other@muc.example", Mode.MENTIONS) is Mode.ALL


def test_keywords_are_case_insensitive_sets():
    s = ClientSettings().with_keyword("Deploy", True).with_keyword("deploy", True)
    assert s.keywords == ("deploy",)
    assert s.with_keyword("DEPLOY", False).keywords == ()


def test_config_globs():
    globs = {"Conversations.*": "mentions", "gajim*": "all"}
    assert config_mode("Conversations.Xy1z", globs) is Mode.MENTIONS
    assert config_mode("gajim.ABC", globs) is Mode.ALL
    assert config_mode("poezio", globs) is Mode.OFF


def test_seen_dedups_by_any_key_and_forgets_old_ones():
    seen = Seen(size=2)
    assert seen.add(R, ["sid1", "oid1"])
    assert not seen.add(R, ["sid1"])
    assert not seen.add(R, [None, "oid1"])
    assert seen.add("other@muc", ["sid1"])  # per room
    assert seen.add(R, ["sid2"])
    assert seen.add(R, ["sid3"])
    assert seen.add(R, ["sid1", "x"])  # forgotten after `size` newer keys


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("", C.Help()),
        ("help", C.Help()),
        ("/HELP", C.Help()),
        ("!status", C.Status()),
        ("rooms", C.Rooms()),
        ("relay all", C.Relay(Mode.ALL)),
        ("Relay Mentions lobby", C.Relay(Mode.MENTIONS, "lobby")),
        ("relay off lobby@muc.example", C.Relay(Mode.OFF, "lobby@muc.example")),
        ("keywords add deploy", C.Keywords("add", "deploy")),
        ("keywords remove deploy", C.Keywords("remove", "deploy")),
        ("keywords", C.Keywords("list")),
        ("join lobby@muc.example", C.Join("lobby@muc.example")),
        ("join lobby@muc.example al", C.Join("lobby@muc.example", "al")),
        ("leave lobby", C.Leave("lobby")),
        ("nick lobby Alice Liddell", C.Nick("lobby", "Alice Liddell")),
        ("say lobby hello   world", C.Say("lobby", "hello   world")),
        ("say lobby/bob psst", C.Say("lobby", "psst", "bob")),
    ],
)
def test_parse(text, command):
    assert C.parse(text) == command


@pytest.mark.parametrize("text", ["relay sometimes", "relay", "join", "say lobby", "nick lobby", "dance"])
def test_parse_unknown(text):
    assert isinstance(C.parse(text), C.Unknown)


@given(st.text(max_size=300))
def test_parse_never_raises(text):
    assert C.parse(text) is not None


ROOMS = ["lobby@muc.example", "lobbyists@muc.example", "dev@muc.example", "devops@other.example"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dev@muc.example", "dev@muc.example"),
        ("DEV@MUC.EXAMPLE", "dev@muc.example"),
        ("lobby", "lobby@muc.example"),  # exact name wins over the longer one
        ("lobbyi", "lobbyists@muc.example"),
        ("devo", "devops@other.example"),
        ("de", C.Ambiguous(("dev@muc.example", "devops@other.example"))),
        ("nope", C.NotFound("nope")),
        ("new@muc.example", C.NotFound("new@muc.example")),
    ],
)
def test_resolve_room(query, expected):
    assert C.resolve_room(query, ROOMS) == expected


def test_resolve_new_room_for_join():
    assert C.resolve_room("New@muc.example", ROOMS, allow_new=True) == "new@muc.example"
