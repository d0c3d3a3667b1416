"""The presence priority minimix sets, which aioxmpp never sends.

Defect: PresenceServer.make_stanza() stores the priority given to set_presence() but never
puts it into the stanza, so the presence goes out with priority 0.  minimix must send a
negative priority (RFC 6121 §8.5.2.1.1): with 0 the server may deliver the user's chats to
the daemon.
Upstream: none filed.
Can go when: aioxmpp's make_stanza() sets the priority
(tests/compat/test_presence_priority.py: test_stock_priority_is_not_sent fails).
"""

from __future__ import annotations

from typing import Any

import aioxmpp
import aioxmpp.presence.service

_orig_make_stanza = aioxmpp.presence.service.PresenceServer.make_stanza


def _make_stanza_with_priority(self: Any) -> aioxmpp.Presence:
    stanza = _orig_make_stanza(self)
    stanza.priority = self._priority
    return stanza


def apply() -> None:
    aioxmpp.presence.service.PresenceServer.make_stanza = _make_stanza_with_priority
