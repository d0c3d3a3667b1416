"""XEP-0313 Message Archive Management on rooms: what aioxmpp 0.13.3 lacks, and the catch-up.

The query, result and fin XSOs, an inbound filter that takes the results of our queries
away from the rest of the daemon (checking they come from the archive we asked), and the
catch-up: the newest messages after our cursor, paged with RSM (XEP-0059) — forwards, each
page handed over as it comes, when the archive says they are few enough; else backwards.
:class:`CatchUps` runs the catch-ups the core asks for and reports them as events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aioxmpp
import aioxmpp.disco.xso as disco_xso
import aioxmpp.errors
import aioxmpp.forms
import aioxmpp.misc
import aioxmpp.xso as xso
import structlog
from aioxmpp.rsm.xso import After, Before, ResultSetMetadata

from minimix.core.events import CatchUpDone, CatchUpPage, RoomMessage
from minimix.xmpp import inbound
from minimix.xmpp.compat import ArchivedStanza, RoomStanza, room_stanza_of, with_archive_id
from minimix.xmpp.link import ROOM_QUERY_TIMEOUT_S, Link, asked, describe

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
log = structlog.get_logger("minimix.xmpp")
PAGE = 100
QUERY_TIMEOUT_S = 30.0
CATCH_UP_CONCURRENCY = 200  # room archive queries in flight at once


@aioxmpp.IQ.as_payload_class
class Query(xso.XSO):
    TAG = (NS_MAM, "query")
    queryid = xso.Attr("queryid", default=None)
    node = xso.Attr("node", default=None)
    form = xso.Child([aioxmpp.forms.Data])
    rsm = xso.Child([ResultSetMetadata])


@aioxmpp.IQ.as_payload_class
class Fin(xso.XSO):
    TAG = (NS_MAM, "fin")
    complete = xso.Attr("complete", type_=xso.Bool(), default=False)
    rsm = xso.Child([ResultSetMetadata])


class Result(xso.XSO):
    TAG = (NS_MAM, "result")
    queryid = xso.Attr("queryid", default=None)
    id_ = xso.Attr("id")
    forwarded = xso.Child([aioxmpp.misc.Forwarded])


aioxmpp.Message.xep0313_result = xso.Child([Result])


@dataclass(frozen=True, slots=True)
class Archived:
    """One archived groupchat message: the archive's id, the time, and the message itself
    with the archive's id on it (compat.with_archive_id)."""

    id_: str
    stamp: float
    message: RoomStanza


class Archives:
    """Queries room archives; results reach only the query that asked for them.

    A result comes as a Message XSO through the inbound filter, or, where the stream hooks
    name :attr:`queried` and :meth:`take` (compat.StreamHooks archives, on_archived), read
    without XSOs by the router (an ArchivedStanza each)."""

    def __init__(self, client: aioxmpp.Client) -> None:
        self._client = client
        self._pending: dict[str, tuple[aioxmpp.JID, list[Result | ArchivedStanza]]] = {}
        self.queried: Counter[str] = Counter()  # archives with queries pending
        # Before minimix's own filter, which would take a room's message for room traffic.
        client.stream.app_inbound_message_filter.register(self._filter, -50)

    def _filter(self, message: aioxmpp.Message) -> aioxmpp.Message | None:
        result = message.xep0313_result
        if result is None:
            return message
        pending = self._pending.get(result.queryid or "")
        if pending is None or message.from_ is None or message.from_.bare() != pending[0]:
            return None  # not ours, or not from the archive we asked: drop it, never act on it
        pending[1].append(result)
        return None

    def take(self, result: ArchivedStanza) -> None:
        pending = self._pending.get(result.queryid or "")
        if pending is not None and result.archive == str(pending[0]):  # else not ours: dropped
            pending[1].append(result)

    async def page(
        self,
        archive: aioxmpp.JID,
        *,
        after_id: str | None = None,
        start: float | None = None,
        before: str | None = None,
        after: str | None = None,
        max_: int = PAGE,
    ) -> tuple[list[Archived], Fin]:
        """One page of the archive: the last ``max_`` before ``before`` ("" = the end), or
        the first ``max_`` after ``after`` (an archive id, RSM)."""
        queryid = secrets.token_hex(6)
        form = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
        form.fields.append(
            aioxmpp.forms.Field(type_=aioxmpp.forms.FieldType.HIDDEN, var="FORM_TYPE", values=[NS_MAM])
        )
        if after_id is not None:
            form.fields.append(aioxmpp.forms.Field(var="after-id", values=[after_id]))
        if start is not None:
            stamp = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            form.fields.append(aioxmpp.forms.Field(var="start", values=[stamp]))
        query = Query()
        query.queryid = queryid
        query.form = form
        query.rsm = ResultSetMetadata()
        query.rsm.max_ = max_
        if before is not None:
            query.rsm.before = Before(before)
        if after is not None:
            query.rsm.after = After(after)
        iq = aioxmpp.IQ(type_=aioxmpp.IQType.SET, to=archive, payload=query)
        self._pending[queryid] = (archive, [])
        queried = str(archive)
        self.queried[queried] += 1
        try:
            fin = await asyncio.wait_for(self._client.send(iq), QUERY_TIMEOUT_S)
            results = self._pending[queryid][1]
        finally:
            self._pending.pop(queryid, None)
            self.queried[queried] -= 1
            if self.queried[queried] <= 0:
                del self.queried[queried]
        return [a for a in (_archived(r, queried) for r in results) if a is not None], fin


