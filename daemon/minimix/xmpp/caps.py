"""XEP-0115 caps of our own, to notice when the server asks for them.

PEP pushes bookmark changes only to resources whose caps carry
``urn:xmpp:bookmarks:1+notify``; for an unknown ver the server first asks us (disco#info on
the caps node) and subscribes us only after our answer.  A change between our first fetch
and that moment is never pushed, so the app fetches again once the server has asked.  The
doctor waits for the same question before it tests notifications.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aioxmpp
import aioxmpp.disco
import aioxmpp.disco.xso as disco_xso
import aioxmpp.entitycaps.caps115 as caps115
import aioxmpp.entitycaps.xso as caps_xso

from minimix.xmpp.xso import CAPS_NODE


class _CapsNode(aioxmpp.disco.StaticNode):
    """Our disco#info under the caps node; tells when someone asks for it."""

    on_query: Callable[[aioxmpp.JID | None], None] = staticmethod(lambda peer: None)

    def as_info_xso(self, stanza: Any = None) -> disco_xso.InfoQuery:
        self.on_query(getattr(stanza, "from_", None))
        return super().as_info_xso(stanza)


def announce_caps(client: aioxmpp.Client, disco: aioxmpp.DiscoServer,
                  on_query: Callable[[aioxmpp.JID | None], None]) -> None:
    """Our available presences carry caps with a ver of our own (the features registered on
    ``disco`` so far); ``on_query(peer)`` is called whenever ``peer`` asks for them."""
    node = _CapsNode.clone(disco)
    ver = caps115.hash_query(node.as_info_xso(), "sha1")
    node.on_query = on_query  # only now: computing ver above is no query
    disco.mount_node(f"{CAPS_NODE}#{ver}", node)
    caps = caps_xso.Caps115(CAPS_NODE, ver, "sha-1")

    def add_caps(presence: aioxmpp.Presence) -> aioxmpp.Presence:
        if presence.type_ == aioxmpp.PresenceType.AVAILABLE and presence.to is None:
            presence.xep0115_caps = caps
        return presence

    client.stream.app_outbound_presence_filter.register(add_caps, 0)
