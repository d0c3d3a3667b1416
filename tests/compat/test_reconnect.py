"""fixes.reconnect: aioxmpp's reconnect loop gives up, takes a configured host for a
preference only, and reports no failed attempt; MinimixClient does none of that."""

import asyncio

import aioxmpp
import aioxmpp.connector
import aioxmpp.node
import pytest

from compat.streams import free_port, pinned_client
from minimix.xmpp import compat
from minimix.xmpp.account import security_layer


@pytest.fixture
def srv_lookups(monkeypatch) -> list[str]:
    """The domains whose SRV records a client looks up (none found)."""
    looked_up: list[str] = []

    async def discover_connectors(domain, loop=None, logger=None):
        looked_up.append(domain)
        return []

    monkeypatch.setattr(aioxmpp.node, "discover_connectors", discover_connectors)
    return looked_up


def test_stock_client_falls_back_to_srv(srv_lookups):
    """aioxmpp's Client tries the domain's SRV records once the configured host failed."""
    port = free_port()

    async def main():
        client = aioxmpp.Client(
            aioxmpp.JID.fromstr("nobody@example.invalid/r"), security_layer("pw"),
            override_peer=[("127.0.0.1", port, aioxmpp.connector.STARTTLSConnector())], max_initial_attempts=1,
        )  # fmt: skip
        failed = client.on_failure.future()
        client.start()
        await asyncio.wait_for(failed, 20)

    with pytest.raises(OSError):  # with one attempt allowed, it gave up after it
        asyncio.run(main())
    assert srv_lookups == ["example.invalid"]


def test_reconnect_loop_is_pinned_jittered_and_never_gives_up(srv_lookups):
    """aioxmpp gives up after 4 initial attempts and falls back to SRV: ours does neither."""
    port = free_port()
    failures: list[tuple[str, float]] = []

    async def main():
        delays = iter([0.01 * n for n in range(1, 100)])
        client = compat.MinimixClient(
            aioxmpp.JID.fromstr("nobody@example.invalid/r"),
            security_layer("pw"),
            delay_for=lambda attempt: next(delays),
            override_peer=[("127.0.0.1", port, aioxmpp.connector.STARTTLSConnector())],
            pin_peer=True,
        )
        client.on_connect_failed.connect(lambda exc, delay: failures.append((str(exc), delay)))
        client.start()
        while len(failures) < 6 and client.running:
            await asyncio.sleep(0.01)
        running = client.running
        client.stop()
        return running

    assert asyncio.run(asyncio.wait_for(main(), 20))
    assert len(failures) >= 6  # still trying after aioxmpp's 4 initial attempts
    assert all(f"127.0.0.1:{port}" in error for error, _ in failures)  # only the configured peer
    assert srv_lookups == []
    assert [d for _, d in failures[:3]] == [0.01, 0.02, 0.03]  # the delays we gave it


@pytest.mark.integration
def test_a_lost_stream_is_reported_once_not_also_as_a_failed_attempt(prosody):
    """A stream that was up and failed was reported twice, as a suspension ("connection
    lost") and as a failed connection attempt ("connection failed"), with the same error."""
    account = prosody.new_account()

    async def main():
        client = pinned_client(prosody, account)
        seen = []
        client.on_stream_suspended.connect(lambda exc: seen.append(("lost", type(exc).__name__)))
        client.on_connect_failed.connect(lambda exc, delay: seen.append(("failed", type(exc).__name__)))
        established = client.on_stream_established.future()
        client.start()
        await established
        again = {client.on_stream_established.future(), client.on_stream_resumed.future()}
        client.stream._xmlstream.transport.abort()  # the connection breaks
        await asyncio.wait(again, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        assert any(f.done() for f in again)  # back (resumed, XEP-0198)
        client.stop()
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), 30))
    assert [kind for kind, _ in seen] == ["lost"], seen
