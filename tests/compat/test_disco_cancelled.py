"""fixes.disco_cancelled: a lost stream logs a traceback per disco query in flight."""

import asyncio
import logging

import aioxmpp
import aioxmpp.disco

from compat import streams  # noqa: F401  (applies the fixes)
from minimix.xmpp.account import security_layer
from minimix.xmpp.compat.fixes import disco_cancelled


def errors_of_a_cancelled_query(callback, caplog) -> list[str]:
    async def run():
        client = aioxmpp.Client(aioxmpp.JID.fromstr("a@localhost/r"), security_layer("pw"))
        disco = client.summon(aioxmpp.DiscoClient)
        query = asyncio.ensure_future(asyncio.sleep(10))
        query.add_done_callback(lambda task: callback(disco, aioxmpp.JID.fromstr("room@muc.localhost"), None, task))
        await asyncio.sleep(0)
        query.cancel()  # as the stream is lost
        for _ in range(3):
            await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(run())
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_stock_cancelled_query_logs_an_error(caplog):
    errors = errors_of_a_cancelled_query(disco_cancelled._orig_info_received, caplog)
    assert errors and errors[0].startswith("Exception in callback")


def test_a_disco_query_cancelled_with_the_stream_is_no_error(caplog):
    assert errors_of_a_cancelled_query(aioxmpp.disco.DiscoClient._handle_info_received, caplog) == []
