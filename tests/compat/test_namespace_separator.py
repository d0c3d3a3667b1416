"""fixes.namespace_separator: a namespace with a space in it fails aioxmpp's whole stream."""

import xml.sax.handler

import aioxmpp.protocol
import aioxmpp.xml

from compat.streams import STREAM_HEADER, fed
from minimix.xmpp.compat.fixes import namespace_separator

ODD_NAMESPACES = (
    b"<message from='stranger@example.net/x' to='me@example.org/mm' id='o1' type='headline'>"
    b"<x xmlns='a b'/><y xmlns='a&#10;b'><z/></y><p:q xmlns:p='p q' p:r='1'/></message>"
)
AFTER = b"<message from='room@muc.example.org/bob' type='groupchat' id='m1'><body>after</body></message>"


def test_stock_reader_fails_the_stream_on_a_namespace_with_a_space(monkeypatch):
    """expat (since 2.4.5) refuses a namespace holding the separator xml.sax gives it (a
    space): the parser fails, and aioxmpp closes its own stream (bad-format)."""
    monkeypatch.setattr(aioxmpp.xml, "make_parser", namespace_separator._orig_make_parser)
    got, xs = fed([STREAM_HEADER + ODD_NAMESPACES + AFTER])
    assert got == [] and xs.state >= aioxmpp.protocol.State.CLOSING


def test_a_namespace_with_a_space_fails_nothing():
    got, xs = fed([STREAM_HEADER + ODD_NAMESPACES + AFTER])
    assert xs.state is aioxmpp.protocol.State.OPEN
    assert got[-1].id_ == "m1"  # what comes after is read as ever


def test_names_are_split_at_the_separator_only():
    names = []

    class Handler(xml.sax.handler.ContentHandler):
        def startElementNS(self, name, qname, attrs):
            names.append((name, dict(attrs.items())))

    reader = namespace_separator.namespace_reader()
    reader.setContentHandler(Handler())
    reader.feed(b"<a xmlns='a b' xmlns:p='p&#10;q' p:c='1' d='2'><p:e/><f xmlns=''/></a>")
    assert names == [
        (("a b", "a"), {("p\nq", "c"): "1", (None, "d"): "2"}),
        (("p\nq", "e"), {}),
        ((None, "f"), {}),
    ]
