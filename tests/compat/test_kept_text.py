"""fastpath.kept_text: a message keeps the text it arrived as (a relay forwards it as it is,
where stock aioxmpp keeps nothing and the XSO must be serialised again)."""

import aioxmpp
import aioxmpp.protocol
import aioxmpp.xml
import pytest

from compat.streams import ARCHIVED, INNER, STREAM_HEADER, fed, split, with_xmlns
from minimix.xmpp import compat
from minimix.xmpp.compat.fastpath import kept_text

LIVE = (
    b"<message from='room@muc.example.org/bob' type='groupchat' id='m1'>"
    b"<body>a &lt;b&gt; &amp; \xc3\xbc</body><reactions xmlns='urn:xmpp:reactions:0' id='x'/></message>"
)
EMPTY = b"<message from='room@muc.example.org/al' type='groupchat' id='m2'/>"
DECLARED = b"<message xmlns='jabber:client' from='room@muc.example.org/al' type='groupchat' id='m3'><body>x</body></message>"


@pytest.mark.parametrize("seed", range(20))
def test_messages_keep_the_text_they_arrived_as(seed):
    data = STREAM_HEADER + LIVE + b" " + EMPTY + DECLARED + ARCHIVED
    (live, empty, declared, archived), xs = fed(split(data, seed))
    assert compat.raw_message(live) == with_xmlns(LIVE)  # byte for byte, escapes and all
    assert compat.raw_message(empty) is None  # nothing to forward: serialised if ever asked
    assert compat.raw_message(declared) == DECLARED.decode()  # not declared twice
    assert compat.raw_message(archived.xep0313_result.forwarded.stanza) == INNER.decode()  # nested too
    assert len(xs._minimix_rx.data) < 20  # nothing held once the stanzas are complete


def test_stock_messages_keep_no_text(monkeypatch):
    """Without it a message is only its XSO: the text must be serialised again (the cost it
    removes), and it is not what arrived."""
    monkeypatch.setattr(aioxmpp.protocol.XMLStream, "_rx_feed", kept_text._orig_rx_feed)
    (live,), _ = fed([STREAM_HEADER + LIVE])
    assert compat.raw_message(live) is None
    assert aioxmpp.xml.serialize_single_xso(live).encode() != with_xmlns(LIVE).encode()


def test_text_that_is_not_a_plain_message_is_not_used():
    """Kept text is checked before it is forwarded: it must be a well-formed jabber:client
    message with the parsed one's id, else the daemon serialises the XSO instead."""
    prefixed = b"<c:message xmlns:c='jabber:client' from='room@muc.example.org/x' type='groupchat' id='p'><c:body>y</c:body></c:message>"
    (message,), _ = fed([STREAM_HEADER + prefixed])
    assert compat.raw_message(message) is None
    (other,), _ = fed([STREAM_HEADER + LIVE])
    raw, end = kept_text._raw_texts[other]
    kept_text._raw_texts[other] = (raw.replace(b"id='m1'", b"id='zz'"), end)
    assert compat.raw_message(other) is None
    kept_text._raw_texts[other] = (raw.replace(b"</message>", b"<unclosed></message>"), end)
    assert compat.raw_message(other) is None
