"""The start-up probe of the last run's XEP-0198 session (Session.probe_previous_session):
a best-effort question to the server that must never keep the daemon from starting."""

from __future__ import annotations

import asyncio

import aioxmpp
import aioxmpp.node
import aioxmpp.nonza
import aioxmpp.protocol
import OpenSSL.SSL

from minimix.xmpp import session as S


class FakeXMLStream:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


def probe(monkeypatch, answer) -> tuple[int | None, FakeXMLStream]:
    """Run the probe against a fake server whose answer to <resume/> is `answer()`."""
    stream = FakeXMLStream()

    async def try_options(*args, **kwargs):
        return None, stream, {aioxmpp.nonza.StreamManagementFeature: object()}

    async def send_and_wait_for(*args, **kwargs):
        return answer()

    monkeypatch.setattr(aioxmpp.node, "_try_options", try_options)
    monkeypatch.setattr(aioxmpp.protocol, "send_and_wait_for", send_and_wait_for)
    account = S.Account(aioxmpp.JID.fromstr("alice@example.org/minimix"), "pw", host="127.0.0.1")
    session = S.Session(account, lambda event: None, reconnect_delay=lambda attempt: 1.0)
    return asyncio.run(session.probe_previous_session("previd", 17, timeout=5)), stream


def test_the_count_comes_from_failed_h(monkeypatch):
    failed = aioxmpp.nonza.SMFailed()
    failed.counter = 42
    count, stream = probe(monkeypatch, lambda: failed)
    assert count == 42 and stream.aborted


def test_a_server_closing_the_tls_stream_does_not_stop_the_daemon(monkeypatch):
    def closed():
        raise OpenSSL.SSL.ZeroReturnError()

    count, stream = probe(monkeypatch, closed)
    assert count is None and stream.aborted
