"""The one reader of a room's message: its text into a RoomStanza, whichever way it came.

A live groupchat message the router took (its kept text), a result from a room's archive
(the message inside it), and a message that came as an XSO (a private message, one the
router did not take, a result read by aioxmpp: its kept text, else the XSO serialised) are
all read here, by :func:`read_room_element`, into what the daemon needs of them; and an
archived message gets the archive's id in one place, :func:`with_archive_id`.  lxml reads
the text (it checks it), at a fraction of the cost of building an XSO.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import re
from typing import Any
from xml.sax.saxutils import quoteattr

import aioxmpp
import aioxmpp.xml
import aioxmpp.xso.model
import lxml.etree
import lxml.sax
import structlog

from minimix.xmpp.compat.fastpath.kept_text import declared_message, raw_message

NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_STANZA_ID = f"{{{NS_SID}}}stanza-id"
_ORIGIN_ID = f"{{{NS_SID}}}origin-id"
_DELAY = f"{{{NS_DELAY}}}delay"
_MAM_RESULT = "{urn:xmpp:mam:2}result"
_FORWARDED = "{urn:xmpp:forward:0}forwarded"
_END_TAG = re.compile(r"</message\s*>\Z")
log = structlog.get_logger("minimix.xmpp")


@dataclasses.dataclass(frozen=True, slots=True)
class RoomStanza:
    """A message from a room, as read here (what the daemon needs of it)."""

    room: str  # the room's bare JID (from, prepared)
    nick: str | None  # the sender's occupant nick (from's resource)
    id_: str | None
    body: str | None
    subject: str | None  # the subject's text; None also for an empty <subject/> (see has_subject)
    has_subject: bool
    stanza_id: str | None  # the room's archive id (XEP-0359 by=room)
    origin_id: str | None
    stamp: float | None  # the room's own XEP-0203 delay on it (from = the room), else None
    text: str | None  # the stanza as it arrived, declaring jabber:client; None if empty


@dataclasses.dataclass(frozen=True, slots=True)
class ArchivedStanza:
    """One result of a MAM query (XEP-0313) from a room's archive, as the router read it."""

    archive: str  # the archive's JID (from)
    queryid: str | None
    id_: str | None  # the archive's id of the message
    stamp: float | None  # when it was archived (the forwarded <delay/>)
    message: RoomStanza | None  # the archived message, if a groupchat one


def empty(room: str, nick: str | None, id_: str | None) -> RoomStanza:
    """A message with nothing in it (or nothing that could be read)."""
    return RoomStanza(room, nick, id_, None, None, False, None, None, None, None)


def read_room_stanza(room: tuple[str, str | None], id_: str | None, raw: bytes | None) -> RoomStanza:
    """A top-level message from ``room`` = (bare JID, nick), from the text it arrived as."""
    jid, nick = room
    if raw is None:  # <message/>: nothing in it
        return empty(jid, nick, id_)
    root, text = _element(raw, id_)
    return read_room_element(root, jid, nick, text.decode())


def room_stanza_of(message: aioxmpp.Message, room: str) -> RoomStanza:
    """A room's message that came as an XSO, read as the router reads one: from the text it
    arrived as (fastpath.kept_text), else from the XSO serialised."""
    nick = message.from_.resource if message.from_ is not None else None
    try:
        text = raw_message(message) or aioxmpp.xml.serialize_single_xso(message)
        root, _ = _element(text.encode(), message.id_)
    except Exception as exc:  # noqa: BLE001 - aioxmpp read it: a bug of ours, to cost this message only
        log.warning("a message could not be read; skipped", sender=room, error=repr(exc))
        return empty(room, nick, message.id_)
    return read_room_element(root, room, nick, text)


def read_room_element(root: Any, jid: str, nick: str | None, text: str) -> RoomStanza:
    """The one reading of a room's message (the element ``root``, ``text`` as it came)."""
    body = subject = stanza_id = origin_id = stamp = None
    has_subject = False
    body_lang = "-"
    for child in root:
        tag = child.tag
        if tag == "{jabber:client}body":
            lang = child.get(_XML_LANG)
            if body_lang == "-" or (lang is None and body_lang is not None):  # as LanguageMap.any()
                body, body_lang = child.text, lang
        elif tag == "{jabber:client}subject":
            if not has_subject or child.get(_XML_LANG) is None:
                subject, has_subject = child.text or None, True
        elif tag == _STANZA_ID:
            if stanza_id is None and child.get("by") == jid:
                stanza_id = child.get("id")
        elif tag == _ORIGIN_ID:
            origin_id = origin_id or child.get("id")
        elif tag == _DELAY and child.get("from") == jid:
            # Only the room's: the time it gives a message of the history it replays.  An
            # occupant's own <delay/> says what he likes; Prosody strips those claiming to
            # be from the room, ejabberd keeps them, and then adds none of its own.  The
            # room adds its own last.
            stamp = delay_stamp(child.get("stamp"))
    return RoomStanza(jid, nick, root.get("id"), body, subject, has_subject, stanza_id, origin_id, stamp, text)


