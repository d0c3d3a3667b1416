"""Bookmarks as the edge reads them: the nick as the room will see it (resourceprep), and
a nick that prepares to nothing skipped like any other malformed bookmark."""

from __future__ import annotations

import pytest

import minimix.xmpp  # noqa: F401  (patches and XSOs)
from minimix.core.bookmarks import Bookmark, Rejected, validate
from minimix.xmpp.bookmarks import raw_pep_item
from minimix.xmpp.xso import Conference

ROOM = "room@muc.example"


def item(nick: str) -> Bookmark | Rejected:
    c = Conference()
    c.autojoin, c.nick = "true", nick
    return validate(raw_pep_item(ROOM, c))


def test_the_nick_is_the_one_the_room_will_see():
    """A fullwidth Ａ becomes A on the wire: compared raw, the daemon never saw its wanted
    nick as held, and asked for it back for ever."""
    assert item("\uff21lice").nick == "Alice"
    assert item("alice").nick == "alice"


@pytest.mark.parametrize("nick", ["\u00ad", "\u200b", "\u00ad\u200b"])
def test_a_nick_that_prepares_to_nothing_is_skipped(nick):
    """It once joined the bare room JID and retried for ever."""
    got = item(nick)
    assert isinstance(got, Rejected) and "resourcepart" in got.reason
