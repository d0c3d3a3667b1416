"""A namespace with a space in it, which fails the whole stream.

Defect: aioxmpp reads the stream with xml.sax's ExpatParser, which has expat report each
name as "namespace local prefix", joined by a space.  Since expat 2.4.5 (CVE-2022-25236) a
namespace that contains the separator is a syntax error, so one element such as
<x xmlns='a b'/> (well-formed XML that Prosody and ejabberd accept and forward, from anyone)
fails the parser, and aioxmpp closes its own stream with bad-format: the daemon drops out of
every room, and a room that replays such a presence on each join keeps it out.  (Before
expat 2.4.5 the space split the name wrongly instead.)  This reader has expat join names
with U+0001, which XML 1.0 allows nowhere, not even as a character reference, so it is never
part of a namespace (Prosody's own parser uses it too).  aioxmpp's make_parser (the stream)
and read_xso (kept texts, stored XML) use it.
Upstream: none filed (aioxmpp's tracker has no issue about it).
Can go when: aioxmpp builds its parser with a separator XML cannot contain, or xml.sax's
expatreader does (tests/compat/test_namespace_separator.py:
test_stock_reader_fails_the_stream_on_a_namespace_with_a_space fails).
"""

from __future__ import annotations

import xml.parsers.expat as pyexpat
import xml.sax.expatreader
import xml.sax.handler
from collections.abc import Callable
from typing import Any

import aioxmpp.xml
import aioxmpp.xso

# What separates a namespace, a local name and a prefix in the names expat reports.
NS_SEPARATOR = "\x01"

_EXPAT_HANDLERS = tuple(name for name in dir(pyexpat.ParserCreate()) if name.endswith("Handler"))
_orig_make_parser = aioxmpp.xml.make_parser


def _split_name(name: str) -> tuple[str | None, str]:
    parts = name.split(NS_SEPARATOR)
    return (None, name) if len(parts) == 1 else (parts[0], parts[1])


class NamespaceReader(xml.sax.expatreader.ExpatParser):
    """xml.sax's expat reader, with names separated by NS_SEPARATOR rather than a space."""

    def reset(self) -> None:
        super().reset()
        if not self._namespaces:
            return
        stock = self._parser  # the same, but with " ": its handlers are ours
        parser = self._parser = pyexpat.ParserCreate(self._source.getEncoding(), NS_SEPARATOR, intern=self._interning)
        parser.namespace_prefixes = 1
        for handler in _EXPAT_HANDLERS:
            setattr(parser, handler, getattr(stock, handler))
        parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_UNLESS_STANDALONE)

    def start_element_ns(self, name: str, attrs: dict[str, str]) -> None:
        values, qnames = {}, {}
        for key, value in attrs.items():
            parts = key.split(NS_SEPARATOR)
            if len(parts) == 1:
                pair, qname = (None, key), key
            else:
                pair, qname = (parts[0], parts[1]), f"{parts[2]}:{parts[1]}" if len(parts) == 3 else parts[1]
            values[pair], qnames[pair] = value, qname
        self._cont_handler.startElementNS(
            _split_name(name), None, xml.sax.expatreader.AttributesNSImpl(values, qnames)
        )

    def end_element_ns(self, name: str) -> None:
        self._cont_handler.endElementNS(_split_name(name), None)


def namespace_reader() -> NamespaceReader:
    reader = NamespaceReader()
    reader.setFeature(xml.sax.handler.feature_namespaces, True)
    reader.setFeature(xml.sax.handler.feature_external_ges, False)
    return reader


def _make_parser() -> NamespaceReader:  # as aioxmpp.xml.make_parser
    reader = namespace_reader()
    reader.setProperty(xml.sax.handler.property_lexical_handler, aioxmpp.xml.XMPPLexicalHandler)
    return reader


def _read_xso(src: Any, xsomap: dict[type, Callable[[Any], None]]) -> None:  # as aioxmpp.xml.read_xso
    parser = aioxmpp.xso.XSOParser()
    for cls, callback in xsomap.items():
        parser.add_class(cls, callback)
    reader = namespace_reader()
    reader.setContentHandler(aioxmpp.xso.SAXDriver(parser))
    reader.parse(src)


def apply() -> None:
    aioxmpp.xml.make_parser = _make_parser
    aioxmpp.xml.read_xso = _read_xso
