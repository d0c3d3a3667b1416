"""The text a message arrived as, kept for the parsed Message.

Cost: aioxmpp keeps nothing of a stanza's text once it is parsed, and a relay forwards the
original room message whole (and the log keeps it for playback).  Serialising the parsed
Message back walks every descriptor the loaded modules put on Message (two dozen): 15 % of
the daemon's CPU per relayed message, more per caught-up one (profiled; bench/README).  The
expat parser's byte index (CurrentByteIndex) says where each <message/> element starts and
where its end tag is in what was fed: the text between is kept for the parsed Message
(weakly: it goes with the object) and, when asked for (:func:`raw_message`), checked to be
a well-formed jabber:client message with the same id before it is used.  Nested messages
(MAM results: <result><forwarded><message/>) are kept the same way.  The router
(fastpath.router) reads its room messages from the same kept text.
Test: tests/compat/test_kept_text.py (test_stock_messages_keep_no_text: without it a
relay's original is serialised again, and is not what arrived).
"""

from __future__ import annotations

import weakref
import xml.parsers.expat as pyexpat
from typing import Any

import aioxmpp
import aioxmpp.protocol
import aioxmpp.xso.model

from minimix.xmpp.compat.fixes.namespace_separator import NS_SEPARATOR

RAW_KEEP_MAX = 4 * 1024 * 1024  # bytes held for one unfinished stanza at most
CLIENT_MESSAGE = f"jabber:client{NS_SEPARATOR}message"  # as expat names it (namespace_separator)
_raw_texts: weakref.WeakKeyDictionary[Any, tuple[bytes, int]] = weakref.WeakKeyDictionary()
_orig_rx_feed = aioxmpp.protocol.XMLStream._rx_feed
_orig_parse_events = aioxmpp.xso.model.XMLStreamClass.parse_events


class Received:
    """The bytes fed to one parser that an unfinished <message/> may still need."""

    __slots__ = ("parser", "xmlstream", "data", "base", "starts", "router")

    def __init__(self, parser: Any, xmlstream: Any = None) -> None:
        self.parser = parser  # xml.sax ExpatParser; its pyexpat parser counts bytes from 0
        self.xmlstream = xmlstream
        self.data = bytearray()
        self.base = 0  # the parser's byte index of data[0]
        self.starts: list[int] = []  # byte indexes of the <message> start tags still open
        self.router: Any = None  # fastpath.router's, once expat is set up

    def index(self) -> int:
        return self.parser._parser.CurrentByteIndex

    def trim(self) -> None:
        if len(self.data) > RAW_KEEP_MAX:  # a huge stanza: not worth keeping (serialised instead)
            self.starts.clear()
        if self.starts:
            keep = self.starts[0]
        else:  # from the last markup on: expat reports a start tag once it has all of it
            last = self.data.rfind(b"<")
            keep = self.base + (last if last >= 0 else len(self.data))
        if keep > self.base:
            del self.data[: keep - self.base]
            self.base = keep

    def text(self, start: int, end: int) -> tuple[bytes, int] | None:
        """The element from ``start`` to its end tag at ``end`` as fed, and where in it
        that end tag starts; None for an empty element or what is no longer held."""
        if end <= start:  # <message/>: an empty element, nothing to forward
            return None
        s, e = start - self.base, end - self.base
        if s < 0 or e >= len(self.data) or self.data[e : e + 2] != b"</":
            return None
        close = self.data.find(b">", e)
        return (bytes(self.data[s : close + 1]), e - s) if close > 0 else None

    def keep(self, obj: Any, start: int, end: int) -> None:
        kept = self.text(start, end)
        if kept is not None:
            _raw_texts[obj] = kept


_feeding: Received | None = None  # what is being parsed now (parsing is synchronous)


def received(xmlstream: Any) -> Received | None:
    """What the stream's parser was fed, as far as a message may still need it."""
    return getattr(xmlstream, "_minimix_rx", None)


def _rx_feed(self: Any, blob: bytes) -> None:
    global _feeding
    parser = self._parser
    rx = getattr(self, "_minimix_rx", None)
    if parser is None:
        return _orig_rx_feed(self, blob)
    if rx is None or rx.parser is not parser:  # a new stream (STARTTLS, SASL): a new count
        rx = self._minimix_rx = Received(parser, self)
    rx.data += blob
    _feeding = rx
    try:
        _orig_rx_feed(self, blob)
    finally:
        _feeding = None
        rx.trim()


def _message_parse_events(cls: Any, ev_args: Any, parent_ctx: Any) -> Any:
    rx = _feeding
    if rx is None:  # not from a stream (a test, a tree): nothing to keep
        return (yield from _orig_parse_events(cls, ev_args, parent_ctx))
    start = rx.index()
    rx.starts.append(start)
    try:
        obj = yield from _orig_parse_events(cls, ev_args, parent_ctx)
        end = rx.index()
    finally:
        if start in rx.starts:
            rx.starts.remove(start)
    rx.keep(obj, start, end)
    return obj


def raw_message(message: Any) -> str | None:
    """The text ``message`` arrived as, declaring jabber:client; None when it was not kept
    or is not fit to forward as it is."""
    kept = _raw_texts.get(message)
    if kept is None:
        return None
    raw = kept[0]
    if not raw.startswith(b"<message") or raw[8:9] not in (b" ", b"\t", b"\r", b"\n", b">"):
        return None  # a prefixed <x:message>: left to the serialiser
    declared = declared_message(raw)
    return declared[0].decode() if declared is not None and declared[1] == (CLIENT_MESSAGE, message.id_) else None


def declared_message(raw: bytes) -> tuple[bytes, tuple[str, str | None]] | None:
    """A kept top-level <message ...> as well-formed text declaring jabber:client (adding
    the declaration unless it has one), checked with expat as the stream was, and its root's
    (name, id); None if it is neither.  (Not with lxml: libxml2 refuses some namespaces
    Prosody and expat take, a namespace with a space, and elements deeper than 256.)"""
    for candidate in (b"<message xmlns='jabber:client'" + raw[8:], raw):  # one declares it already
        root = root_of(candidate)
        if root is not None:
            return candidate, root
    return None


def root_of(text: bytes) -> tuple[str, str | None] | None:
    """(name, id) of the root of ``text`` as expat names it (with NS_SEPARATOR), if
    ``text`` is one well-formed element; None if not."""
    parser = pyexpat.ParserCreate("utf-8", NS_SEPARATOR)
    root: list[tuple[str, str | None]] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        root.append((name, attrs.get("id")))
        parser.StartElementHandler = None  # the rest only needs to be well-formed

    parser.StartElementHandler = start
    try:
        parser.Parse(text, True)
    except pyexpat.ExpatError:
        return None
    return root[0]


def apply() -> None:
    aioxmpp.protocol.XMLStream._rx_feed = _rx_feed
    aioxmpp.Message.parse_events = classmethod(_message_parse_events)
