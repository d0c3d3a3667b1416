"""A relay forwards the original stanza as the text it was logged as, in a ClientMessage
written as text: what goes on the wire is the same XML the lxml route gave, and any other
SAX consumer still gets the element."""

import io

import aioxmpp
import aioxmpp.xml
import lxml.etree
import lxml.sax

import minimix.xmpp  # noqa: F401  (patches and XSOs)
from minimix.xmpp.account import Account
from minimix.xmpp.delivery import Delivery
from minimix.xmpp.link import Link
from minimix.xmpp.xso import NS_FORWARD, ClientMessage

ORIGINAL = (
    '<message xmlns="jabber:client" from="room@muc.example/bob" id="m1" type="groupchat">'
    '<body>a &lt;b&gt; &amp; ünï</body><reactions xmlns="urn:xmpp:reactions:0" id="x"/>'
    "</message>"
)
FORWARDED = (
    f"<forwarded xmlns='{NS_FORWARD}'><delay xmlns='urn:xmpp:delay' stamp='2026-11-27T00:00:00Z'/>"
    f"{ORIGINAL}</forwarded>"
)


def relay(child) -> aioxmpp.Message | ClientMessage:
    """The relay with the forwarded original as text (bytes: a ClientMessage) or as an lxml
    tree in an aioxmpp Message (the route it replaced)."""
    if isinstance(child, bytes):
        return ClientMessage("me@example/phone", b"<body>[room] bob: hi</body>" + child)
    message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr("me@example/phone"))
    message.body[None] = "[room] bob: hi"
    message.minimix_unknown.append(child)
    return message


def on_the_wire(message: aioxmpp.Message) -> bytes:
    """As the stream writes it: one generator for the whole stream, the stanza inside."""
    buf = io.BytesIO()
    gen = aioxmpp.xml.XMPPXMLGenerator(buf, short_empty_elements=True, sorted_attributes=True)
    gen.startDocument()
    gen.startPrefixMapping(None, "jabber:client")
    gen.startElementNS(("http://etherx.jabber.org/streams", "stream"), None, {})
    message.xso_serialise_to_sax(gen)
    gen.endElementNS(("http://etherx.jabber.org/streams", "stream"), None)
    gen.endPrefixMapping(None)
    gen.endDocument()
    return buf.getvalue()


def canonical(xml: bytes) -> bytes:
    return lxml.etree.tostring(lxml.etree.fromstring(xml), method="c14n")


def test_raw_forward_is_the_same_xml_as_the_lxml_route():
    raw = on_the_wire(relay(FORWARDED.encode()))
    tree = on_the_wire(relay(lxml.etree.fromstring(FORWARDED)))
    assert canonical(raw) == canonical(tree)
    assert ORIGINAL.encode() in raw  # byte for byte, not re-serialised


def test_raw_forward_parses_back_to_the_original():
    wire = on_the_wire(relay(FORWARDED.encode()))
    root = lxml.etree.fromstring(wire)
    message = root[0]
    original = message.find(f"{{{NS_FORWARD}}}forwarded/{{jabber:client}}message")
    assert original is not None and original.get("id") == "m1"
    assert original.findtext("{jabber:client}body") == "a <b> & ünï"
    assert original.find("{urn:xmpp:reactions:0}reactions") is not None


def test_raw_forward_reaches_other_sax_consumers_as_an_element():
    handler = lxml.sax.ElementTreeContentHandler()
    relay(FORWARDED.encode()).xso_serialise_to_sax(handler)
    forwarded = handler.etree.getroot().find(f"{{{NS_FORWARD}}}forwarded")
    assert forwarded is not None
    assert forwarded.find("{jabber:client}message/{jabber:client}body").text == "a <b> & ünï"


# -- the relay as Delivery.relay builds it --------------------------------------------------


def delivery() -> tuple[Delivery, list]:
    """The daemon's Delivery, what it enqueues captured instead of sent."""
    link = Link(Account(aioxmpp.JID.fromstr("me@example/minimix"), "pw"), lambda event: None)
    sent: list = []
    link.enqueue = lambda stanza, on_state_change=None: sent.append(stanza)
    return Delivery(link), sent


def built_relay(text: str) -> aioxmpp.Message:
    """The relay Delivery.relay enqueues (to one client)."""
    from minimix.core import actions as A

    writer, sent = delivery()
    writer.relay(A.Relay("room@muc.example", (("phone", "relay-1"),), text, ORIGINAL, stamp=1801402800.0))
    (message,) = sent
    return message


def test_a_relay_says_what_the_xso_built_relay_said():
    """The same stanza as building it from XSOs (body, receipt request, carbons private,
    no-copy, no-store, fallback for the forwarded original, the original)."""
    from minimix.xmpp.xso import Fallback

    text = '[room] bob: a <b> & "c" \x07 ünï'
    expected = aioxmpp.Message(
        type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr("me@example/phone"), id_="relay-1"
    )
    expected.body[None] = text.replace("\x07", "")  # not allowed in XML: dropped
    expected.xep0184_request_receipt = True
    for hint in (
        "<private xmlns='urn:xmpp:carbons:2'/>",
        "<no-copy xmlns='urn:xmpp:hints'/>",
        "<no-store xmlns='urn:xmpp:hints'/>",
    ):
        expected.minimix_unknown.append(lxml.etree.fromstring(hint))
    expected.minimix_fallbacks.append(Fallback(NS_FORWARD))
    expected.minimix_unknown.append(
        lxml.etree.fromstring(
            f"<forwarded xmlns='{NS_FORWARD}'><delay xmlns='urn:xmpp:delay' stamp='2027-01-31T13:40:00.000000Z'/>"
            f"{ORIGINAL}</forwarded>"
        )
    )

    def children(message):
        root = lxml.etree.fromstring(on_the_wire(message))[0]
        return root.attrib, sorted(canonical(lxml.etree.tostring(c)) for c in root)

    assert children(built_relay(text)) == children(expected)


def test_a_reply_to_a_client_is_private_unarchived_and_escaped():
    writer, sent = delivery()
    writer.reply("phone", "rooms: a<b & c\x00")
    root = lxml.etree.fromstring(on_the_wire(sent[0]))[0]
    assert root.get("to") == "me@example/phone" and root.get("type") == "chat"
    assert root.findtext("{jabber:client}body") == "rooms: a<b & c"
    for hint in ("{urn:xmpp:carbons:2}private", "{urn:xmpp:hints}no-copy", "{urn:xmpp:hints}no-store"):
        assert root.find(hint) is not None, hint