def _archived(result: Result | ArchivedStanza, archive: str) -> Archived | None:
    """A result as an Archived, if it holds a groupchat message."""
    if isinstance(result, ArchivedStanza):
        if result.id_ is None or result.message is None:
            return None
        return Archived(result.id_, result.stamp or 0.0, result.message)
    forwarded = result.forwarded
    message = forwarded.stanza if forwarded is not None else None
    if not isinstance(message, aioxmpp.Message) or message.type_ != aioxmpp.MessageType.GROUPCHAT:
        return None
    if message.from_ is None:
        return None
    delay = forwarded.delay
    stamp = delay.stamp.timestamp() if delay is not None and delay.stamp is not None else 0.0
    return Archived(result.id_, stamp, with_archive_id(room_stanza_of(message, archive), result.id_))


async def catch_up(
    archives: Archives,
    room: aioxmpp.JID,
    after: tuple[str | None, float],
    limit: int,
    extended: bool,
    on_page: Callable[[list[Archived]], None] | None = None,
) -> tuple[list[Archived], int, int]:
    """The newest ``limit`` messages after ``after`` (oldest first), how many more, and how
    many of them were already handed to ``on_page``.

    With ``urn:xmpp:mam:2#extended`` the archive filters by id (``after-id``); without it
    (ejabberd), or without an id to go by, by time (``start``), and the pages are read
    backwards until the cursor's own id shows up.  Paging backwards from the end keeps the
    newest messages when there are more than ``limit``, but nothing can be relayed before
    the last page is in.  So when the archive counts no more than ``limit`` messages since
    the cursor's time, the pages are read forwards instead and each goes to ``on_page`` as
    it comes: its relays go out while the next pages are fetched.
    """
    after_id, after_stamp = after
    by_id = extended and after_id is not None
    try:
        if by_id and on_page is not None and limit > 0:
            streamed = await _forward(archives, room, after_id, after_stamp, limit, on_page)
            if streamed is not None:
                return [], 0, streamed
        return await _backward(archives, room, after, limit, by_id)
    except aioxmpp.errors.XMPPError as exc:
        if not by_id or exc.condition != aioxmpp.ErrorCondition.ITEM_NOT_FOUND:
            raise
    except _UnknownCursor:
        pass
    # The archive no longer has our cursor's id (it expired, or was cleared): by time,
    # from the cursor's time, instead of nothing at all.  Whatever it still has from before
    # the cursor is older still, and gone with it.
    log.warning("the room's archive no longer has our cursor: catching up by time", room=str(room),
                after_id=after_id)
    return await _backward(archives, room, (None, after_stamp), limit, False)


async def _backward(
    archives: Archives, room: aioxmpp.JID, after: tuple[str | None, float], limit: int, by_id: bool
) -> tuple[list[Archived], int, int]:
    after_id, after_stamp = after
    found: list[Archived] = []  # newest first
    before = ""
    reached = False
    while len(found) < limit:
        page, fin = await archives.page(
            room,
            after_id=after_id if by_id else None,
            start=None if by_id else after_stamp - 1.0,
            before=before,
            max_=min(PAGE, limit - len(found)),
        )
        for archived in reversed(page):
            if after_id is not None and archived.id_ == after_id:
                reached = True
                break
            found.append(archived)
        rsm = fin.rsm
        first = rsm.first.value if rsm is not None and rsm.first is not None else None
        if reached or fin.complete or not page or first is None:
            break
        before = first
    if by_id and found and not await _has(archives, room, after_id):
        raise _UnknownCursor
    more = 0
    if not reached and found and len(found) >= limit:
        more = await _count_between(archives, room, after, found[-1].id_)
    return list(reversed(found)), more, 0


class _UnknownCursor(Exception):
    """The archive ignored an id it does not have, rather than answer item-not-found."""


async def _has(archives: Archives, room: aioxmpp.JID, archive_id: str) -> bool:
    """Whether the archive has ``archive_id``, asked when messages came after it: then one
    comes after it (RSM ``after``).  Prosody 13.0's internal store answers an after-id it
    does not have with no error: backwards, everything as if unfiltered (messages older
    than the cursor among them, and no count of the rest); forwards, nothing."""
    page, _ = await archives.page(room, after=archive_id, max_=1)
    return bool(page)


