"""XSOs aioxmpp 0.13.3 lacks: XEP-0402 bookmarks (and the forms that go with them).

Every attribute that users' other clients write is read as a plain string, and
every unknown child is kept: the core decides what is malformed (a bad value
must cost one bookmark, never the whole response), and a bookmark minimix
rewrites keeps whatever other clients put in it.
"""

from __future__ import annotations

import re
import xml.parsers.expat as pyexpat
from xml.sax.saxutils import escape, quoteattr

import aioxmpp
import aioxmpp.forms
import aioxmpp.misc
import aioxmpp.pubsub.xso as pubsub_xso
import aioxmpp.stanza
import aioxmpp.utils
import aioxmpp.xml
import aioxmpp.xso as xso
import aioxmpp.xso.model as xso_model
import lxml.etree
import lxml.sax

from minimix.xmpp.compat import NS_SEPARATOR, WrittenAsText

NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_BOOKMARKS_COMPAT = "urn:xmpp:bookmarks:1#compat"
NS_LEGACY_BOOKMARKS = "storage:bookmarks"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_PING = "urn:xmpp:ping"
NS_MUC = "http://jabber.org/protocol/muc"
CAPS_NODE = "https://minimix.invalid/caps"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"


class Extensions(xso.XSO):
    """``<extensions/>``: any content, kept as is (XEP-0402 §3.1: MUST be preserved)."""

    TAG = (NS_BOOKMARKS, "extensions")
    children = xso.Collector()


@pubsub_xso.as_payload_class  # on pubsub <item/> and on event <item/>
class Conference(xso.XSO):
    TAG = (NS_BOOKMARKS, "conference")
    name = xso.Attr("name", default=None)
    autojoin = xso.Attr("autojoin", default=None)  # xs:boolean, validated by the core
    nick = xso.ChildText((NS_BOOKMARKS, "nick"), default=None)
    password = xso.ChildText((NS_BOOKMARKS, "password"), default=None)
    extensions = xso.Child([Extensions])
    unknown = xso.Collector()  # children from future versions of the XEP

    def __repr__(self) -> str:  # never the password
        return f"<Conference name={self.name!r} autojoin={self.autojoin!r} nick={self.nick!r}>"


def publish_options(*, full: bool = True) -> aioxmpp.forms.Data:
    """XEP-0402 §3.3 publish-options.

    ``full=False`` is the subset ejabberd 23.01 accepts (it rejects max_items and
    send_last_published_item with resource-constraint); the node is configured
    afterwards (:func:`node_config`).
    """
    fields = [("pubsub#persist_items", "true"), ("pubsub#access_model", "whitelist")]
    if full:
        fields += [("pubsub#max_items", "max"), ("pubsub#send_last_published_item", "never")]
    return _form(PUBLISH_OPTIONS, fields)


def node_config() -> aioxmpp.forms.Data:
    return _form(
        "http://jabber.org/protocol/pubsub#node_config",
        [
            ("pubsub#max_items", "max"),
            ("pubsub#send_last_published_item", "never"),
            ("pubsub#notify_retract", "1"),
            ("pubsub#access_model", "whitelist"),  # bookmarks may hold room passwords
            ("pubsub#persist_items", "1"),
        ],
    )


def _form(form_type: str, fields: list[tuple[str, str]]) -> aioxmpp.forms.Data:
    F = aioxmpp.forms
    data = F.Data(F.DataType.SUBMIT)
    data.fields.append(F.Field(type_=F.FieldType.HIDDEN, var="FORM_TYPE", values=[form_type]))
    for var, value in fields:
        data.fields.append(F.Field(var=var, values=[value]))
    return data


# -- relays -----------------------------------------------------------------------------------
# Children aioxmpp 0.13.3 has no XSOs for, attached to aioxmpp.Message the way aioxmpp
# attaches its own (Message.xep0280_sent = xso.Child([...])).

NS_FORWARD = "urn:xmpp:forward:0"
NS_FALLBACK = "urn:xmpp:fallback:0"
NS_REPLY = "urn:xmpp:reply:0"
NS_HINTS = "urn:xmpp:hints"
NS_CARBONS = "urn:xmpp:carbons:2"


class FallbackBody(xso.XSO):
    """Read as text: a range that is not two numbers must not make the whole message
    unreadable (aioxmpp drops a stanza whose attribute fails its type); see strip_fallback."""

    TAG = (NS_FALLBACK, "body")
    start = xso.Attr("start", default=None)
    end = xso.Attr("end", default=None)


class Fallback(xso.XSO):
    """XEP-0428: which part of the body is a fallback for which feature."""

    TAG = (NS_FALLBACK, "fallback")
    for_ = xso.Attr("for", default=None)
    bodies = xso.ChildList([FallbackBody])

    def __init__(self, for_: str | None = None) -> None:
        super().__init__()
        self.for_ = for_


class Reply(xso.XSO):
    """XEP-0461: this message answers message ``id`` (sent by ``to``)."""

    TAG = (NS_REPLY, "reply")
    to = xso.Attr("to", default=None)
    id_ = xso.Attr("id", default=None)

    def __init__(self, to: str | None = None, id_: str | None = None) -> None:
        super().__init__()
        self.to, self.id_ = to, id_


aioxmpp.Message.minimix_fallbacks = xso.ChildList([Fallback])
aioxmpp.Message.minimix_reply = xso.Child([Reply])
aioxmpp.Message.minimix_forwarded = xso.Child([aioxmpp.misc.Forwarded])


