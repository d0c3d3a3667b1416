"""fixes.tcp_nodelay: aioopenssl leaves Nagle's algorithm on (a ~45 ms tail on small stanzas)."""

import asyncio
import socket

import pytest

from compat.streams import pinned_client
from minimix.xmpp import compat


def nodelay(prosody, set_it: bool) -> int:
    """TCP_NODELAY on a connection to the test Prosody, after set_nodelay or not."""
    account = prosody.new_account()

    async def main():
        client = pinned_client(prosody, account)
        async with client.connected():
            if set_it:
                assert compat.set_nodelay(client)
            sock = client.stream._xmlstream.transport.get_extra_info("socket")
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    return asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.integration
def test_stock_connection_leaves_nagle_on(prosody):
    assert nodelay(prosody, set_it=False) == 0


@pytest.mark.integration
def test_nodelay_is_set_after_the_stream_is_up(prosody):
    assert nodelay(prosody, set_it=True) == 1
