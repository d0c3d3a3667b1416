"""fixes.send_after_loss: a stanza sent on a stream that has already failed logs a traceback
at warning, once per stanza."""

import asyncio
import logging
from unittest import mock

import aioxmpp
import aioxmpp.protocol
import aioxmpp.stream
import OpenSSL.SSL

from compat import streams  # noqa: F401  (applies the fixes)
from minimix.xmpp.compat.fixes import send_after_loss


def send_on_a_lost_stream(send_stanza) -> aioxmpp.stream.StanzaToken:
    """A chat message handed to ``send_stanza`` after TLS ended under the stream."""

    async def main():
        xmlstream = aioxmpp.protocol.XMLStream(to=aioxmpp.JID.fromstr("localhost"), features_future=asyncio.Future())
        xmlstream.on_closing.connect(lambda exc: None)
        xmlstream.connection_made(mock.Mock())
        xmlstream.connection_lost(OpenSSL.SSL.ZeroReturnError())
        stream = aioxmpp.stream.StanzaStream(aioxmpp.JID.fromstr("me@example.org"))
        message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr("a@b/c"))
        token = aioxmpp.stream.StanzaToken(message)
        send_stanza(stream, xmlstream, token)
        return token

    return asyncio.run(main())


def warnings_with_traceback(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]


def test_stock_send_after_loss_logs_a_traceback(caplog):
    caplog.set_level(logging.DEBUG)
    token = send_on_a_lost_stream(send_after_loss._orig_send_stanza)
    assert token.state == aioxmpp.stream.StanzaState.FAILED
    assert warnings_with_traceback(caplog)


def test_a_stanza_sent_after_the_loss_fails_quietly_with_a_connection_error(caplog):
    caplog.set_level(logging.DEBUG)
    token = send_on_a_lost_stream(aioxmpp.stream.StanzaStream._send_stanza)
    assert token.state == aioxmpp.stream.StanzaState.FAILED
    assert isinstance(token._state_exception, ConnectionError)
    assert not warnings_with_traceback(caplog)
    assert any("stanza not sent: the stream is lost" in r.getMessage() for r in caplog.records)
