"""fastpath.router: a room's messages and an archive's results read without XSOs, at a
fraction of the Python calls of aioxmpp's parse."""

import datetime as dt

import aioxmpp
import aioxmpp.nonza
import lxml.etree
import pytest

from compat.streams import (
    ARCHIVED,
    FAST,
    INNER,
    ROOM,
    SM_R,
    STREAM_HEADER,
    python_calls,
    routed,
    split,
    with_xmlns,
)
from minimix.xmpp import compat
from minimix.xmpp.compat.fastpath import kept_text

SUBJECT = b"<message from='room@muc.example.org/al' type='groupchat' id='f2'><subject>news</subject></message>"
CLEARED = b"<message from='room@muc.example.org/al' type='groupchat' id='f3'><subject/></message>"
BARE = b"<message from='room@muc.example.org/al' type='groupchat' id='f4'/>"
ELSEWHERE = b"<message from='other@muc.example.org/al' type='groupchat' id='s1'><body>x</body></message>"
PM = b"<message from='room@muc.example.org/al' type='chat' id='s2'><body>psst</body></message>"
PREFIXED = (
    b"<c:message xmlns:c='jabber:client' from='room@muc.example.org/al' type='groupchat' id='s3'>"
    b"<c:body>y</c:body></c:message>"
)
AFTER = b"<message from='room@muc.example.org/al' type='groupchat' id='f5'><body>last</body></message>"
NOT_A_RESULT = (
    b"<message from='room@muc.example.org' to='me@example.org/x' id='n1'>"
    b"<x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>"
)


@pytest.mark.parametrize("seed", range(20))
def test_room_messages_are_read_without_xsos(seed):
    data = STREAM_HEADER + FAST + SM_R + b"\n" + SUBJECT + CLEARED + BARE + ELSEWHERE + PM + PREFIXED + ARCHIVED + AFTER
    got, xs = routed(split(data, seed))
    fast, r, subject, cleared, bare, elsewhere, pm, prefixed, archived, after = got
    assert fast == compat.RoomStanza(
        ROOM, "bob", "f1", "hi & ü", None, False, "S1", "O1",
        dt.datetime(2026, 1, 2, 3, 4, 5, 500000, dt.UTC).timestamp(), with_xmlns(FAST),
    )  # fmt: skip
    assert isinstance(r, aioxmpp.nonza.SMRequest)
    assert (subject.subject, subject.has_subject, subject.body) == ("news", True, None)
    assert (cleared.subject, cleared.has_subject) == (None, True)
    assert bare == compat.RoomStanza(ROOM, "al", "f4", None, None, False, None, None, None, None)
    # not a listed room's groupchat at the top level: parsed as before
    for stanza in (elsewhere, pm, prefixed, archived):
        assert isinstance(stanza, aioxmpp.Message)
    assert archived.xep0313_result.forwarded.stanza.body.any() == "old"  # nested: never taken
    assert compat.raw_message(archived.xep0313_result.forwarded.stanza) == INNER.decode()
    assert after.body == "last" and after.text == with_xmlns(AFTER)  # the parser's state is intact
    assert len(xs._minimix_rx.data) < 20  # nothing held once the stanzas are complete


def test_without_the_hook_room_messages_are_xsos():
    got, _ = routed([STREAM_HEADER + FAST + AFTER], rooms=None)
    assert all(isinstance(m, aioxmpp.Message) for m in got)
    got, _ = routed([STREAM_HEADER + ELSEWHERE], rooms=frozenset())
    assert isinstance(got[0], aioxmpp.Message)


def test_a_room_message_costs_a_fraction_of_the_xso_parse():
    """The cost it removes, counted in Python calls (not timed): the four layers per SAX
    event and the XSO build, for a room message and the <r/> after it."""
    fast = python_calls([FAST + SM_R], frozenset({ROOM}))
    stock = python_calls([FAST + SM_R], None)
    assert fast * 5 < stock, (fast, stock)


def archive_results(chunks, archives=frozenset({ROOM})):
    return routed(chunks, None, archives)


