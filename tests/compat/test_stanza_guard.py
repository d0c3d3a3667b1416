"""fixes.stanza_guard: an exception while handling one received stanza ends aioxmpp's
stanza loop (and the session with it); it costs that stanza instead."""

import asyncio
import dataclasses
from unittest import mock

import aioxmpp
import aioxmpp.protocol
import aioxmpp.stream
import pytest
import structlog

from compat.streams import SM_R
from minimix.core.events import ClientText
from minimix.xmpp import compat
from minimix.xmpp.compat.fastpath.hooks import hooks_of
from minimix.xmpp.compat.fixes import stanza_guard


def handle_with_a_buggy_filter(process_incoming) -> None:
    """A received message handled by ``process_incoming``, an inbound filter failing on it."""

    async def run():
        stream = aioxmpp.stream.StanzaStream(aioxmpp.JID.fromstr("me@example.org"))

        def buggy(message):
            raise RuntimeError("a bug")

        stream.app_inbound_message_filter.register(buggy, 0)
        xmlstream = mock.Mock(state=aioxmpp.protocol.State.OPEN)
        message = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, from_=aioxmpp.JID.fromstr("me@example.org/phone"))
        process_incoming(stream, xmlstream, (message, None))

    asyncio.run(run())


def test_stock_failing_handler_ends_the_stanza_loop():
    """StanzaStream._run calls this unguarded: what it raises ends the loop's task."""
    with pytest.raises(RuntimeError):
        handle_with_a_buggy_filter(stanza_guard._orig_process_incoming)


def test_a_failing_handler_costs_the_stanza():
    with structlog.testing.capture_logs() as logged:
        handle_with_a_buggy_filter(stanza_guard._process_incoming)
    assert [e["event"] for e in logged] == ["internal error while handling a stanza; skipped"]


def test_a_stream_that_goes_down_with_stanzas_queued_is_no_internal_error():
    """Stanzas, <r/> and the server's stream error in one read: the <a/> cannot go out any
    more, which is the stream's loss (reported once, as such), not an internal error, and
    the stanzas read before it are still handled."""
    import hostile

    async def run():
        d = await hostile.daemon()
        with hostile.errors_logged() as errors:
            d.feed(
                f"<message from='{hostile.PHONE}' type='chat' id='a'><body>one</body></message>{SM_R.decode()}"
                f"<message from='{hostile.PHONE}' type='chat' id='b'><body>two</body></message>{SM_R.decode()}"
                "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
                "</stream:stream>"
            )
            await d.turns()
        return errors, [e.text for e in d.events if isinstance(e, ClientText)]

    errors, texts = asyncio.run(run())
    assert errors == [] and texts == ["one", "two"]


@pytest.mark.parametrize("at_once", [True, False], ids=["taken at once", "by the stanza loop"])
def test_an_exception_handling_a_stanza_costs_that_stanza_not_the_stream(at_once):
    """A bug of ours handling one stanza: logged, and the next one in the same read is still
    handled (in aioxmpp's own loop such an exception ended the stanza stream)."""
    import hostile

    async def run():
        d = await hostile.daemon()
        if not at_once:  # no on_taken hook: the stanza loop's task takes them (fastpath.incoming)
            compat.set_hooks(d.stream, dataclasses.replace(hooks_of(d.stream), on_taken=None))
        post = d.session.link.post

        def buggy(event):  # the daemon's own handling of one stanza fails
            if getattr(event, "text", None) == "bug":
                raise RuntimeError("a bug")
            post(event)

        d.session.link.post = buggy
        with hostile.errors_logged() as errors:
            d.feed("".join(
                f"<message from='{hostile.PHONE}' type='chat' id='{id_}'><body>{id_}</body></message>"
                for id_ in ("bug", "fine")
            ))
            await d.turns()
        return errors, [e.text for e in d.events if isinstance(e, ClientText)], d.up

    errors, texts, up = asyncio.run(run())
    assert errors == ["minimix: internal error while handling a stanza; skipped"]
    assert texts == ["fine"] and up
