"""The catch-up's paging (xmpp/mam.py) against a fake archive: forwards, each page handed
over as it comes, when the archive counts few enough messages since our cursor; backwards
from the end (keeping the newest) when it counts more, or says nothing."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aioxmpp
import pytest

from minimix.xmpp import mam

ROOM = aioxmpp.JID.fromstr("room@muc.example")


class FakeArchive:
    """Messages m0 (our cursor) … m{n}; ``count``: what a max=0 query says (None: nothing)."""

    def __init__(self, n: int, count: int | None, page: int = 7) -> None:
        self.items = [mam.Archived(f"m{i}", 1000.0 + i, SimpleNamespace(i=i)) for i in range(n + 1)]
        self.count, self.page_size, self.queries = count, page, []

    async def page(self, archive, *, after_id=None, start=None, before=None, after=None, max_=mam.PAGE):
        self.queries.append("count" if max_ == 0 else "before" if before is not None else "after")
        if max_ == 0:
            return [], fin(count=self.count)
        ids = [a.id_ for a in self.items]
        max_ = min(max_, self.page_size)
        if before is not None:  # backwards from `before` ("" = the end), after-id applied
            end = len(ids) if before == "" else ids.index(before)
            first = ids.index(after_id) + 1 if after_id else 0
            got = self.items[max(first, end - max_) : end]
            return got, fin(complete=end - max_ <= first, first=got[0].id_ if got else None)
        start_at = ids.index(after) + 1 if after else 0
        got = self.items[start_at : start_at + max_]
        return got, fin(complete=start_at + max_ >= len(ids))


def fin(count=None, complete=False, first=None):
    rsm = SimpleNamespace(count=count, first=SimpleNamespace(value=first) if first else None)
    return SimpleNamespace(rsm=rsm, complete=complete)


def run(archive: FakeArchive, limit: int) -> tuple[list[str], list[list[str]], int, int]:
    pages: list[list[str]] = []
    found, more, streamed = asyncio.run(
        mam.catch_up(archive, ROOM, ("m0", 1000.0), limit, True, on_page=lambda p: pages.append([a.id_ for a in p]))
    )
    return [a.id_ for a in found], pages, more, streamed


def test_few_enough_messages_are_paged_forwards_and_handed_over_page_by_page():
    archive = FakeArchive(20, count=21)  # the count may include the cursor's own message
    found, pages, more, streamed = run(archive, limit=20)
    assert found == [] and more == 0 and streamed == 20
    assert [i for p in pages for i in p] == [f"m{i}" for i in range(1, 21)]  # in order, once
    assert len(pages) == 3 and archive.queries[0] == "count"
    assert "before" not in archive.queries


@pytest.mark.parametrize("count", [22, None])
def test_more_than_the_limit_or_no_count_pages_backwards_keeping_the_newest(count):
    archive = FakeArchive(30, count=count)
    found, pages, more, streamed = run(archive, limit=20)
    assert pages == [] and streamed == 0
    assert found == [f"m{i}" for i in range(11, 31)]
    assert more == 10


def test_a_count_that_was_short_brings_a_few_more_never_more_than_twice_the_limit():
    archive = FakeArchive(50, count=5)  # a wrong count: paged forwards, bounded
    _, pages, _, streamed = run(archive, limit=10)
    assert streamed == 20
    assert [i for p in pages for i in p] == [f"m{i}" for i in range(1, 21)]


class ExpiredArchive(FakeArchive):
    """Our cursor m0 (and what came before it) expired from the archive: a query that names
    its id is an error, as Prosody answers it."""

    def __init__(self, n: int, count: int | None) -> None:
        super().__init__(n, count)
        self.items = self.items[1:]

    async def page(self, archive, *, after_id=None, start=None, before=None, after=None, max_=mam.PAGE):
        if "m0" in (after_id, after):
            raise aioxmpp.errors.XMPPCancelError(aioxmpp.ErrorCondition.ITEM_NOT_FOUND)
        return await super().page(archive, after_id=after_id, start=start, before=before, after=after, max_=max_)


@pytest.mark.parametrize("count", [5, 50])
def test_a_cursor_gone_from_the_archive_catches_up_by_time(count):
    """An expired cursor once ended the catch-up with item-not-found: nothing relayed."""
    found, pages, more, streamed = run(ExpiredArchive(5, count=count), limit=20)
    assert [i for p in pages for i in p] + found == [f"m{i}" for i in range(1, 6)]
    assert more == 0


class IgnoringArchive(FakeArchive):
    """Prosody 13.0's internal store: our cursor m0 expired, and an id it does not have is
    no error: backwards, an after-id filters nothing; forwards, RSM <after/> finds nothing."""

    def __init__(self, n: int) -> None:
        super().__init__(n, count=None)
        self.items = self.items[1:]

    async def page(self, archive, *, after_id=None, start=None, before=None, after=None, max_=mam.PAGE):
        if after == "m0":
            return [], fin(complete=True)
        after_id = None if after_id == "m0" else after_id
        return await super().page(archive, after_id=after_id, start=start, before=before, after=after, max_=max_)


def test_a_cursor_the_archive_ignores_is_caught_up_by_time_and_what_is_not_shown_counted():
    """Against Prosody 13.0 the catch-up took the newest, but counted 0 "more" (the count
    pages forwards from the unknown id: nothing) and, had the archive kept messages older
    than the cursor, would have relayed those again."""
    found, pages, more, streamed = run(IgnoringArchive(30), limit=20)
    assert pages == [] and streamed == 0
    assert found == [f"m{i}" for i in range(11, 31)]
    assert more == 10


# -- against the real Prosody: what the choice between the two rests on -------------------------


@pytest.mark.prosodies
@pytest.mark.parametrize("limit, forwards", [(500, True), (50, False)])
def test_prosodys_count_since_the_cursor_picks_the_paging(server, limit, forwards):
    """Prosody's RSM count for a ``start`` filter counts what came since then (its id filter
    would not be counted): within the limit the room is read forwards, page by page, else
    backwards keeping the newest.  Prosody 13.0's archive counts nothing: always backwards.
    Either way: what came after the cursor, once, in order."""
    from harness import NS, TestClient, el_of
    from minimix.xmpp import compat
    from minimix.xmpp.account import security_layer

    compat.apply()
    room = server.new_room("paging")
    said = [f"after {i:03d}" for i in range(120)]  # in a burst, most in the cursor's second
    with TestClient(server, server.new_account(), "bob") as bob:
        bob.join(room, "bob")
        bob.say(room, "the cursor")
        cursor = bob.wait_groupchat(room, "the cursor")
        cursor_stamp = time.time()  # as the daemon stamps a live message: when it came
        cursor_id = el_of(cursor).find("sid:stanza-id", NS).get("id")
        for text in said:
            bob.say(room, text)
        bob.wait_groupchat(room, said[-1])
    reader = server.new_account()

    async def main():
        client = compat.MinimixClient(
            aioxmpp.JID.fromstr(f"{reader.jid}/mam"),
            security_layer(reader.password, str(server.ca_file)),
            delay_for=lambda attempt: 1.0,
            override_peer=[(server.host, server.port, aioxmpp.connector.STARTTLSConnector())],
            pin_peer=True,
        )
        pages: list[list[mam.Archived]] = []
        async with client.connected():
            found, more, streamed = await mam.catch_up(
                mam.Archives(client), aioxmpp.JID.fromstr(room), (cursor_id, cursor_stamp), limit, True,
                on_page=pages.append,
            )
        return found, more, streamed, pages

    found, more, streamed, pages = asyncio.run(asyncio.wait_for(main(), 60))
    got = [a.message.body for page in pages for a in page] + [a.message.body for a in found]
    if forwards and server.mam_counts:
        assert streamed == len(said) and len(pages) > 1 and found == []
        assert got == said
    else:
        assert streamed == 0 and pages == []
        assert got == said[-limit:] and more == max(0, len(said) - limit)


def test_a_catch_up_that_fails_for_a_reason_of_its_own_still_reports_its_end():
    """Whatever ends a catch-up, the core hears of it (CatchUpDone with the error: its gap is
    asked again), and a fault of ours still fails the task, which logs it."""
    from minimix.core.events import CatchUpDone

    posted: list[object] = []
    link = SimpleNamespace(post=posted.append)
    catchups = mam.CatchUps(link, archives=None)

    async def broken(jid):
        raise RuntimeError("a fault of ours")

    catchups._features = broken
    with pytest.raises(RuntimeError):
        asyncio.run(catchups._catch_up("room@muc.example.org", ("id", 0.0), 10, 7))
    assert posted == [CatchUpDone("room@muc.example.org", error="RuntimeError: a fault of ours", token=7)]