# -- what the daemon writes ---------------------------------------------------------------------
# One stanza the daemon writes holds at most this many bytes.  RFC 6120 §13.12 promises only
# 10,000; Prosody and ejabberd take 256 KiB from a client by default (ejabberd's older
# configuration, and MongooseIM's example: 64 KiB), and close the stream of one that sends
# more (policy-violation).  A relay of a room's 150 KB message (the body twice: the fallback
# and the original) did that to the daemon, and again after each reconnection, when its
# playback relayed the message again: out of every room for good.
STANZA_MAX_BYTES = 60_000
ENVELOPE_BYTES = 4_096  # a stanza's own element around its payload: addresses (<= 3071 bytes), id
_NOT_XML_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_chars(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (C0 controls, U+FFFE, lone surrogates)."""
    return _NOT_XML_CHARS.sub("", text)


def xml_text(text: str) -> str:
    """``text`` as XML character data: escaped, and without the characters XML 1.0 forbids."""
    return escape(xml_chars(text))


def fitting(text: str, max_bytes: int) -> str:
    """xml_chars(text), cut (with a note saying so) where, escaped, it would take more than
    ``max_bytes`` of UTF-8."""
    text = xml_chars(text)
    if _escaped_bytes(text) <= max_bytes:
        return text
    note = f" [… cut: {len(text)} characters in all]"
    room = max_bytes - len(note.encode())
    lo, hi = 0, len(text)
    while lo < hi:  # the longest head that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _escaped_bytes(text[:mid]) <= room else (lo, mid - 1)
    return text[:lo] + note


def clipped(text: str, max_bytes: int) -> str:
    """xml_text(text) in ``max_bytes`` of UTF-8 at most (see fitting)."""
    return escape(fitting(text, max_bytes))


def well_formed(xml: str) -> bool:
    """Whether ``xml`` is one well-formed element, namespaces and all, as expat (and so
    Prosody) reads it."""
    parser = pyexpat.ParserCreate("utf-8", NS_SEPARATOR)  # (a namespace may hold a space)
    try:
        parser.Parse(xml.encode(), True)
    except (pyexpat.ExpatError, UnicodeEncodeError):  # (a lone surrogate: not even UTF-8)
        return False
    return True


def _escaped_bytes(text: str) -> int:
    return len(escape(text).encode())


class ClientMessage(aioxmpp.stanza.StanzaBase, WrittenAsText):
    """A chat message to one of the user's own clients (a relay, a command's answer), its
    payload already written as text and the whole stanza written as text too, straight into
    the stream's XML writer (the forwarded original is the text it arrived as).

    As an ``aioxmpp.Message`` each relay was validated when enqueued and serialised when
    sent by walking every descriptor the loaded modules register on Message (two dozen):
    a fifth of the daemon's CPU per relayed message.  It is not a Message, so no outbound
    message filter sees it (none is registered for them) and nothing ever parses it.
    """

    TAG = (aioxmpp.utils.namespaces.client, "message")
    id_ = xso.Attr("id", default=None)  # for StanzaBase.autoset_id
    __slots__ = ("address", "payload")

    def __init__(self, address: str, payload: bytes, id_: str | None = None) -> None:
        super().__init__(id_=id_)
        self.address = address  # a full JID of the account, as a string
        self.payload = payload  # well-formed children: built from escaped text

    def validate(self) -> None:
        """Nothing to check: built from an own JID, an id and a well-formed payload."""

    def wire(self, *, declare: bool = False) -> bytes:
        xmlns = " xmlns='jabber:client'" if declare else ""
        id_ = f" id={quoteattr(xml_chars(self.id_))}" if self.id_ else ""  # set when enqueued (autoset_id)
        return (
            f"<message{xmlns} type='chat' to={quoteattr(xml_chars(self.address))}{id_}>".encode()
            + self.payload
            + b"</message>"
        )

    def xso_serialise_to_sax(self, dest) -> None:
        if isinstance(dest, aioxmpp.xml.XMPPXMLGenerator):  # in the stream: jabber:client
            dest._finish_pending_start_element()
            dest._write(self.wire())
        else:  # any other SAX consumer gets the element
            lxml.sax.saxify(
                lxml.etree.fromstring(self.wire(declare=True)), xso_model._CollectorContentHandlerFilter(dest)
            )


# Keep every child aioxmpp has no XSO for (reactions, occupant-id, OMEMO…): a relay
# forwards the original stanza whole.
aioxmpp.Message.minimix_unknown = xso.Collector()


def _fallback_range(b: FallbackBody, length: int) -> tuple[int, int] | None:
    try:
        start = int(b.start) if b.start is not None else 0
        end = int(b.end) if b.end is not None else length
    except ValueError:
        return None
    return (start, end) if 0 <= start <= end <= length else None


def strip_fallback(body: str, message: aioxmpp.Message, for_: str) -> str:
    """The body without the parts marked as a fallback for ``for_`` (XEP-0428, code points).

    A range that is not 0 <= start <= end <= len(body) says nothing reliable: it is ignored,
    and that text stays in."""
    cuts = sorted(
        cut
        for f in message.minimix_fallbacks
        if f.for_ == for_
        for b in f.bodies
        if (cut := _fallback_range(b, len(body))) is not None
    )
    if not cuts:
        return body
    kept, pos = [], 0
    for start, end in cuts:
        kept.append(body[pos:max(pos, start)])
        pos = max(pos, end)
    kept.append(body[pos:])
    return "".join(kept).strip()
