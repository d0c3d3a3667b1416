"""A lost connection that aioxmpp does not report as a ConnectionError.

Defect, two ways:
- when the transport closes without an exception (connection_lost(None)), XMLStream stops
  without reporting a failure: the StanzaStream dies, the Client gets no event and never
  reconnects, and IQs hang for ever;
- when TLS ends (the server's close_notify: OpenSSL's ZeroReturnError) or fails, aioopenssl
  hands the OpenSSL.SSL.Error to connection_lost, and aioxmpp passes it as it is to all that
  waits on the stream: every stanza sent after it and every IQ awaiting its answer fails with
  it.  It is no ConnectionError, so a caller cannot tell the stream's loss from a fault of its
  own (seen: a server restarted while the catch-ups' queries were out; each catch-up ended in
  "task failed ... ZeroReturnError", and the core never heard it had failed).
Both are reported as a ConnectionError (the TLS error as its cause), unless the stream was
already closed on purpose.
Upstream: none filed.
Can go when: aioxmpp reports connection_lost(None) on an open stream as a failure, and a TLS
connection's end as a ConnectionError (tests/compat/test_lost_connection.py: the
test_stock_* fail).
"""

from __future__ import annotations

from typing import Any

import aioxmpp.protocol
import OpenSSL.SSL

_orig_connection_lost = aioxmpp.protocol.XMLStream.connection_lost


def as_connection_error(exc: OpenSSL.SSL.Error) -> ConnectionError:
    text = str(exc)
    lost = ConnectionError(f"TLS ended: {type(exc).__name__}{': ' + text if text else ''}")
    lost.__cause__ = exc
    return lost


def _connection_lost(self: Any, exc: BaseException | None) -> None:
    if exc is None and self._smachine.state is not aioxmpp.protocol.State.CLOSED:
        exc = ConnectionError("connection closed by the peer")
    elif isinstance(exc, OpenSSL.SSL.Error):
        exc = as_connection_error(exc)
    _orig_connection_lost(self, exc)


def apply() -> None:
    aioxmpp.protocol.XMLStream.connection_lost = _connection_lost
