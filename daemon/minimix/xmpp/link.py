"""What every concern of the edge shares: the client, the app's queue, the tasks it runs,
and how long an answer may take."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aioxmpp
import aioxmpp.stream
import structlog

from minimix.xmpp.account import Account
from minimix.xmpp.compat import MinimixClient

log = structlog.get_logger("minimix.xmpp")
T = TypeVar("T")

# How long the answer to a query may take before it counts as none.  aioxmpp waits for an
# IQ's answer for ever: a room that never answers its disco#info held that room's live
# traffic back for ever (and a catch-up slot).  Archive queries: mam.QUERY_TIMEOUT_S.
ROOM_QUERY_TIMEOUT_S = 30.0  # a room (disco#info, reserved nick, destroy); maybe remote, over s2s
ACCOUNT_QUERY_TIMEOUT_S = 30.0  # our own server, about our account (bookmarks, its features)


async def asked(query: Awaitable[T], timeout: float) -> T:
    """The answer to ``query``, or TimeoutError after ``timeout`` seconds: every query the
    daemon waits on goes through here, and each caller says what no answer means."""
    try:
        return await asyncio.wait_for(query, timeout)
    except TimeoutError:
        raise TimeoutError(f"no answer in {timeout:g} s") from None


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


class Link:
    """The session's client (once started), the ``post`` of events to the app, and the
    tasks that wait for the network (each reports back as an event)."""

    def __init__(self, account: Account, post: Callable[[object], None]) -> None:
        self.account = account
        self.own = account.jid.bare()
        self.post = post
        self.client: MinimixClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def online(self) -> bool:
        return self.client is not None and self.client.established and not self.client.suspended

    def is_own_client(self, peer: aioxmpp.JID | None) -> bool:
        """Another resource of our own account: one of the user's clients (never us, nor
        ``minimix doctor``'s short session)."""
        if peer is None or not peer.resource or peer.bare() != self.own:
            return False
        me = self.client.local_jid if self.client is not None else self.account.jid
        return peer != me and peer.resource != f"{me.resource}-doctor"

    def enqueue(self, stanza: Any, on_state_change: Callable[[Any, Any], None] | None = None) -> None:
        client = self.client
        if client is None or not client.established:
            if on_state_change is not None:
                on_state_change(None, aioxmpp.stream.StanzaState.DROPPED)
            return  # the room machine knows we are offline; it rejoins on the next session
        try:
            client.enqueue(stanza, on_state_change=on_state_change)
        except ConnectionError:
            if on_state_change is not None:
                on_state_change(None, aioxmpp.stream.StanzaState.DROPPED)

    def spawn(self, coro: Awaitable[Any], what: str) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if isinstance(exc, ConnectionError) and not self.online:  # the stream's loss: reported once, as such
                log.debug("task ended with the stream", task=what, error=describe(exc))
            elif exc is not None:
                log.warning("task failed", task=what, error=describe(exc))

        task.add_done_callback(done)

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
