"""fixes.empty_lang: xml:lang='' fails the stanza (or child) it is on."""

import aioxmpp.stanza
import aioxmpp.xso

from compat.streams import fed_stanzas
from minimix.xmpp.compat.fixes import empty_lang

NO_LANGUAGE = (
    b"<iq from='stranger@example.net/x' to='me@example.org/mm' id='q2' type='get' xml:lang=''>"
    b"<ping xmlns='urn:xmpp:ping'/></iq>"
    b"<message from='me@example.org/phone' id='l1' type='chat'><body xml:lang=''>hi</body></message>"
)


def test_stock_empty_language_fails_the_stanza(monkeypatch):
    monkeypatch.setattr(aioxmpp.xso.LanguageTag, "parse", empty_lang._orig_lang_parse)
    got, _ = fed_stanzas(NO_LANGUAGE)
    assert isinstance(got[0], aioxmpp.stanza.StanzaError)  # the ping: no answer
    assert not got[1].body  # the body: left out (lost whole without fixes.unreadable_child)


def test_an_empty_language_is_no_language():
    (ping, message), _ = fed_stanzas(NO_LANGUAGE)
    assert ping.lang is None and ping.payload is not None
    assert message.body == {None: "hi"}
