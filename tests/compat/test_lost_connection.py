"""fixes.silent_close: a transport closed without an exception is no failure to aioxmpp."""

import asyncio
from unittest import mock

import aioxmpp
import aioxmpp.protocol

from compat import streams  # noqa: F401  (applies the fixes)
from minimix.xmpp.compat.fixes import silent_close


def closing_exception(connection_lost) -> object:
    async def main():
        stream = aioxmpp.protocol.XMLStream(to=aioxmpp.JID.fromstr("localhost"), features_future=asyncio.Future())
        seen = []
        stream.on_closing.connect(seen.append)
        stream.connection_made(mock.Mock())
        connection_lost(stream, None)
        for _ in range(5):
            await asyncio.sleep(0)
        return seen

    return asyncio.run(main())


def test_stock_clean_close_is_no_failure():
    assert closing_exception(silent_close._orig_connection_lost) == [None]


def test_a_clean_close_is_reported_as_a_failure():
    (exc,) = closing_exception(aioxmpp.protocol.XMLStream.connection_lost)
    assert isinstance(exc, ConnectionError)
