"""An XEP-0198 <failed h='…'/> without an error condition, which aioxmpp cannot read.

Defect: aioxmpp's SMFailed requires an error condition child, but servers send <failed
h='17'/> without one (Prosody 0.12 when a resumption's h is refused): parsing fails and the
stream dies instead of reporting the count.  minimix's start-up probe needs that count
(settling relays in flight after a crash).
Upstream: https://github.com/horazont/aioxmpp/issues/382 (a <failed/> without a direct
condition; its fix, #383, in 0.13.3, stops the reconnect loop it caused, but the count is
still unreadable).
Can go when: SMFailed's condition is optional (tests/compat/test_sm_failed.py:
test_stock_sm_failed_needs_a_condition fails).
"""

from __future__ import annotations

import aioxmpp.nonza


def apply() -> None:
    aioxmpp.nonza.SMFailed.condition.xq_descriptor.default = None
