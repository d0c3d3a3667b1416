"""What the log keeps of one message, at most."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from xml.sax.saxutils import escape, quoteattr

from minimix.core.ledger_records import Logged

# What the log keeps of one message, at most: its original (as a playback forwards it) and
# its body, subject and fallback text.  An occupant's message may be as large as his
# server lets through (Prosody takes 256 KiB from a client, 512 KiB over s2s).  A playback
# relay carries the fallback text and the original in one stanza, and the daemon writes no
# stanza over 60,000 bytes (xmpp.xso.STANZA_MAX_BYTES: a server closes the stream of a
# client that sends more than it takes); kept within these bounds, a message of plain text
# is played back whole: its text (16 KiB) and its original (24 KiB) side by side.  The live
# relay forwards the original as it came, when it fits.
KEPT_XML_MAX = 24 * 1024  # bytes of the original
KEPT_TEXT_MAX = 16 * 1024  # characters of the body, the subject, the fallback text
_REDUCED_TEXT_MAX = KEPT_XML_MAX // 16  # characters of each in a reduced original: both fit
_REDUCED_ID_MAX = 1024  # characters of its id (longer: left out; a sender's, of no use to a playback)


def kept(m: Logged) -> Logged:
    """``m`` as the log keeps it: within the bounds above.  An original over its bound is
    replaced by a reduced one, well-formed, with what a playback needs: who sent it
    (``from``), its ``id`` and ``type``, its body and subject (cut), and the room's
    stanza-id (a reply to it quotes that).  Its time is not in it: a playback's
    <forwarded/> carries it, as for any message."""
    xml = original = str(m.ref)
    if len(xml) > KEPT_XML_MAX // 4 and len(xml.encode("utf-8", "surrogatepass")) > KEPT_XML_MAX:
        xml = _reduced_original(m)
    text, body, subject = _cut(m.text, KEPT_TEXT_MAX), _cut(m.body, KEPT_TEXT_MAX), _cut(m.subject, KEPT_TEXT_MAX)
    if (text, body, subject, xml) == (m.text, m.body, m.subject, original) and isinstance(m.ref, str):
        return m
    return replace(m, text=text or "", body=body, subject=subject, ref=xml)


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters not kept]"


def _reduced_original(m: Logged) -> str:
    try:
        message_id = ET.fromstring(str(m.ref)).get("id")
    except ET.ParseError:  # (it was well-formed when it came: a bug of ours) kept without it
        message_id = None
    sender = f"{m.room}/{m.nick}" if m.nick else m.room
    attrs = f" from={quoteattr(sender)} type={quoteattr('chat' if m.private else 'groupchat')}"
    if message_id is not None and len(message_id) <= _REDUCED_ID_MAX:
        attrs += f" id={quoteattr(message_id)}"
    body, subject = _cut(m.body, _REDUCED_TEXT_MAX), _cut(m.subject, _REDUCED_TEXT_MAX)
    inner = f"<body>{escape(body)}</body>" if body is not None else ""
    if subject is not None:
        inner += f"<subject>{escape(subject)}</subject>"
    if m.stanza_id and not m.private:
        inner += f"<stanza-id xmlns='urn:xmpp:sid:0' by={quoteattr(m.room)} id={quoteattr(m.stanza_id)}/>"
    return f"<message xmlns='jabber:client'{attrs}>{inner}</message>"
