"""fixes.unreadable_child: one child aioxmpp cannot read costs the whole stanza."""

import aioxmpp
import aioxmpp.stanza
import aioxmpp.xso.model

from compat.streams import fed_stanzas, with_xmlns
from minimix.xmpp import compat
from minimix.xmpp.compat.fixes import unreadable_child

BAD_CHILDREN = (
    b"<message from='room@muc.example.org/bob' to='me@example.org/mm' id='b1' type='chat'><body>still here</body>"
    b"<delay xmlns='urn:xmpp:delay' stamp='garbage'/><x xmlns='a b'/>"
    b"<r xmlns='urn:example:r'><k xmlns='c d'/></r><thread>t</thread></message>"
)
BAD_PRESENCE = (
    b"<presence from='room@muc.example.org/bob' id='b2'><priority>x</priority><status>away</status>"
    b"<x xmlns='http://jabber.org/protocol/muc#user'><item jid='bad@@jid' affiliation='member' role='participant'/>"
    b"<status code='abc'/></x><y xmlns='&lt;&amp;'/></presence>"
)
BAD_REQUEST = (
    b"<iq from='stranger@example.net/x' to='me@example.org/mm' id='q1' type='get'>"
    b"<error type=''><bogus xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
)


def stock(monkeypatch) -> None:
    monkeypatch.setattr(aioxmpp.Message, "xso_error_handler", unreadable_child._orig_stanza_error_handler)
    monkeypatch.setattr(aioxmpp.Presence, "xso_error_handler", unreadable_child._orig_stanza_error_handler)
    monkeypatch.setattr(aioxmpp.IQ, "xso_error_handler", unreadable_child._orig_iq_error_handler)
    monkeypatch.setattr(aioxmpp.xso.model.Collector, "from_events", unreadable_child._orig_collect)


def test_stock_stanza_is_lost_for_one_bad_child(monkeypatch):
    stock(monkeypatch)
    got, xs = fed_stanzas(BAD_CHILDREN + BAD_PRESENCE + BAD_REQUEST)
    # all three lost; the request unanswered (a StanzaError is dropped, not answered bad-request)
    assert [type(g) for g in got] == [aioxmpp.stanza.StanzaError] * 3
    assert xs.state is aioxmpp.protocol.State.OPEN


def test_a_bad_child_is_left_out_and_the_stanza_read():
    (message, presence), xs = fed_stanzas(BAD_CHILDREN + BAD_PRESENCE)
    assert message.body.any() == "still here" and message.xep0203_delay == []
    assert [c.tag for c in message.minimix_unknown] == []  # the {urn:example:r}r holding c d: out whole
    assert message.thread.identifier == "t"  # what comes after a bad child is read
    assert presence.status.any() == "away" and presence.xep0045_muc_user is None
    assert compat.raw_message(message) == with_xmlns(BAD_CHILDREN)  # a relay forwards it all


def test_an_iq_request_with_a_bad_child_is_answered_bad_request():
    (error,), _ = fed_stanzas(BAD_REQUEST)
    assert isinstance(error, aioxmpp.stanza.PayloadParsingError)  # what aioxmpp answers bad-request
