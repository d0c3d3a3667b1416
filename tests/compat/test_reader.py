"""fastpath.reader: one reader for a room's message, whichever way it came (the router's
kept text, or an XSO: its kept text, else serialised), and the archive's id put on an
archived message in one place."""

import dataclasses

import aioxmpp
import aioxmpp.xml
import lxml.etree
import pytest

from compat.streams import ARCHIVED, FAST, ROOM, STREAM_HEADER, fed, routed, with_xmlns
from minimix.xmpp import compat
from minimix.xmpp.mam import Archived, _archived


def canonical(text: str) -> bytes:
    return lxml.etree.tostring(lxml.etree.fromstring(text.encode()), method="c14n")


@pytest.mark.parametrize("kind", ["groupchat", "chat"])
def test_a_message_read_as_an_xso_reads_as_the_routers(kind):
    """A groupchat message the router did not take, or a private one: the same reading."""
    data = FAST.replace(b"groupchat", kind.encode())
    (as_routed,), _ = routed([STREAM_HEADER, FAST])
    (message,), _ = fed([STREAM_HEADER, data])
    assert isinstance(message, aioxmpp.Message)
    read = compat.room_stanza_of(message, ROOM)
    assert read.text == with_xmlns(data)
    assert dataclasses.replace(read, text=None) == dataclasses.replace(as_routed, text=None)


def test_a_message_that_kept_no_text_is_read_from_its_xso():
    message = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT, from_=aioxmpp.JID.fromstr(f"{ROOM}/al"), id_="x1")
    message.body[None] = "made here"
    read = compat.room_stanza_of(message, ROOM)
    assert (read.nick, read.id_, read.body) == ("al", "x1", "made here")
    assert canonical(read.text) == canonical(aioxmpp.xml.serialize_single_xso(message))


def test_an_archived_message_gets_the_archive_id_the_same_way_either_way():
    ((raw,), _) = routed([STREAM_HEADER, ARCHIVED], None, frozenset({ROOM}))
    ((xso,), _) = fed([STREAM_HEADER, ARCHIVED])
    from_xso = _archived(xso.xep0313_result, ROOM)
    from_router = Archived(raw.id_, raw.stamp, raw.message)
    assert from_xso.message.stanza_id == from_router.message.stanza_id == "A1"
    assert canonical(from_xso.message.text) == canonical(from_router.message.text)
    assert (from_xso.id_, from_xso.stamp) == (from_router.id_, from_router.stamp)


def test_the_rooms_own_archive_id_is_kept():
    message = compat.RoomStanza(ROOM, "al", "m", "x", None, False, "theirs", None, None, "<message>…</message>")
    assert compat.with_archive_id(message, "A1") is message


def test_an_empty_archived_message_gets_the_id_and_no_text():
    message = compat.RoomStanza(ROOM, "al", "m", None, None, False, None, None, None, None)
    assert compat.with_archive_id(message, "A1") == compat.RoomStanza(
        ROOM, "al", "m", None, None, False, "A1", None, None, None)