async def _forward(archives: Archives, room: aioxmpp.JID, after_id: str, after_stamp: float, limit: int,
                   on_page: Callable[[list[Archived]], None]) -> int | None:
    """Page forwards from our cursor, handing over each page, if the archive's count of
    messages since the cursor's time (an RSM count, ``max`` 0: Prosody counts after its time
    filters, not after its id filter) is at most ``limit``; None if it is more, or unsaid.

    The count is from the start of the cursor's second (a server's archive times are whole
    seconds; ours is when we got the message): it includes the cursor's own message, and
    any said just before it in that second.  So it errs towards paging backwards; a count
    that is still short (a server clock ahead of ours) brings a few more than ``limit``,
    never more than twice ``limit``.
    """
    _, fin = await archives.page(room, start=math.floor(after_stamp), max_=0)
    count = fin.rsm.count if fin.rsm is not None else None
    if count is None or count > limit + 1:  # (+1: it may count the cursor's own message)
        return None
    streamed = 0
    cursor = after_id
    while streamed < 2 * limit:
        page, fin = await archives.page(room, after=cursor, max_=min(PAGE, 2 * limit - streamed))
        page = [a for a in page if a.id_ != after_id]
        if page:
            on_page(page)
            streamed += len(page)
            cursor = page[-1].id_
        if fin.complete or not page:
            break
    return streamed


async def _count_between(archives: Archives, room: aioxmpp.JID, after: tuple[str | None, float], oldest: str,
                         pages: int = 10) -> int:
    """How many messages lie between our cursor and ``oldest`` (the oldest one fetched).

    Counted by paging forward from the cursor: an archive's RSM <count/> cannot be trusted
    for this (Prosody's counts the whole archive, before the after-id filter).  At most
    ``pages`` pages: beyond, the count says "at least".
    """
    after_id, after_stamp = after
    count = 0
    cursor = after_id
    for _ in range(pages):
        page, fin = await archives.page(
            room, start=None if cursor else after_stamp - 1.0, after=cursor, max_=PAGE
        )
        for archived in page:
            if archived.id_ == oldest:
                return count
            if archived.id_ != after_id:
                count += 1
        if fin.complete or not page:
            return count
        cursor = page[-1].id_
    return count


async def newest_id(archives: Archives, room: aioxmpp.JID) -> tuple[str, float] | None:
    page, _ = await archives.page(room, before="", max_=1)
    return (page[-1].id_, page[-1].stamp) if page else None


class CatchUps:
    """The catch-ups the core asks for, each a task that reports CatchUpPage and CatchUpDone."""

    def __init__(self, link: Link, archives: Archives) -> None:
        self._link = link
        self.archives = archives
        self._room_features: dict[str, frozenset[str]] = {}  # disco#info of rooms, this session
        # Archive queries in flight at once: the server answers them one at a time anyway,
        # and a start with a thousand rooms must not hold a thousand answers in memory.
        self._slots = asyncio.Semaphore(CATCH_UP_CONCURRENCY)

    def new_session(self) -> None:
        """A new session: rooms are asked again (one may have turned its archive on)."""
        self._room_features.clear()

    def catch_up(self, room: str, after: tuple[str, float] | None, limit: int, token: int | None = None) -> None:
        """Fetch from the room's archive what came after ``after``; report CatchUpDone."""

        async def run() -> None:
            async with self._slots:
                await self._catch_up(room, after, limit, token)

        self._link.spawn(run(), f"catch up {room}")

    async def _catch_up(self, room: str, after: tuple[str, float] | None, limit: int, token: int | None) -> None:
        post = self._link.post
        jid = aioxmpp.JID.fromstr(room)
        try:
            features = await self._features(jid)
            if NS_MAM not in features:
                post(CatchUpDone(room, mam=False, token=token))
                return
            if after is None:  # first time here: only learn where the archive ends
                post(CatchUpDone(room, mam=True, head=await newest_id(self.archives, jid), token=token))
                return
            found, more, streamed = await catch_up(
                self.archives, jid, after, limit, NS_MAM_EXTENDED in features,
                on_page=lambda page: post(CatchUpPage(room, _messages(page), token)),
            )
        except (TimeoutError, aioxmpp.errors.XMPPError, ConnectionError) as exc:
            post(CatchUpDone(room, error=describe(exc), token=token))
            return
        except Exception as exc:  # a fault of ours: still an end the core hears of (its gap is
            post(CatchUpDone(room, error=describe(exc), token=token))  # asked again), and logged
            raise
        post(CatchUpDone(room, _messages(found), more, mam=True, streamed=streamed, token=token))

    async def _features(self, jid: aioxmpp.JID) -> frozenset[str]:
        key = str(jid)
        if key not in self._room_features:
            # Not DiscoClient.query_info: it keeps every answer (forms and all) for the
            # session, a lot of memory with many rooms; we keep the features only.
            client = self._link.client
            assert client is not None
            iq = aioxmpp.IQ(type_=aioxmpp.IQType.GET, to=jid, payload=disco_xso.InfoQuery())
            info = await asked(client.send(iq), ROOM_QUERY_TIMEOUT_S)  # none: the catch-up fails
            self._room_features[key] = frozenset(info.features)
        return self._room_features[key]


def _messages(archived: list[Archived]) -> tuple[RoomMessage, ...]:
    return tuple(inbound.archived_message(a.message, a.stamp) for a in archived)


__all__ = ["Archived", "Archives", "CatchUps", "catch_up", "newest_id", "NS_MAM", "NS_MAM_EXTENDED"]
