"""What minimix needs of aioxmpp 0.13.3 that it does not do, quarantined here.

- ``fixes/``: one module per defect of aioxmpp 0.13.3 (or of what it runs on), each saying
  what is wrong, the upstream issue (or "none filed"), and when it can go; each has a test
  in tests/compat/ whose ``test_stock_*`` shows the defect on the stock library.
- ``fastpath/``: rewrites of aioxmpp internals for speed (each names the cost it removes,
  measured), which hand what they read to the daemon through one :class:`StreamHooks`
  object set on the stanza stream, and read a room's message with one reader
  (fastpath.reader).

:func:`apply` must run before any client is made (``minimix.xmpp`` calls it on import).
aioxmpp is pinned to 0.13.3 in pyproject.toml because of these: revisit each one when
upgrading.
"""

from __future__ import annotations

from minimix.xmpp.compat.fastpath import incoming, kept_text, memo, router, timers, writes
from minimix.xmpp.compat.fastpath.hooks import StreamHooks, set_hooks
from minimix.xmpp.compat.fastpath.incoming import send_queued
from minimix.xmpp.compat.fastpath.kept_text import raw_message
from minimix.xmpp.compat.fastpath.reader import (
    ArchivedStanza,
    RoomStanza,
    room_stanza_of,
    with_archive_id,
)
from minimix.xmpp.compat.fastpath.writes import WrittenAsText
from minimix.xmpp.compat.fixes import (
    ack_stall,
    disco_cancelled,
    empty_lang,
    legacy_bookmarks,
    log_content,
    lost_connection,
    namespace_separator,
    presence_priority,
    reparse_deferral,
    send_after_loss,
    sm_failed,
    stanza_guard,
    tls_hostname,
    unreadable_child,
)
from minimix.xmpp.compat.fixes.namespace_separator import NS_SEPARATOR
from minimix.xmpp.compat.fixes.reconnect import FatalLoginError, MinimixClient
from minimix.xmpp.compat.fixes.tcp_nodelay import set_nodelay

# In this order.  The fixes first, each on its own, but reparse_deferral wraps the parser
# namespace_separator installs.  Then the fast paths, which build on them: the router reads
# names as namespace_separator has expat write them, and wraps the feed kept_text keeps;
# incoming takes what the router read at once, guards each stanza as stanza_guard does, and
# replaces its _process_incoming; writes corks the _process_outgoing of ack_stall.
FIXES = (
    tls_hostname, presence_priority, lost_connection, send_after_loss, log_content, legacy_bookmarks, ack_stall,
    sm_failed, stanza_guard, namespace_separator, reparse_deferral, unreadable_child, empty_lang, disco_cancelled,
)
FAST_PATHS = (memo, kept_text, router, incoming, writes, timers)
_applied = False


def apply() -> None:
    """Install every fix and fast path (idempotent)."""
    global _applied
    if _applied:
        return
    for module in (*FIXES, *FAST_PATHS):
        module.apply()
    _applied = True


__all__ = [
    "NS_SEPARATOR",
    "ArchivedStanza",
    "FatalLoginError",
    "MinimixClient",
    "RoomStanza",
    "StreamHooks",
    "WrittenAsText",
    "apply",
    "raw_message",
    "room_stanza_of",
    "send_queued",
    "set_hooks",
    "set_nodelay",
    "with_archive_id",
]
