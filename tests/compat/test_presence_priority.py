"""fixes.presence_priority: the priority given to set_presence() is never sent."""

import asyncio

import aioxmpp

from compat import streams  # noqa: F401  (applies the fixes)
from minimix.xmpp.account import security_layer
from minimix.xmpp.compat.fixes import presence_priority


def priority_sent(make_stanza) -> int:
    async def main():
        client = aioxmpp.Client(aioxmpp.JID.fromstr("a@localhost/r"), security_layer("pw"))
        server = client.summon(aioxmpp.PresenceServer)
        server.set_presence(aioxmpp.PresenceState(True), priority=-1)
        return make_stanza(server).priority

    return asyncio.run(main())


def test_stock_priority_is_not_sent():
    assert priority_sent(presence_priority._orig_make_stanza) == 0


def test_the_priority_is_sent():
    assert priority_sent(aioxmpp.PresenceServer.make_stanza) == -1
