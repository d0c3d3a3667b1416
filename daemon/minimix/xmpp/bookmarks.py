"""The user's bookmarks at the edge: read from both stores, changed in the one each came from.

XEP-0402 items in PEP (fetched, their pushes followed, published with XEP-0402 §3.3
publish-options) and the legacy XEP-0048 list in private XML (read-modify-write of the
whole list), both turned into the core's RawItems: the core decides which are bookmarks
and which rooms they want.  The read markers of the user's phones are fetched alongside
(xmpp.phones).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import aioxmpp
import aioxmpp.bookmarks.xso as legacy_xso
import aioxmpp.errors
import aioxmpp.private_xml
import aioxmpp.pubsub.xso as pubsub_xso
import structlog

from minimix.core.bookmarks import Bookmark, RawItem, Source
from minimix.core.events import (
    LegacyBookmarksLoaded,
    PepBookmarkPublished,
    PepBookmarkRetracted,
    PepBookmarksLoaded,
)
from minimix.xmpp import phones
from minimix.xmpp.events import BookmarkPush
from minimix.xmpp.link import ACCOUNT_QUERY_TIMEOUT_S, Link, asked
from minimix.xmpp.xso import (
    NS_BOOKMARKS,
    NS_BOOKMARKS_COMPAT,
    Conference,
    node_config,
    publish_options,
)

log = structlog.get_logger("minimix.xmpp")

FETCH_AGAIN_MAX = 5  # bookmark list fetched again when changes were pushed meanwhile


@dataclass(frozen=True, slots=True)
class Change:
    """A change to one bookmark; None leaves a field as it is."""

    autojoin: bool | None = None
    nick: str | None = None
    venue: str | None = None

    def describe(self) -> str:
        parts = []
        if self.autojoin is not None:
            parts.append(f"autojoin {'on' if self.autojoin else 'off'}")
        if self.nick is not None:
            parts.append(f"nick {self.nick}")
        if self.venue is not None:
            parts.append(f"moved to {self.venue}")
        return ", ".join(parts) or "none"


def normalise_room(raw: str | None) -> tuple[str | None, str | None]:
    """(bare room JID, None) or (None, why not)."""
    if not raw:
        return None, "empty"
    try:
        jid = aioxmpp.JID.fromstr(raw)
    except ValueError as exc:
        return None, str(exc)[:100]
    if not jid.localpart or jid.resource:
        return None, "not of the form room@service"
    return str(jid), None


def prepared_nick(room: str | None, nick: str | None) -> tuple[str | None, bool]:
    """(the nick as the room will see it, whether it is usable): resourceprep maps some
    characters to others (a fullwidth Ａ to A) or to nothing (a soft hyphen), and refuses
    some.  A nick that prepares to nothing would join the bare room JID."""
    if room is None or not nick:
        return nick, True
    try:
        prepared = aioxmpp.JID.fromstr(room).replace(resource=nick).resource
    except ValueError:
        return nick, False
    return (prepared, True) if prepared else (nick, False)


def address_check(room: str, nick: str | None) -> str | None:
    """The core's AddressCheck: what the bookmark reader would skip (stringprep)."""
    norm, error = normalise_room(room)
    if norm is None:
        return f"{room[:100]!r} is not a room address ({error})"
    if nick and not prepared_nick(norm, nick)[1]:
        return "the nick is not a valid XMPP nick (resourceprep)"
    return None


def raw_pep_item(item_id: str | None, payload: Any) -> RawItem:
    item_id = item_id or ""
    room, error = normalise_room(item_id)
    if not isinstance(payload, Conference):
        return RawItem(item_id, Source.PEP, room, has_payload=False, room_error=error)
    nick, nick_ok = prepared_nick(room, payload.nick)
    return RawItem(
        item_id,
        Source.PEP,
        room,
        autojoin=payload.autojoin,
        name=payload.name,
        nick=nick,
        password=payload.password,
        nick_ok=nick_ok,
        room_error=error,
    )


