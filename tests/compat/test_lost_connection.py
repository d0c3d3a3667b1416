"""fixes.lost_connection: a transport closed without an exception is no failure to aioxmpp,
and a TLS connection's end is an OpenSSL error to all that waits on the stream."""

import asyncio
from unittest import mock

import aioxmpp
import aioxmpp.protocol
import OpenSSL.SSL

from compat import streams  # noqa: F401  (applies the fixes)
from minimix.xmpp.compat.fixes import lost_connection


def closing_exception(connection_lost, exc=None) -> list:
    async def main():
        stream = aioxmpp.protocol.XMLStream(to=aioxmpp.JID.fromstr("localhost"), features_future=asyncio.Future())
        seen = []
        stream.on_closing.connect(seen.append)
        stream.connection_made(mock.Mock())
        connection_lost(stream, exc)
        for _ in range(5):
            await asyncio.sleep(0)
        return seen

    return asyncio.run(main())


def test_stock_clean_close_is_no_failure():
    assert closing_exception(lost_connection._orig_connection_lost) == [None]


def test_a_clean_close_is_reported_as_a_failure():
    (exc,) = closing_exception(aioxmpp.protocol.XMLStream.connection_lost)
    assert isinstance(exc, ConnectionError)


def test_stock_tls_end_is_no_connection_error():
    (exc,) = closing_exception(lost_connection._orig_connection_lost, OpenSSL.SSL.ZeroReturnError())
    assert not isinstance(exc, ConnectionError)


def test_a_tls_end_is_a_connection_error_caused_by_it():
    tls_end = OpenSSL.SSL.ZeroReturnError()
    (exc,) = closing_exception(aioxmpp.protocol.XMLStream.connection_lost, tls_end)
    assert isinstance(exc, ConnectionError) and exc.__cause__ is tls_end
    assert "ZeroReturnError" in str(exc)
