"""fixes.ack_stall: aioxmpp asks for an XEP-0198 ack after every batch it sends (each <r/>
costs an <a/> and, with Nagle, a 40 ms stall)."""

import asyncio

import aioxmpp
import aioxmpp.nonza
import aioxmpp.stream
import pytest

from compat.streams import pinned_client
from minimix.xmpp.compat.fixes import ack_stall


def ack_requests(prosody) -> tuple[int, list]:
    """<r/> sent for 20 messages sent in 20 batches, one loop turn each; what is unacked after."""
    account = prosody.new_account()

    async def main():
        client = pinned_client(prosody, account)
        async with client.connected():
            xmlstream = client.stream._xmlstream
            sent = []
            original = xmlstream.send_xso
            xmlstream.send_xso = lambda x: (sent.append(type(x)), original(x))[1]
            for n in range(20):
                msg = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=client.local_jid)
                msg.body[None] = f"{n}"
                client.enqueue(msg)
                await asyncio.sleep(0.001)
            await asyncio.sleep(ack_stall.SM_REQUEST_INTERVAL_S * 2)
            xmlstream.send_xso = original
            return sent.count(aioxmpp.nonza.SMRequest), client.stream.sm_unacked_list

    return asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.integration
def test_stock_asks_for_an_ack_after_every_batch(prosody, monkeypatch):
    monkeypatch.setattr(aioxmpp.stream.StanzaStream, "_process_outgoing", ack_stall._orig_process_outgoing)
    requests, unacked = ack_requests(prosody)
    assert requests >= 20
    assert unacked == []


@pytest.mark.integration
def test_acks_are_asked_for_at_most_every_interval(prosody):
    requests, unacked = ack_requests(prosody)
    assert 1 <= requests <= 3
    assert unacked == []  # acknowledged in the end all the same
