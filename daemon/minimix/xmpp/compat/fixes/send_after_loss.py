"""A stanza sent on a stream that has already failed, which aioxmpp logs with a traceback.

Defect: between the stream's failure and the stanza stream's noticing it, StanzaStream.
_send_stanza still hands each queued stanza to XMLStream.send_xso, which raises the
stream's failure; aioxmpp logs "failed to send stanza" at WARNING with the whole traceback,
once per stanza (a server restart logged one per room query in flight), on a loss the
daemon reports once, at warning, as what it is.  The stanza fails as before (FAILED: a
relay is owed again, an IQ's caller gets the error), with a ConnectionError, and a line at
debug instead of the traceback.
Upstream: none filed.
Can go when: aioxmpp no longer sends on a failed stream, or logs it without a traceback
(tests/compat/test_send_after_loss.py: test_stock_send_after_loss_logs_a_traceback fails).
"""

from __future__ import annotations

from typing import Any

import aioxmpp.protocol
import aioxmpp.stream

_orig_send_stanza = aioxmpp.stream.StanzaStream._send_stanza


def _send_stanza(self: Any, xmlstream: Any, token: Any) -> None:
    if xmlstream.state is aioxmpp.protocol.State.OPEN:
        _orig_send_stanza(self, xmlstream, token)
        return
    failure = xmlstream._exception
    if isinstance(failure, ConnectionError):
        lost = failure
    else:
        lost = ConnectionError("the stream is closed")
        lost.__cause__ = failure
    self._logger.debug("stanza not sent: the stream is lost (%s)", type(failure).__name__)
    token._set_state(aioxmpp.stream.StanzaState.FAILED, lost)


def apply() -> None:
    aioxmpp.stream.StanzaStream._send_stanza = _send_stanza
