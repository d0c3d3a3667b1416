"""A connection the peer closes cleanly, which aioxmpp takes for no failure at all.

Defect: when the transport closes without an exception (connection_lost(None)), XMLStream
stops without reporting a failure: the StanzaStream dies, the Client gets no event and never
reconnects, and IQs hang for ever.  It is reported as a ConnectionError, unless the stream
was already closed on purpose.
Upstream: none filed.
Can go when: aioxmpp reports connection_lost(None) on an open stream as a failure
(tests/compat/test_silent_close.py: test_stock_clean_close_is_no_failure fails).
"""

from __future__ import annotations

from typing import Any

import aioxmpp.protocol

_orig_connection_lost = aioxmpp.protocol.XMLStream.connection_lost


def _connection_lost(self: Any, exc: BaseException | None) -> None:
    if exc is None and self._smachine.state is not aioxmpp.protocol.State.CLOSED:
        exc = ConnectionError("connection closed by the peer")
    _orig_connection_lost(self, exc)


def apply() -> None:
    aioxmpp.protocol.XMLStream.connection_lost = _connection_lost