def raw_legacy_item(conference: legacy_xso.Conference) -> RawItem:
    item_id = conference.jid or ""
    room, error = normalise_room(item_id)
    autojoin = conference.autojoin
    nick, nick_ok = prepared_nick(room, conference.nick)
    return RawItem(
        item_id,
        Source.LEGACY,
        room,
        autojoin=autojoin if isinstance(autojoin, str) else None,
        name=conference.name,
        nick=nick,
        password=conference.password,
        nick_ok=nick_ok,
        room_error=error,
    )


class Bookmarks:
    """The account's bookmarks: fetched, followed, changed."""

    def __init__(self, link: Link, pubsub: aioxmpp.PubSubClient, private: aioxmpp.private_xml.PrivateXMLService,
                 disco: aioxmpp.DiscoClient) -> None:
        self._link = link
        self._pubsub = pubsub
        self._private = private
        self._disco = disco
        self._pep_payloads: dict[str, Conference] = {}  # XEP-0402 items as last seen, kept whole
        self._pep_pushes = 0  # bookmark changes pushed to us: a fetch that saw some arrive is redone
        self._legacy_count = 0
        self.server_features: frozenset[str] = frozenset()

    # -- reading ---------------------------------------------------------------------------

    def fetch(self) -> None:
        self._link.spawn(self.fetched(), "fetch bookmarks")

    async def fetched(self) -> None:
        own = self._link.own
        post = self._link.post
        # Both at once: the account's features (is there #compat?) and the XEP-0402 items.
        # No answer in time: the fetch fails (logged); the next resync or poll fetches again.
        info_task = asyncio.ensure_future(
            asked(self._disco.query_info(own, require_fresh=True), ACCOUNT_QUERY_TIMEOUT_S)
        )
        # The read markers too, handed over before the bookmarks: playbacks wait for those.
        markers = asyncio.ensure_future(phones.fetch_markers(self._pubsub, own, ACCOUNT_QUERY_TIMEOUT_S))
        try:
            response = await self._fresh_pep_items()
        except BaseException:
            info_task.cancel()
            markers.cancel()
            raise
        for marker in await markers:
            post(marker)
        if response is None:
            items: tuple[RawItem, ...] = ()
        else:
            self._pep_payloads.clear()
            for item in response.payload.items:
                self._remember(item.id_, item.registered_payload)
            items = tuple(raw_pep_item(i.id_, i.registered_payload) for i in response.payload.items)
        post(PepBookmarksLoaded(items))
        info = await info_task
        self.server_features = frozenset(info.features)
        compat_store = NS_BOOKMARKS_COMPAT in self.server_features
        post(BookmarkPush(compat_store))
        if not compat_store:
            # Without #compat the legacy store is separate (or the only one): read it too.
            legacy = await self._fetch_legacy()
            self._legacy_count = len(legacy)
            post(LegacyBookmarksLoaded(legacy))

    async def _fresh_pep_items(self) -> Any:
        """The XEP-0402 items (None: no node), as of a moment after every change pushed so far.

        A list fetched while a change was being pushed may predate it, and taken as the
        whole truth it would undo that change (a room left, and joined again at the next
        push).  Its answer cannot be ordered against the pushes (aioxmpp hands a push over
        at once and the answer a loop iteration later), so then the list is fetched again.
        """
        response = None
        for _ in range(FETCH_AGAIN_MAX + 1):
            pushed = self._pep_pushes
            try:
                response = await asked(self._pubsub.get_items(self._link.own, NS_BOOKMARKS), ACCOUNT_QUERY_TIMEOUT_S)
            except aioxmpp.errors.XMPPCancelError as exc:
                if exc.condition != aioxmpp.ErrorCondition.ITEM_NOT_FOUND:
                    raise
                response = None  # no XEP-0402 node: no XEP-0402 bookmarks
            if self._pep_pushes == pushed:
                break
            log.debug("bookmarks changed while being fetched: fetching them again")
        return response

    async def _fetch_legacy(self) -> tuple[RawItem, ...]:
        try:
            result = await asked(self._private.get_private_xml(legacy_xso.Storage()), ACCOUNT_QUERY_TIMEOUT_S)
        except aioxmpp.errors.XMPPError as exc:
            if exc.condition in (aioxmpp.ErrorCondition.ITEM_NOT_FOUND, aioxmpp.ErrorCondition.SERVICE_UNAVAILABLE):
                return ()
            raise
        storage = result.registered_payload
        if not isinstance(storage, legacy_xso.Storage):
            return ()
        return tuple(
            raw_legacy_item(c) for c in storage.bookmarks if isinstance(c, legacy_xso.Conference)
        )

    def _remember(self, item_id: str | None, payload: Any) -> None:
        if item_id and isinstance(payload, Conference):
            self._pep_payloads[item_id] = payload

    # -- pushes ----------------------------------------------------------------------------

    def node_emptied(self, message: aioxmpp.Message) -> aioxmpp.Message | None:
        """A purge or delete of our bookmark node: every XEP-0402 bookmark is gone.

        Prosody 0.12 purges the node when a legacy client saves an empty list; aioxmpp's
        PubSubClient swallows purges without a signal, so this filter runs before it.
        """
        event = message.xep0060_event
        payload = event.payload if event is not None else None
        if (
            isinstance(payload, pubsub_xso.EventPurge | pubsub_xso.EventDelete)
            and payload.node == NS_BOOKMARKS
            and message.from_ == self._link.own
        ):
            self._pep_pushes += 1
            self._pep_payloads.clear()
            self._link.post(PepBookmarksLoaded(()))
            return None
        return message

    def on_published(self, jid: aioxmpp.JID, node: str, item: Any, *, message: Any = None) -> None:
        own = self._link.own
        if node == phones.NS_MDS and (marker := phones.published_marker(jid, own, item)) is not None:
            self._link.post(marker)
        if node != NS_BOOKMARKS:
            return
        if jid != own:  # only our own account's PEP counts (CVE-2023-28686)
            log.warning("ignored a bookmark notification from another entity", sender=str(jid))
            return
        self._pep_pushes += 1
        self._remember(item.id_, item.registered_payload)
        self._link.post(PepBookmarkPublished(raw_pep_item(item.id_, item.registered_payload)))

    def on_retracted(self, jid: aioxmpp.JID, node: str, id_: str, *, message: Any = None) -> None:
        if node != NS_BOOKMARKS:
            return
        if jid != self._link.own:
            log.warning("ignored a bookmark retraction from another entity", sender=str(jid))
            return
        self._pep_pushes += 1
        self._pep_payloads.pop(id_, None)
        self._link.post(PepBookmarkRetracted(id_))

    # -- changing --------------------------------------------------------------------------

    def change(
        self,
        bookmark: Bookmark | None,
        room: str,
        *,
        autojoin: bool | None = None,
        nick: str | None = None,
        venue: str | None = None,
        reason: str,
    ) -> None:
        """Change a bookmark in the store it came from (a new one: where the others live).

        Every field not changed is kept, ``<extensions/>`` and unknown children included
        (XEP-0402 §3.1).  ``venue``: move the bookmark to that room (same name, nick,
        extensions; not the old room's password).
        """
        change = Change(autojoin, nick, venue)
        self._link.spawn(self._change(bookmark, room, change, reason), f"update bookmark {room}")

    async def _change(self, bookmark: Bookmark | None, room: str, change: Change, reason: str) -> None:
        source = bookmark.source if bookmark is not None else self._new_bookmark_store()
        if source is Source.PEP:
            await self._change_pep(bookmark, room, change)
        else:
            await self._change_legacy(room, change)
            self.fetch()  # private XML pushes nothing: read the result back
        log.info("bookmark updated", room=room, store=source.value, change=change.describe(), reason=reason)

    def _new_bookmark_store(self) -> Source:
        """Where a new bookmark goes: XEP-0402, unless the account's bookmarks are all legacy."""
        if NS_BOOKMARKS_COMPAT in self.server_features or self._pep_payloads or not self._legacy_count:
            return Source.PEP
        return Source.LEGACY

    async def _change_pep(self, bookmark: Bookmark | None, room: str, change: Change) -> None:
        item_id = bookmark.item_id if bookmark is not None else room
        old = self._pep_payloads.get(item_id)
        payload = Conference()
        if old is not None:  # keep everything we do not change, unknown children included
            payload.name, payload.autojoin, payload.nick = old.name, old.autojoin, old.nick
            payload.password, payload.extensions = old.password, old.extensions
            payload.unknown[:] = old.unknown
        elif bookmark is not None:
            payload.name, payload.nick, payload.password = bookmark.name, bookmark.nick, bookmark.password
            payload.autojoin = "true" if bookmark.autojoin else "false"
        if change.autojoin is not None:
            payload.autojoin = "true" if change.autojoin else "false"
        if change.nick is not None:
            payload.nick = change.nick
        if change.venue is None:
            await self.publish(item_id, payload)
            return
        payload.password = None  # the password of the old room is not the new one's
        await self.publish(change.venue, payload)
        await asked(self._pubsub.retract(None, NS_BOOKMARKS, item_id, notify=True), ACCOUNT_QUERY_TIMEOUT_S)

    async def publish(self, item_id: str, payload: Conference) -> None:
        """Publish one XEP-0402 item without ever losing the others.

        XEP-0402 §3.3 publish-options first.  ejabberd 23.01 rejects max_items and
        send_last_published_item there (resource-constraint) and a node it creates keeps
        one item, so a second bookmark would replace the first: then make sure the node
        keeps them all (owner configuration) before and after publishing with the options
        it accepts, and check.
        """
        pubsub = self._pubsub
        wait = ACCOUNT_QUERY_TIMEOUT_S  # no answer in time: the change fails (logged)
        try:
            await asked(pubsub.publish(None, NS_BOOKMARKS, payload, id_=item_id, publish_options=publish_options()), wait)
            return
        except (aioxmpp.errors.XMPPError, RuntimeError) as exc:
            # conflict (precondition-not-met): the node exists with another configuration,
            # e.g. max_items=1 and access "presence" after another client's plain publish:
            # publishing as it is could replace a bookmark, and show passwords to contacts.
            # resource-constraint: ejabberd 23.01 knows only some of the options.
            # RuntimeError: no publish-options at all.
            log.info("bookmark publish-options refused: configuring the node", error=str(exc))
        with contextlib.suppress(aioxmpp.errors.XMPPError):
            await asked(pubsub.set_node_config(None, node_config(), NS_BOOKMARKS), wait)  # an existing node
        for options in (publish_options(), publish_options(full=False), None):
            try:
                await asked(pubsub.publish(None, NS_BOOKMARKS, payload, id_=item_id, publish_options=options), wait)
                break
            except (aioxmpp.errors.XMPPError, RuntimeError):
                if options is None:
                    raise
        with contextlib.suppress(aioxmpp.errors.XMPPError):
            await asked(pubsub.set_node_config(None, node_config(), NS_BOOKMARKS), wait)  # a node just created
        config = await asked(pubsub.get_node_config(None, NS_BOOKMARKS), wait)
        value = next((v for f in config.fields if f.var == "pubsub#max_items" for v in f.values), None)
        if value is not None and value.isdigit() and int(value) < 2:
            log.error("the bookmark node keeps only one item: other bookmarks may be lost", max_items=value)

    async def _change_legacy(self, room: str, change: Change) -> None:
        """Read-modify-write the whole XEP-0048 list (that is how it works; keep it short)."""
        # No answer in time to either: the change fails (logged), the list is as it was.
        result = await asked(self._private.get_private_xml(legacy_xso.Storage()), ACCOUNT_QUERY_TIMEOUT_S)
        storage = result.registered_payload
        if not isinstance(storage, legacy_xso.Storage):
            storage = legacy_xso.Storage()
        entries = [
            c for c in storage.bookmarks
            if isinstance(c, legacy_xso.Conference) and normalise_room(c.jid)[0] == room
        ]
        if not entries:
            entry = legacy_xso.Conference(None, room, autojoin="false")
            storage.bookmarks.append(entry)
            entries = [entry]
        for entry in entries:
            if change.autojoin is not None:
                entry.autojoin = "true" if change.autojoin else "false"
            if change.nick is not None:
                entry.nick = change.nick
            if change.venue is not None:
                entry.jid, entry.password = change.venue, None
        await asked(self._private.set_private_xml(storage), ACCOUNT_QUERY_TIMEOUT_S)
