"""Room messages and archive results read without XSOs: the router.

Cost (latency): each SAX event of a stanza goes through four layers of Python (expatreader,
XMPPXMLProcessor, SAXDriver, XSOParser) into the descriptors of every module loaded, which
build an XSO: 85 us for a room message and 45 us for the <r/> Prosody sends after it on a
warm CPU, 170 and 125 us when the daemon wakes up to them (measured), a third of a relay's
time inside the daemon.  Once a stream is open, pyexpat's element handlers are a Router's.
It takes these top-level elements itself, when the stanza stream is ready for them:
- a groupchat <message/> from a room in the stream hooks' ``rooms`` (bare JIDs), if there is
  an ``on_room_stanza`` hook: the elements inside only count depth; at its end the text it
  arrived as (fastpath.kept_text) is read (fastpath.reader) into a RoomStanza;
- a <message/> without a type from a bare JID in ``archives`` (archives with a MAM query
  pending), if there is an ``on_archived`` hook: read the same way into an ArchivedStanza
  (the result, and the archived message as a RoomStanza), or, if it is not a result, into
  the Message XSO it would have been (300 us per result, the bulk of a catch-up's CPU,
  against 20);
- an XEP-0198 <r/>: the one SMRequest (it holds nothing).
What it takes goes to the stanza stream's queue as a parsed stanza would, in order; a
RoomStanza or ArchivedStanza is counted for XEP-0198 as any stanza is and goes to its hook
instead of the inbound filters (fastpath.incoming).  Everything else (a prefixed element
too) is parsed as before.  It reads names as fixes.namespace_separator makes expat write
them.
Test: tests/compat/test_router.py (a room message and an archive result cost a fifth of the
Python calls of the XSO parse, or less).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

import aioxmpp
import aioxmpp.nonza
import aioxmpp.protocol
import aioxmpp.stream
import aioxmpp.xml
import structlog

from minimix.xmpp.compat.fastpath.hooks import hooks_of
from minimix.xmpp.compat.fastpath.kept_text import CLIENT_MESSAGE, received
from minimix.xmpp.compat.fastpath.reader import empty, read_archived, read_message, read_room_stanza
from minimix.xmpp.compat.fixes.namespace_separator import NS_SEPARATOR

log = structlog.get_logger("minimix.xmpp")

SENDERS_KEPT = 4096
SM_REQUEST = aioxmpp.nonza.SMRequest()  # <r/> has nothing in it: one for all
_SM_REQUEST = f"urn:xmpp:sm:3{NS_SEPARATOR}r"
_orig_start_prepare = aioxmpp.stream.StanzaStream._start_prepare


class Router:
    """pyexpat's element handlers once a stream is open: the top-level elements the router
    reads itself are taken here, everything else goes to ExpatParser's handlers as before.
    XMPPXMLProcessor never sees a taken element, so its depth stays right."""

    __slots__ = ("rx", "expat", "start", "end", "chars", "processor", "kind", "depth", "at", "room", "id_",
                 "senders")

    def __init__(self, rx: Any) -> None:
        self.rx = rx  # fastpath.kept_text.Received
        self.expat = expat = rx.parser._parser
        self.start, self.end, self.chars = expat.StartElementHandler, expat.EndElementHandler, expat.CharacterDataHandler
        self.processor = rx.parser._cont_handler
        self.kind: str | None = None  # what is being taken: "message", "archived", "r"; None: nothing
        self.depth = 0
        self.at = 0
        self.room: tuple[str, str | None] = ("", None)
        self.id_: str | None = None
        self.senders: dict[str, tuple[str, str | None] | None] = {}  # from → (room, nick), parsed once
        expat.StartElementHandler, expat.EndElementHandler = self.on_start, self.on_end

    def _receiver(self, cls: type) -> Callable[[Any], None] | None:
        return self.rx.xmlstream.stanza_parser.get_class_map().get(cls)

    def on_start(self, name: str, attrs: dict[str, str]) -> None:
        if self.kind is not None:
            self.depth += 1
            return
        processor = self.processor
        if processor._depth == 1 and processor._state is aioxmpp.xml.ProcessorState.STREAM_HEADER_PROCESSED:
            if name == CLIENT_MESSAGE:  # unprefixed (a prefix would be a third part)
                kind = attrs.get("type")
                if kind == "groupchat":
                    hooks = hooks_of(getattr(self.rx.xmlstream, "_minimix_stanza_stream", None))
                    if hooks.on_room_stanza is not None:
                        room = self._sender(attrs.get("from"), hooks.rooms)
                        if room is not None:
                            return self._take("message", room, attrs.get("id"))
                elif kind in (None, "normal"):  # a MAM result comes from the archive's bare JID
                    hooks = hooks_of(getattr(self.rx.xmlstream, "_minimix_stanza_stream", None))
                    if hooks.on_archived is not None:
                        archive = self._sender(attrs.get("from"), hooks.archives)
                        if archive is not None and archive[1] is None:
                            return self._take("archived", archive, attrs.get("id"))
            elif name == _SM_REQUEST and self._receiver(aioxmpp.nonza.SMRequest) is not None:
                return self._take("r")
        self.start(name, attrs)

    def _sender(self, sender: str | None, jids: Container[str]) -> tuple[str, str | None] | None:
        """(bare JID, resource) of ``sender`` if its bare JID is in ``jids`` and the stream
        takes messages."""
        if sender is None or self._receiver(aioxmpp.Message) is None:
            return None
        try:
            room = self.senders[sender]
        except KeyError:
            if len(self.senders) > SENDERS_KEPT:
                self.senders.clear()
            try:
                jid = aioxmpp.JID.fromstr(sender)
                room = self.senders[sender] = (str(jid.bare()), jid.resource)
            except ValueError:
                room = self.senders[sender] = None
        return room if room is not None and room[0] in jids else None

    def _take(self, kind: str, sender: tuple[str, str | None] = ("", None), id_: str | None = None) -> None:
        self.kind, self.depth, self.at = kind, 0, self.rx.index()
        self.room, self.id_ = sender, id_
        self.expat.CharacterDataHandler = None
        if kind != "r":
            self.rx.starts.append(self.at)  # its text is kept until its end

    def on_end(self, name: str) -> None:
        kind = self.kind
        if kind is None:
            return self.end(name)
        if self.depth:
            self.depth -= 1
            return
        self.kind = None
        self.expat.CharacterDataHandler = self.chars
        if kind == "r":
            receiver, taken = self._receiver(aioxmpp.nonza.SMRequest), SM_REQUEST
        else:
            rx, at = self.rx, self.at
            rx.starts.remove(at)
            kept = rx.text(at, rx.index())
            receiver, taken = self._receiver(aioxmpp.Message), self._read(kind, kept[0] if kept else None)
        if receiver is not None and taken is not None:
            receiver(taken)

    def _read(self, kind: str, raw: bytes | None) -> Any:
        try:
            if kind == "message":
                return read_room_stanza(self.room, self.id_, raw)
            archived = read_archived(self.room[0], self.id_, raw)
            if archived is not None or raw is None:
                return archived
            return read_message(raw, self.id_)  # not a result after all (another message from its JID)
        except Exception as exc:  # noqa: BLE001 - expat took it: a bug of ours, to cost this message, not the stream
            log.warning("a message could not be read; skipped", sender=self.room[0], error=repr(exc))
            return empty(*self.room, self.id_) if kind == "message" else None


def _start_prepare(self: Any, xmlstream: Any, receiver: Any) -> None:
    xmlstream._minimix_stanza_stream = self  # whose hooks the router reads while parsing
    _orig_start_prepare(self, xmlstream, receiver)


def apply() -> None:
    """After fastpath.kept_text: the router reads from what that keeps."""
    feed = aioxmpp.protocol.XMLStream._rx_feed

    def _rx_feed(self: Any, blob: bytes) -> None:
        parser = self._parser
        feed(self, blob)
        rx = received(self)
        if rx is not None and rx.router is None and rx.parser is parser and getattr(parser, "_parser", None) is not None:
            rx.router = Router(rx)  # once expat is set up (on the first feed)

    aioxmpp.protocol.XMLStream._rx_feed = _rx_feed
    aioxmpp.stream.StanzaStream._start_prepare = _start_prepare
