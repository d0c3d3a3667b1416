"""Namespaces and small readers for stanzas (slixmpp stanza objects or ElementTree elements)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from slixmpp.xmlstream import tostring as _slix_tostring

NS = {
    "client": "jabber:client",
    "muc": "http://jabber.org/protocol/muc",
    "muc_user": "http://jabber.org/protocol/muc#user",
    "muc_admin": "http://jabber.org/protocol/muc#admin",
    "muc_owner": "http://jabber.org/protocol/muc#owner",
    "disco_info": "http://jabber.org/protocol/disco#info",
    "pubsub": "http://jabber.org/protocol/pubsub",
    "pubsub_owner": "http://jabber.org/protocol/pubsub#owner",
    "pubsub_event": "http://jabber.org/protocol/pubsub#event",
    "bookmarks": "urn:xmpp:bookmarks:1",
    "legacy_bookmarks": "storage:bookmarks",
    "private": "jabber:iq:private",
    "data": "jabber:x:data",
    "stanzas": "urn:ietf:params:xml:ns:xmpp-stanzas",
    "ping": "urn:xmpp:ping",
    "caps": "http://jabber.org/protocol/caps",
    "disco_items": "http://jabber.org/protocol/disco#items",
    "commands": "http://jabber.org/protocol/commands",
    "forward": "urn:xmpp:forward:0",
    "delay": "urn:xmpp:delay",
    "carbons": "urn:xmpp:carbons:2",
    "hints": "urn:xmpp:hints",
    "fallback": "urn:xmpp:fallback:0",
    "reply": "urn:xmpp:reply:0",
    "sid": "urn:xmpp:sid:0",
    "mam": "urn:xmpp:mam:2",
    "rsm": "http://jabber.org/protocol/rsm",
}

__all__ = [
    "NS",
    "attr",
    "el_of",
    "error_of",
    "escape",
    "muc_codes",
    "parse",
    "quoteattr",
    "tostring",
]


def el_of(stanza) -> ET.Element:
    """The ElementTree element of a slixmpp stanza (or the element itself)."""
    return getattr(stanza, "xml", stanza)


def parse(xml: str, default_ns: str = NS["client"]) -> ET.Element:
    """Parse one element; elements without a namespace get `default_ns`, as on the wire."""
    return ET.fromstring(f"<wrap xmlns={quoteattr(default_ns)}>{xml}</wrap>")[0]


def tostring(stanza) -> str:
    """Readable XML, with default namespace declarations instead of ns0: prefixes."""
    return _slix_tostring(el_of(stanza), top_level=True)


def attr(value) -> str:
    """An XML attribute value, quoted and escaped."""
    return quoteattr(str(value))


def muc_codes(stanza) -> set[int]:
    """The MUC status codes of a presence or message (XEP-0045 <status code=…/>)."""
    x = el_of(stanza).find("muc_user:x", NS)
    if x is None:
        return set()
    return {
        int(s.get("code")) for s in x.findall("muc_user:status", NS) if s.get("code", "").isdigit()
    }


def error_of(stanza) -> tuple[str | None, str | None, str | None]:
    """(type, condition, text) of a stanza's <error/>, or Nones."""
    err = el_of(stanza).find("client:error", NS)
    if err is None:
        return None, None, None
    condition = text = None
    for child in err:
        if child.tag == f"{{{NS['stanzas']}}}text":
            text = child.text
        elif child.tag.startswith(f"{{{NS['stanzas']}}}"):
            condition = child.tag.split("}", 1)[1]
    return err.get("type"), condition, text
