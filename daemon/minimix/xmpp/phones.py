"""What the edge does for the user's phones (issue 19): a mention stored on the server for a
phone that is not connected, and the read markers the user's clients publish.

- A mention for a ``mentions`` client that is away, when no resource of the account would
  get it from the server now, goes once to the account's bare JID (core: A.Store): type
  chat, the relay's readable fallback and forwarded original, ``<store/>`` (XEP-0334) so
  the server keeps it, as an offline message and in the account's archive; its push
  module (XEP-0357) wakes the phone.  ``<private/>`` (XEP-0280): no carbon copies, since
  every client online that wants it has its own relay already.
- XEP-0490 read markers: the account's PEP node ``urn:xmpp:mds:displayed:0``, one item per
  chat (its id the chat's JID) holding the room's ``<stanza-id/>`` of the last message the
  user saw.  minimix asks for its notifications (``+notify`` in its caps), reads the
  node after login, and turns each item from the account itself into a ReadUpTo.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aioxmpp
import aioxmpp.errors
import aioxmpp.pubsub.xso as pubsub_xso
import aioxmpp.xso as xso
import structlog

from minimix.core.events import ReadUpTo
from minimix.xmpp.xso import NS_CARBONS, NS_HINTS

log = structlog.get_logger("minimix.xmpp")

NS_MDS = "urn:xmpp:mds:displayed:0"
NS_SID = "urn:xmpp:sid:0"
# A stored mention: kept by the server (offline storage, the account's archive), not
# carbon-copied to the clients online (see the module's doc).
STORE_HINTS = f"<private xmlns='{NS_CARBONS}'/><store xmlns='{NS_HINTS}'/>"


class StanzaId(xso.XSO):
    TAG = (NS_SID, "stanza-id")
    id_ = xso.Attr("id", default=None)
    by = xso.Attr("by", default=None)


@pubsub_xso.as_payload_class  # on pubsub <item/> and on event <item/>
class Displayed(xso.XSO):
    TAG = (NS_MDS, "displayed")
    stanza_ids = xso.ChildList([StanzaId])
    unknown = xso.Collector()  # anything else a client puts there


def _bare(jid: str | None) -> str | None:
    try:
        return str(aioxmpp.JID.fromstr(jid).bare()) if jid else None
    except ValueError:
        return None


def read_marker(item_id: str | None, payload: Any) -> ReadUpTo | None:
    """An item of the node as an event: the chat's JID (the item's id) and the archive id
    the chat itself gave the message (a <stanza-id/> by that JID: an id another entity
    stamped says nothing of the room's archive).  None for anything else."""
    room = _bare(item_id)
    if room is None or not isinstance(payload, Displayed):
        return None
    for sid in payload.stanza_ids:
        if sid.id_ and _bare(sid.by) == room:
            return ReadUpTo(room, sid.id_)
    return None


def published_marker(sender: aioxmpp.JID, own: aioxmpp.JID, item: Any) -> ReadUpTo | None:
    """A notification of the node: only the account's own PEP counts (anyone can send a
    pubsub event naming any node)."""
    if sender != own:
        log.info("ignored a read marker from another entity", sender=str(sender))
        return None
    return read_marker(item.id_, item.registered_payload)


async def fetch_markers(pubsub: aioxmpp.PubSubClient, own: aioxmpp.JID, timeout: float) -> list[ReadUpTo]:
    """The node's items as events; none where there is no node or the server cannot say
    (read markers are a nicety: a failure here costs the bookmarks nothing)."""
    try:
        async with asyncio.timeout(timeout):
            response = await pubsub.get_items(own, NS_MDS)
    except aioxmpp.errors.XMPPError as exc:
        if exc.condition != aioxmpp.ErrorCondition.ITEM_NOT_FOUND:
            log.info("could not read the read markers", error=str(exc.condition))
        return []
    except TimeoutError:
        log.info("could not read the read markers", error="no answer in time")
        return []
    markers = (read_marker(item.id_, item.registered_payload) for item in response.payload.items)
    return [m for m in markers if m is not None]
