"""An exception while handling one received stanza, which ends the stanza stream.

Defect: StanzaStream._run calls _process_incoming for each received stanza without a guard:
an exception in it (a filter or handler of ours with a bug) ends the stanza stream's task,
and the session is destroyed (every room left, rejoined after the reconnect).  It costs
that stanza instead, logged; one because the stream went down meanwhile (an <a/> that
cannot go out) is no error of ours: the loss is reported once, as such, by the client.
Upstream: none filed.
Can go when: aioxmpp's stanza loop survives a failing handler (tests/compat/
test_stanza_guard.py: test_stock_failing_handler_ends_the_stanza_loop fails).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aioxmpp.protocol
import aioxmpp.stream
import structlog

log = structlog.get_logger("minimix.xmpp")

_orig_process_incoming = aioxmpp.stream.StanzaStream._process_incoming


def handle_guarded(handle: Callable[[Any, Any, Any], None], stream: Any, xmlstream: Any, queue_entry: Any) -> None:
    """``handle(stream, xmlstream, queue_entry)``: one received stanza, whatever it raises."""
    try:
        handle(stream, xmlstream, queue_entry)
    except Exception as exc:  # noqa: BLE001 - logged; the stanza is what it costs
        if xmlstream.state is aioxmpp.protocol.State.OPEN:
            log.exception("internal error while handling a stanza; skipped")
        else:
            log.debug("a stanza received as the stream went down was not handled fully", error=repr(exc))


def _process_incoming(self: Any, xmlstream: Any, queue_entry: Any) -> None:
    handle_guarded(_orig_process_incoming, self, xmlstream, queue_entry)


def apply() -> None:
    aioxmpp.stream.StanzaStream._process_incoming = _process_incoming
