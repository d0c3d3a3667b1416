"""One child aioxmpp cannot read, which costs the whole stanza.

Defect: a message or presence whose child fails to parse is dropped whole (StanzaError): a
<delay/> whose stamp is not a date, a muc#user <item/> with a bad jid, a <priority/> that is
not a number, from anyone.  A room's private message, an occupant's presence, one of the
user's commands were lost for one bad child the daemon does not even need.  And the
Collector (unknown children kept as lxml elements) raises for a name lxml refuses (a
namespace with a space, or "<&", is no URI to lxml), which dropped the stanza the same way.
Such a child is left out, logged at debug, and the rest of the stanza is read as usual (a
relay forwards the text the stanza arrived as, odd child and all).  The stanza's own
attributes (from, to, type, id) still fail it: without them it means nothing.  An IQ
request with a bad child other than its payload (an <error/> in a get) went unanswered: it
is answered bad-request, as one with a bad payload is (RFC 6120 §8.2.3).
Upstream: none filed (related, closed: https://github.com/horazont/aioxmpp/issues/8, a
stanza with an invalid JID broke the stream).
Can go when: aioxmpp drops unreadable children instead of stanzas
(tests/compat/test_unreadable_child.py: test_stock_stanza_is_lost_for_one_bad_child fails).
"""

from __future__ import annotations

from typing import Any

import aioxmpp
import aioxmpp.stanza
import aioxmpp.xso
import aioxmpp.xso.model
import structlog

log = structlog.get_logger("minimix.xmpp")

_orig_collect = aioxmpp.xso.model.Collector.from_events
_orig_stanza_error_handler = aioxmpp.stanza.StanzaBase.xso_error_handler
_orig_iq_error_handler = aioxmpp.IQ.xso_error_handler


def _collect(self: Any, instance: Any, ev_args: Any, ctx: Any) -> Any:
    """Collector.from_events, but a child lxml cannot hold is left out whole (not half built)."""
    collected = self.__get__(instance, type(instance))
    before = len(collected)
    try:
        yield from aioxmpp.xso.model.guard(_orig_collect(self, instance, ev_args, ctx), ev_args)
    except ValueError as exc:  # lxml refuses a name in it (the guard took the rest of its events)
        del collected[before:]
        log.debug("a child left out of a stanza", child=aioxmpp.xso.tag_to_str(tuple(ev_args[:2])),
                  error=type(exc).__name__)  # (its text quotes what the sender wrote)


def _drop_bad_child(self: Any, descriptor: Any, ev_args: Any, exc_info: Any) -> bool:
    if exc_info is None or not isinstance(ev_args, list):  # the stanza's own attributes or text
        return _orig_stanza_error_handler(self, descriptor, ev_args, exc_info)
    log.debug("a child left out of a stanza", child=aioxmpp.xso.tag_to_str(tuple(ev_args[:2])),
              error=type(exc_info[1]).__name__)  # (its text quotes what the sender wrote)
    return True


def _bad_request(self: Any, descriptor: Any, ev_args: Any, exc_info: Any) -> bool:
    if exc_info is not None and isinstance(ev_args, list):  # a child: the request is malformed
        raise aioxmpp.stanza.PayloadParsingError(self, ev_args, descriptor)
    return _orig_iq_error_handler(self, descriptor, ev_args, exc_info)


def apply() -> None:
    aioxmpp.xso.model.Collector.from_events = _collect
    for stanza in (aioxmpp.Message, aioxmpp.Presence):
        stanza.xso_error_handler = _drop_bad_child
    aioxmpp.IQ.xso_error_handler = _bad_request
