"""What the fast paths hand to the daemon: one typed object, set once on a stanza stream."""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamHooks:
    """Where the fast paths deliver what they read themselves, and whom they tell.

    - ``rooms``: bare JIDs whose top-level groupchat messages are read without XSOs (the
      router) into RoomStanzas for ``on_room_stanza``;
    - ``archives``: bare JIDs with an archive query pending, whose MAM results are read the
      same way into ArchivedStanzas for ``on_archived``;
    - ``on_taken``: called once the stanzas taken in one go have been handed over, and
      before an <r/> is answered (the daemon may handle them now, and what it sends for
      them goes out before the answer);
    - ``ack_mark(sm_id, count)``: called with the XEP-0198 count of stanzas received before
      each <a/> goes out and after each batch taken (cheap, must not raise): the count on
      record is never below the last one the server got from us, which a crash probe must
      quote.
    A hook left None: that fast path is off, and what it would take goes aioxmpp's way.
    """

    rooms: Container[str] = frozenset()
    on_room_stanza: Callable[[Any], None] | None = None
    archives: Container[str] = frozenset()
    on_archived: Callable[[Any], None] | None = None
    on_taken: Callable[[], None] | None = None
    ack_mark: Callable[[str, int], None] | None = None


NO_HOOKS = StreamHooks()


def set_hooks(stream: Any, hooks: StreamHooks) -> None:
    """Set ``hooks`` on the stanza stream ``stream`` (replacing any set before)."""
    stream._minimix_hooks = hooks


def hooks_of(stream: Any) -> StreamHooks:
    return getattr(stream, "_minimix_hooks", NO_HOOKS)