def with_archive_id(message: RoomStanza, archive_id: str | None) -> RoomStanza:
    """An archived message with the archive's id on it, as a <stanza-id/> by the room in its
    text too (MAM gives the id on <result/>; a relay carries it on the message itself),
    unless the room put one there."""
    if not archive_id or message.stanza_id is not None:
        return message
    text = message.text
    if text is not None and (end := _END_TAG.search(text)) is not None:
        mark = f"<stanza-id xmlns='{NS_SID}' by={quoteattr(message.room)} id={quoteattr(archive_id)}/>"
        text = f"{text[: end.start()]}{mark}{text[end.start():]}"
    return dataclasses.replace(message, stanza_id=archive_id, text=text)


def read_archived(archive: str, id_: str | None, raw: bytes | None) -> ArchivedStanza | None:
    """A MAM result (``<result><forwarded><delay/><message/>``) from ``archive``; None if
    the message is not one.  The archived message is a RoomStanza if it is a groupchat
    message, written as text, with the archive's id on it."""
    if raw is None:
        return None
    root, _ = _element(raw, id_)
    result = root.find(_MAM_RESULT)
    if result is None:
        return None
    forwarded = result.find(_FORWARDED)
    if forwarded is None:
        return ArchivedStanza(archive, result.get("queryid"), result.get("id"), None, None)
    delay = forwarded.find(_DELAY)
    stamp = delay_stamp(delay.get("stamp")) if delay is not None else None
    inner = forwarded.find("{jabber:client}message")
    message = None
    if inner is not None and inner.get("type") == "groupchat":
        sender = inner.get("from") or ""
        try:
            nick = aioxmpp.JID.fromstr(sender).resource if sender else None  # prepared, as a live one's
        except ValueError:
            nick = sender.split("/", 1)[1] if "/" in sender else None
        inner.tail = None
        message = read_room_element(inner, archive, nick, _element_text(inner, b"&" in raw))
        message = with_archive_id(message, result.get("id"))
    return ArchivedStanza(archive, result.get("queryid"), result.get("id"), stamp, message)


def read_message(raw: bytes, id_: str | None) -> aioxmpp.Message:
    """The Message XSO of a top-level message the router took but is no result after all."""
    return aioxmpp.xml.read_single_xso(io.BytesIO(_element(raw, id_)[1]), aioxmpp.Message)


def _element(raw: bytes, id_: str | None) -> tuple[Any, bytes]:
    """The text of a top-level message, declaring jabber:client, read with lxml."""
    text = b"<message xmlns='jabber:client'" + raw[8:]
    try:
        root = lxml.etree.fromstring(text)
    except lxml.etree.XMLSyntaxError:
        try:  # it declares jabber:client itself (or a prefix)
            root = lxml.etree.fromstring(raw)
            text = raw
        except lxml.etree.XMLSyntaxError:  # what libxml2 alone refuses (see declared_message)
            declared = declared_message(raw)
            if declared is None:
                raise
            text = declared[0]
            root = lxml.etree.fromstring(text, _TOLERANT)
    if root.tag != "{jabber:client}message" or root.get("id") != id_:
        raise ValueError("the text is not the message parsed")
    return root, text


# For text expat has found well-formed: no depth limit, and the namespaces libxml2 takes for
# no URI (recover: read, not an error).
_TOLERANT = lxml.etree.XMLParser(recover=True, huge_tree=True, no_network=True)


_ODD_NAMESPACE = lxml.etree.XPath("boolean(descendant-or-self::*/namespace::*[contains(., '&') or contains(., '<')])")


def _element_text(element: Any, escaped: bool) -> str:
    """``element`` as text.  libxml2 writes the & and < of a namespace as they are, which is
    not XML: such an element (only where the text it came from has an ``escaped`` character)
    goes through aioxmpp's writer, which escapes them."""
    if not (escaped and _ODD_NAMESPACE(element)):
        return lxml.etree.tostring(element, encoding="unicode")
    out = io.BytesIO()
    writer = aioxmpp.xml.XMPPXMLGenerator(out, short_empty_elements=True)
    writer.startPrefixMapping(None, lxml.etree.QName(element).namespace)
    lxml.sax.saxify(element, aioxmpp.xso.model._CollectorContentHandlerFilter(writer))
    writer.endPrefixMapping(None)
    writer.flush()
    return out.getvalue().decode()


def delay_stamp(value: str | None) -> float | None:
    """An XEP-0082 date-time as a POSIX time; None if it is not one."""
    if not value:
        return None
    try:
        stamp = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()
