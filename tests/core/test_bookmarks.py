"""Bookmark validation and the union of the two stores."""

import pytest

from minimix.core.bookmarks import (
    BookmarkSet,
    RawItem,
    Rejected,
    Source,
    parse_bool,
    validate,
    wants,
)
from minimix.core.types import Want

PEP, LEGACY = Source.PEP, Source.LEGACY


def raw(room="r@muc.example", source=PEP, item_id=None, **kw):
    return RawItem(item_id or room or "bad", source, room, **kw)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("true", True), ("1", True), ("false", False), ("0", False), (" true ", True)],
)
def test_parse_bool(value, expected):
    assert parse_bool(value) is expected


@pytest.mark.parametrize("value", ["maybe", "TRUE", "yes", "", "2"])
def test_parse_bool_rejects(value):
    with pytest.raises(ValueError):
        parse_bool(value)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (raw(has_payload=False), "no <conference/> payload"),
        (raw(room=None, room_error="bad JID"), "not a room JID (bad JID)"),
        (raw(autojoin="maybe"), "autojoin: not a boolean: 'maybe'"),
        (raw(nick="n" * 5000), "nick longer than 1023 bytes"),
        (raw(nick="é" * 600), "nick longer than 1023 bytes"),
        (raw(nick="bad\u0007nick", nick_ok=False), "nick is not a valid XMPP resourcepart"),
    ],
)
def test_malformed_items_are_rejected_with_a_reason(item, reason):
    result = validate(item)
    assert isinstance(result, Rejected)
    assert result.reason == reason


def test_valid_item():
    bm = validate(raw(autojoin="1", nick="al", password="s3", name="Room"))
    assert (bm.room, bm.autojoin, bm.nick, bm.password, bm.name) == ("r@muc.example", True, "al", "s3", "Room")
    assert "s3" not in repr(bm)


def test_empty_nick_means_default():
    assert validate(raw(nick="")).nick is None


def test_malformed_items_are_reported_once_and_others_kept():
    book = BookmarkSet()
    book.load_pep([raw(autojoin="maybe", item_id="x@muc"), raw("ok@muc", autojoin="true")])
    effective, notes = book.resolve()
    assert list(effective) == ["ok@muc"]
    assert [(n.level, n.fields["item"]) for n in notes] == [("warning", "x@muc")]
    _, again = book.resolve()
    assert again == []  # logged once


def test_duplicate_rooms_within_a_store_keep_the_first():
    book = BookmarkSet()
    book.load_legacy([raw("a@muc", LEGACY, nick="one"), raw("a@muc", LEGACY, item_id="A@muc", nick="two")])
    effective, notes = book.resolve()
    assert effective["a@muc"].nick == "one"
    assert "duplicate" in notes[0].fields["reason"]


def test_pep_wins_over_legacy_and_union_is_taken():
    book = BookmarkSet()
    book.load_legacy([raw("a@muc", LEGACY, nick="legacy"), raw("b@muc", LEGACY)])
    book.load_pep([raw("a@muc", nick="pep")])
    effective, _ = book.resolve()
    assert effective["a@muc"].nick == "pep"
    assert effective["b@muc"].source is LEGACY


def test_publish_and_retract():
    book = BookmarkSet()
    book.publish(raw("a@muc", autojoin="true"))
    assert "a@muc" in book.resolve()[0]
    assert book.retract("a@muc")
    assert not book.retract("a@muc")
    assert book.resolve()[0] == {}


def test_wants_only_autojoin_with_default_nick():
    book = BookmarkSet()
    book.load_pep([raw("a@muc", autojoin="true"), raw("b@muc", autojoin="false"), raw("c@muc", autojoin="1", nick="x", password="p")])
    assert wants(book.resolve()[0], "alice") == {"a@muc": Want("alice"), "c@muc": Want("x", "p")}


def test_a_destroyed_rooms_bookmark_moves_only_to_a_venue_not_bookmarked_yet():
    """Moving onto the user's own bookmark of the venue overwrote its nick and password (and
    the daemon was locked out); a room named as its own venue lost its bookmark."""
    from minimix.core.bookmarks import Bookmark, may_move

    marks = {"r@muc.example": Bookmark("r@muc.example"), "v@muc.example": Bookmark("v@muc.example")}
    assert may_move(marks, "r@muc.example", "new@muc.example") is None
    assert may_move(marks, "r@muc.example", "V@muc.example") == "V@muc.example is bookmarked already"
    assert may_move(marks, "r@muc.example", "r@muc.example") == "the venue is the room itself"
