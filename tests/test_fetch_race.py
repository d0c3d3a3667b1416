"""A bookmark list fetched while a change is pushed may predate the change; taken as the
whole truth it would undo it (the flake this pins: a room left, then joined again at the
next push). The session fetches again until no push came in meanwhile."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aioxmpp

from minimix.core.events import PepBookmarkPublished, PepBookmarksLoaded
from minimix.xmpp.account import Account
from minimix.xmpp.bookmarks import FETCH_AGAIN_MAX, Bookmarks
from minimix.xmpp.link import Link
from minimix.xmpp.xso import NS_BOOKMARKS, NS_BOOKMARKS_COMPAT, Conference

OWN = aioxmpp.JID.fromstr("alice@example.org")


def item(room: str) -> SimpleNamespace:
    conference = Conference()
    conference.autojoin = "true"
    return SimpleNamespace(id_=room, registered_payload=conference)


def answer(*rooms: str) -> SimpleNamespace:
    return SimpleNamespace(payload=SimpleNamespace(items=[item(r) for r in rooms]))


class FakePubSub:
    """The server's answers; during the first fetch another client adds a bookmark and
    its push reaches the session before the (stale) answer is handled."""

    def __init__(self, pushes: int) -> None:
        self.bookmarks: Bookmarks | None = None
        self.pushes, self.fetches = pushes, 0

    async def get_items(self, jid, node):
        if node != NS_BOOKMARKS:  # the read markers (xmpp.phones): none
            raise aioxmpp.errors.XMPPCancelError(aioxmpp.ErrorCondition.ITEM_NOT_FOUND)
        self.fetches += 1
        if self.fetches <= self.pushes:  # the list as it was, and a push meanwhile
            self.bookmarks.on_published(OWN, NS_BOOKMARKS, item(f"new{self.fetches}@muc"))
            return answer("old@muc")
        return answer("old@muc", *(f"new{n}@muc" for n in range(1, self.pushes + 1)))


class FakeDisco:
    async def query_info(self, jid, require_fresh=False):
        return SimpleNamespace(features=[NS_BOOKMARKS_COMPAT])


def fetch(pushes: int) -> tuple[list[object], FakePubSub]:
    posted: list[object] = []
    link = Link(Account(aioxmpp.JID.fromstr("alice@example.org/minimix"), "pw"), posted.append)
    pubsub = FakePubSub(pushes)
    pubsub.bookmarks = bookmarks = Bookmarks(link, pubsub, None, FakeDisco())  # type: ignore[arg-type]
    asyncio.run(bookmarks.fetched())
    return posted, pubsub


def loaded(posted: list[object]) -> list[tuple[str, ...]]:
    return [tuple(i.item_id for i in e.items) for e in posted if isinstance(e, PepBookmarksLoaded)]


def test_a_list_fetched_while_a_change_was_pushed_is_fetched_again():
    posted, pubsub = fetch(pushes=1)
    assert pubsub.fetches == 2
    assert loaded(posted) == [("old@muc", "new1@muc")]  # never the stale list alone
    assert any(isinstance(e, PepBookmarkPublished) for e in posted)


def test_a_quiet_fetch_is_fetched_once():
    posted, pubsub = fetch(pushes=0)
    assert pubsub.fetches == 1
    assert loaded(posted) == [("old@muc",)]


def test_endless_changes_still_end_in_a_list():
    posted, pubsub = fetch(pushes=100)
    assert pubsub.fetches == FETCH_AGAIN_MAX + 1
    assert len(loaded(posted)) == 1
