"""What the daemon writes to the user's clients, and what the server says it has of it.

Relays (a readable fallback body and the room's original forwarded whole), stored mentions
for phones (xmpp.phones), the daemon's own replies; each written once, as text, within
what a server takes in one stanza.  Each relay's fate is reported to the app: acked by the
server (XEP-0198), or lost with the session (owed again), and where it stands in the
session's XEP-0198 count before it goes out (the ledger records it, for a crash).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import aioxmpp
import aioxmpp.stream
import structlog

from minimix.core import actions as A
from minimix.core.events import RelaysAcked
from minimix.xmpp import phones
from minimix.xmpp.link import Link
from minimix.xmpp.xso import (
    ENVELOPE_BYTES,
    NS_CARBONS,
    NS_FALLBACK,
    NS_FORWARD,
    NS_HINTS,
    STANZA_MAX_BYTES,
    ClientMessage,
    clipped,
    well_formed,
    xml_text,
)

log = structlog.get_logger("minimix.xmpp")

# What every message to the user's clients says: no carbon copies to the others (XEP-0280
# private + no-copy), not in the account's archive (XEP-0334).  A relay also asks for a
# receipt (XEP-0184) and says its body is a fallback for the forwarded original (XEP-0428).
PRIVATE_HINTS = (
    f"<private xmlns='{NS_CARBONS}'/><no-copy xmlns='{NS_HINTS}'/><no-store xmlns='{NS_HINTS}'/>"
)
RECEIPT_HINTS = f"<request xmlns='urn:xmpp:receipts'/>{PRIVATE_HINTS}"
FALLBACK_HINT = f"<fallback xmlns='{NS_FALLBACK}' for='{NS_FORWARD}'/>"
RELAY_HINTS = RECEIPT_HINTS + FALLBACK_HINT
PAYLOAD_MAX_BYTES = STANZA_MAX_BYTES - ENVELOPE_BYTES


def dt_stamp(stamp: float | None) -> str:
    """An XEP-0082 date-time for a <delay/>: the given time, else now."""
    if stamp is None:
        stamp = time.time()
    seconds = math.floor(stamp)
    micros = min(round((stamp - seconds) * 1e6), 999999)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{micros:06d}Z"


def relay_payload(room: str, text: str, original: str, stamp: float | None, hints: str = RECEIPT_HINTS) -> bytes:
    """What a relay holds: the fallback body and the original, forwarded whole.  Where both
    do not fit in one stanza (STANZA_MAX_BYTES), the body alone (what most clients show),
    cut if even that is too long: a stanza the server refuses would cost the whole stream.
    So would an original that is not XML (a message logged by a version that wrote some
    that way, played back): its text alone too.  ``hints``: what it asks of the server and
    the client (a relay's: a receipt, no copies, not archived)."""
    if not well_formed(original):
        log.warning("a logged message is not XML: relayed as its text alone", room=room, bytes=len(original))
        return _text_alone(text, hints)
    forwarded = (
        f"<forwarded xmlns='{NS_FORWARD}'><delay xmlns='urn:xmpp:delay' stamp='{dt_stamp(stamp)}'/>"
        f"{original}</forwarded>"
    ).encode()
    body = xml_text(text).encode()
    whole = hints + FALLBACK_HINT
    if len(body) + len(whole) + len(forwarded) + len("<body></body>") <= PAYLOAD_MAX_BYTES:
        return b"<body>" + body + f"</body>{whole}".encode() + forwarded
    log.debug("a message too big to relay whole: its text alone", room=room, bytes=len(forwarded))
    return _text_alone(text, hints)


def _text_alone(text: str, hints: str) -> bytes:
    return f"<body>{clipped(text, PAYLOAD_MAX_BYTES - len(hints))}</body>{hints}".encode()


class Delivery:
    """Writes to the user's clients and reports what the server has of it (RelaysAcked)."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._acked: list[str] = []  # relays the server has, reported once per loop turn
        self._lost: list[str] = []

    def relay(self, action: A.Relay) -> None:
        """One chat message per client: a readable fallback body, the original forwarded whole.

        ``<private/>`` + ``<no-copy/>``: no carbon copies to clients that did not opt in.
        ``<no-store/>``: not archived in the account's MAM, where every MAM-syncing client
        (Conversations, Gajim, Dino) would fetch every relay meant for another client; minimix
        keeps its own log for playback instead.  Each asks for a receipt (XEP-0184).

        The payload (all but the message's own attributes) is the same for every client: it
        is written once, as text, and each relay is a ClientMessage written as text: not built,
        validated and serialised per relay by aioxmpp's XSO machinery, which cost most of the
        daemon's CPU per relayed message.
        """
        if not isinstance(action.ref, str):
            return
        tracked = action.seq is not None
        account = str(self._link.own)
        payload = relay_payload(action.room, action.text, action.ref, action.stamp)
        for resource, relay_id in action.deliveries:
            message = ClientMessage(f"{account}/{resource}", payload, relay_id)
            self._link.enqueue(message, self._tracker(relay_id) if tracked else None)

    def store(self, action: A.Store) -> None:
        """A mention to the account's bare JID, for the server to store (xmpp.phones); the
        server's ack of it is reported as a relay's."""
        if isinstance(action.ref, str):
            payload = relay_payload(action.room, action.text, action.ref, action.stamp, phones.STORE_HINTS)
            message = ClientMessage(str(self._link.own), payload, action.push_id)
            self._link.enqueue(message, self._tracker(action.push_id))

    def reply(self, resource: str, text: str) -> None:
        """A message from the daemon to one of the user's clients (not carbon-copied to the
        others, not archived)."""
        payload = f"<body>{clipped(text, PAYLOAD_MAX_BYTES - len(PRIVATE_HINTS))}</body>{PRIVATE_HINTS}".encode()
        self._link.enqueue(ClientMessage(f"{self._link.own}/{resource}", payload))

    def next_sm_positions(self, count: int) -> tuple[str | None, list[int | None], int | None]:
        """Where the next ``count`` stanzas will stand in the XEP-0198 count: (session id,
        their numbers, our inbound counter).  Valid until anything else is enqueued."""
        client = self._link.client
        stream = client.stream if client is not None else None
        if stream is None or not stream.sm_enabled or not client.established:
            return None, [None] * count, None
        # _sm_unacked_list: the public sm_unacked_list is a copy, O(n) per relay in a burst
        first = stream.sm_outbound_base + len(stream._sm_unacked_list) + len(stream._active_queue) + 1
        return stream.sm_id, [(first + i) & 0xFFFFFFFF for i in range(count)], stream.sm_inbound_ctr

    def _tracker(self, relay_id: str) -> Callable[[Any, Any], None]:
        was_sent_with_sm = False

        def on_state_change(token: Any, state: aioxmpp.stream.StanzaState) -> None:
            nonlocal was_sent_with_sm
            S = aioxmpp.stream.StanzaState
            if state == S.SENT:
                was_sent_with_sm = True
            elif state == S.ACKED or (state == S.SENT_WITHOUT_SM and not was_sent_with_sm):
                self._report(relay_id, delivered=True)
            elif state in (S.SENT_WITHOUT_SM, S.DISCONNECTED, S.ABORTED, S.DROPPED, S.FAILED):
                # SENT_WITHOUT_SM after SENT: the session died unacked and resuming failed
                # without a count: the server may not have it.  Owed again, never lost.
                self._report(relay_id, delivered=False)

        return on_state_change

    def _report(self, relay_id: str, *, delivered: bool) -> None:
        batch = self._acked if delivered else self._lost
        if not self._acked and not self._lost:
            asyncio.get_running_loop().call_soon(self._flush_reports)
        batch.append(relay_id)

    def _flush_reports(self) -> None:
        if self._acked:
            self._link.post(RelaysAcked(tuple(self._acked), True))
            self._acked = []
        if self._lost:
            self._link.post(RelaysAcked(tuple(self._lost), False))
            self._lost = []