@pytest.mark.parametrize("seed", range(10))
def test_archive_results_are_read_without_xsos(seed):
    got, xs = archive_results(split(STREAM_HEADER + ARCHIVED + NOT_A_RESULT + SM_R + ARCHIVED, seed))
    archived, other, r, again = got
    assert isinstance(archived, compat.ArchivedStanza) and again == archived
    assert (archived.archive, archived.queryid, archived.id_) == (ROOM, "q", "A1")
    assert archived.stamp == dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    inner = archived.message
    assert (inner.room, inner.nick, inner.id_, inner.body, inner.stanza_id) == (ROOM, "bob", "m4", "old", "A1")
    # the archived message as text, with the archive's id on it (a relay carries it there)
    text = lxml.etree.fromstring(inner.text)
    assert text.tag == "{jabber:client}message" and text.findtext("{jabber:client}body") == "old"
    sid = text.find("{urn:xmpp:sid:0}stanza-id")
    assert (sid.get("by"), sid.get("id")) == (ROOM, "A1")
    # from the archive's JID, but not a result: the Message XSO it always was
    assert isinstance(other, aioxmpp.Message) and other.id_ == "n1"
    assert isinstance(r, aioxmpp.nonza.SMRequest)
    assert len(xs._minimix_rx.data) < 20


def test_results_of_an_archive_not_queried_are_xsos():
    (archived,), _ = archive_results([STREAM_HEADER + ARCHIVED], archives=frozenset({"other@muc.example.org"}))
    assert isinstance(archived, aioxmpp.Message) and archived.xep0313_result is not None


def test_an_archive_result_costs_a_fraction_of_the_xso_parse():
    fast = python_calls([ARCHIVED], None, archives=frozenset({ROOM}))
    stock = python_calls([ARCHIVED], None)
    assert fast * 5 < stock, (fast, stock)


ODD_ROOM_MESSAGE = (
    b"<message from='room@muc.example.org/bob' to='me@example.org/mm' type='groupchat' id='o2'>"
    b"<body>odd</body><x xmlns='a b'/>" + b"<d xmlns='urn:example:deep'>" * 300 + b"</d>" * 300
    + b"<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example.org' id='S9'/></message>"
)


@pytest.mark.parametrize("data", [ODD_ROOM_MESSAGE, ODD_ROOM_MESSAGE.replace(b"groupchat", b"chat")])
def test_what_libxml2_alone_refuses_is_relayed_whole(data):
    """lxml reads a namespace with a space as an error, and stops at 256 levels; expat, the
    stream and Prosody take both.  A room's message (the router's) and a private one (an
    XSO, its kept text) are read, and forwarded as they came."""
    with pytest.raises(lxml.etree.XMLSyntaxError):
        lxml.etree.fromstring(with_xmlns(data))  # what the kept text was checked with
    (stanza,), _ = routed([STREAM_HEADER, data])  # the router is set up by the first read
    if b"groupchat" in data:
        assert (stanza.body, stanza.stanza_id, stanza.text) == ("odd", "S9", with_xmlns(data))
    else:
        assert stanza.body.any() == "odd" and compat.raw_message(stanza) == with_xmlns(data)
        read = compat.room_stanza_of(stanza, ROOM)
        assert (read.body, read.stanza_id, read.text) == ("odd", "S9", with_xmlns(data))


ARCHIVED_ODD = ARCHIVED.replace(
    b"<body>old</body>", b"<body>old</body><x xmlns='http://x/?a=1&amp;b=2'/><y xmlns='&lt;'/>"
)


def test_an_archived_message_with_an_ampersand_in_a_namespace_is_written_as_xml():
    """libxml2 writes a namespace's & and < as they are: the relay of such an archived
    message was not XML, and the server closed the daemon's stream for it (and again after
    each reconnection: the catch-up fetched it again)."""
    ((archived,), _) = archive_results([STREAM_HEADER, ARCHIVED_ODD])
    text = archived.message.text.encode()
    root = lxml.etree.fromstring(text, lxml.etree.XMLParser(recover=True))
    assert [c.tag for c in root][1:3] == ["{http://x/?a=1&b=2}x", "{<}y"]
    assert kept_text.root_of(text) == (kept_text.CLIENT_MESSAGE, "m4")  # and expat, as the server reads it
    stock = lxml.etree.tostring(lxml.etree.fromstring(b"<m><x xmlns='http://x/?a=1&amp;b=2'/></m>"))
    # how libxml2 writes it: 2.10 (lxml 4.9, Debian 12) as it is, not XML; 2.14 (lxml 6) escaped
    assert stock in (b'<m><x xmlns="http://x/?a=1&b=2"/></m>', b'<m><x xmlns="http://x/?a=1&amp;b=2"/></m>')
