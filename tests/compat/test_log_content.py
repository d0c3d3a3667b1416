"""fixes.log_content: aioxmpp logs stanzas and what its parser could not read, and asyncio
and aioxmpp log a daemon's ordinary troubles at error level."""

import contextlib
import io
import logging

import aioxmpp
import aioxmpp.stanza
import aioxmpp.stream
import aioxmpp.xml
import aioxmpp.xso
import OpenSSL.SSL
import pytest

from compat import streams  # noqa: F401  (applies the fixes)
from minimix import logging as minimix_logging
from minimix.xmpp.compat.fixes.log_content import Demote


@pytest.fixture
def debug_log():
    """The daemon's log pipeline at debug level, into a string."""
    out = io.StringIO()
    minimix_logging.setup("debug", stream=out, mode="journal", env={})
    yield out
    minimix_logging.reset()


def bobs_iq() -> aioxmpp.IQ:
    """The IQ's repr shows its payload (here an error text bob wrote)."""
    return aioxmpp.IQ(type_=aioxmpp.IQType.ERROR, error=aioxmpp.stanza.Error(text="what bob said"))


def test_stock_logs_show_what_bob_said(debug_log, monkeypatch):
    """Without the registration, the pipeline shows a stanza aioxmpp logs as it is."""
    monkeypatch.setattr(minimix_logging, "_content_types", (bytes, bytearray, memoryview))
    logging.getLogger("aioxmpp.StanzaStream").debug("incoming iq: %r", bobs_iq())
    assert "what bob said" in debug_log.getvalue()


def test_stanzas_aioxmpp_logs_are_never_shown(debug_log):
    for logger in ("aioxmpp.client.StanzaStream", "aioxmpp.StanzaStream", "aioxmpp.node.XMLStream"):
        logging.getLogger(logger).debug("incoming iq: %r", bobs_iq())
    assert "bob" not in debug_log.getvalue()
    assert debug_log.getvalue().count("incoming iq: <IQ>") == 3


def test_what_aioxmpps_parser_could_not_read_is_never_shown(debug_log):
    """aioxmpp.xso.model logs the attribute value and the exception quoting it."""
    message = b"<message xmlns='jabber:client'><delay xmlns='urn:xmpp:delay' stamp='what bob said'/></message>"
    with contextlib.suppress(aioxmpp.stanza.StanzaError):  # not the point here
        aioxmpp.xml.read_single_xso(io.BytesIO(message), aioxmpp.Message)
    assert "bob" not in debug_log.getvalue()
    assert debug_log.getvalue().splitlines()[0] == (
        "<7>while parsing XSO <class 'aioxmpp.misc.delay.Delay'> (<13 characters>) (ValueError) "
        "logger=aioxmpp.xso.model"
    )


def record(msg: str, exc: BaseException, args: tuple = ()) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, args, (type(exc), exc, None))


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("stanza aborted"), aioxmpp.stream.DestructionRequested("stop"), ConnectionError("gone")],
)
def test_futures_of_stanzas_aborted_by_a_stop_are_not_errors(exc):
    """An IQ in flight when the daemon stops (a room archive query, say): its waiting task
    is cancelled, aioxmpp fails the IQ's future and asyncio logs "Future exception was never
    retrieved" at ERROR on every such stop.  It goes to DEBUG."""
    demoted = record("Future exception was never retrieved\nfuture: %r", exc, ("<Future>",))
    assert not Demote().filter(demoted) or logging.getLogger().isEnabledFor(logging.DEBUG)
    assert demoted.levelno == logging.DEBUG


def test_other_unretrieved_future_exceptions_stay_errors():
    kept = record("Future exception was never retrieved", RuntimeError("something else"))
    assert Demote().filter(kept)
    assert kept.levelno == logging.ERROR


def test_a_reset_during_the_tls_close_is_not_an_error():
    """A server that resets the connection while minimix closes it (after a refused login,
    once writes go out at once): asyncio's traceback goes to DEBUG."""
    demoted = record("Fatal error on tls shutdown\nprotocol: %r", OpenSSL.SSL.SysCallError(104, "ECONNRESET"), ("<p>",))
    Demote().filter(demoted)
    assert demoted.levelno == logging.DEBUG
