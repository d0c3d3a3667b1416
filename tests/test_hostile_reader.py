"""Whatever the server forwards, the daemon's reader never fails the stream: hostile stanzas
(odd namespaces, awkward characters, deep nesting, bad values in every attribute aioxmpp
types, fake forwarded stanzas…) from a stranger, an occupant of a joined room and the user's
own client go through the real aioxmpp stack with minimix's patches, as bytes.  After each,
the stream is up, the stanza was handled as well as it can be (a room's message relayed as
the text it arrived as, an IQ answered), what comes later still arrives, nothing is logged
as an error, and every byte written is well-formed."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import minimix.core.events as E
from harness import NS
from hostile import (
    DAEMON,
    PHONE,
    ROOM,
    STRANGER,
    Daemon,
    Stanza,
    daemon,
    errors_logged,
    expat_elements,
    stanza,
    stanzas,
    strict_tree,
)
from hostile import written_stanzas as written

SM_R = "<r xmlns='urn:xmpp:sm:3'/>"


def declared(xml: str) -> str:
    """The stanza as a relay forwards it: declaring jabber:client."""
    head, rest = xml.split(" ", 1)
    return f"{head} xmlns='jabber:client' {rest}"


def answers(d: Daemon, id_: str) -> list:
    return [s for s in written(d.wire) if s.tag == "{jabber:client}iq" and s.get("id") == id_]


def check_handled(d: Daemon, stanza: Stanza, since: int) -> None:
    """What the daemon makes of ``stanza``: as much as anyone could."""
    tree = strict_tree(declared(stanza.xml).encode())
    # (two bodies in one language: aioxmpp keeps the last, which may be empty)
    has_body = [bool(c.text) for c in tree if c.tag == "{jabber:client}body"] == [True]
    has_text = has_body or [bool(c.text) for c in tree if c.tag == "{jabber:client}subject"] == [True]
    # A message carrying an archive's result that is not the answer to our query is dropped
    # whole, by design (mam.Archives: never acted on); one carrying a PubSub event is that
    # event (aioxmpp's PubSubClient takes it; bookmark events count only from the account).
    if tree.find("{urn:xmpp:mam:2}result") is not None or tree.find(f"{{{NS['pubsub_event']}}}event") is not None:
        return
    readable = stanza.type_ in (None, "", "chat", "normal", "bogus")  # aioxmpp: an unknown type is normal
    if stanza.kind == "message" and stanza.from_room and (stanza.type_ == "groupchat" or readable and has_text):
        relayed = d.posted(since, E.RoomMessage)
        assert relayed, f"a room's message was lost: {stanza.xml[:300]}"
        for message in relayed:
            if message.ref is not None:  # the original, whole, as it arrived
                assert message.ref == declared(stanza.xml), (message.ref[:300], stanza.xml[:300])
    elif stanza.kind == "message" and stanza.sender == PHONE and readable and has_body:
        assert d.posted(since, E.ClientText), f"the user's message was lost: {stanza.xml[:300]}"
    elif stanza.kind == "presence" and stanza.sender == PHONE and stanza.type_ != "bogus":  # no type: no presence
        assert d.posted(since, E.ClientPresence), f"the user's presence was lost: {stanza.xml[:300]}"
    elif stanza.kind == "presence" and stanza.from_room and stanza.type_ in (None, "unavailable"):
        seen = d.posted(since, E.OccupantPresent) + d.posted(since, E.OccupantLeft)
        assert seen, f"an occupant's presence was lost: {stanza.xml[:300]}"


async def still_serving(d: Daemon, n: int) -> None:
    """What comes after still arrives: the user's message, a room's, an IQ."""
    since = len(d.events)
    d.feed(
        f"<message from='{PHONE}' to='{DAEMON}' type='chat' id='s{n}'><body>sentinel {n}</body></message>"
        f"<message from='{ROOM}/carl' to='{DAEMON}' type='groupchat' id='g{n}'><body>room sentinel {n}</body></message>"
        f"<iq from='{STRANGER}' to='{DAEMON}' type='get' id='p{n}'><ping xmlns='urn:xmpp:ping'/></iq>{SM_R}"
    )
    await d.turns(8)
    assert [e.text for e in d.posted(since, E.ClientText)] == [f"sentinel {n}"]
    assert [e.body for e in d.posted(since, E.RoomMessage)] == [f"room sentinel {n}"]
    assert [a.get("type") for a in answers(d, f"p{n}")] == ["result"]


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] if size else [data]


async def run(batch: list[Stanza], size: int) -> None:
    d = await daemon()
    with errors_logged() as errors:
        for n, stanza in enumerate(batch):
            since = len(d.events)
            for chunk in chunks((stanza.xml + SM_R).encode(), size):
                d.feed(chunk)
            await d.turns(8)
            assert d.up, f"the stream went down on {stanza.xml[:300]}"
            check_handled(d, stanza, since)
            if stanza.kind == "iq" and stanza.type_ in ("get", "set"):
                assert answers(d, stanza.id_), f"no answer to {stanza.xml[:300]}"
            await still_serving(d, n)
    assert not errors, errors
    assert d.up


ODD = "<x xmlns='a b'/>"
OCCUPANT = f"{ROOM}/bob"
DEEP = "<a xmlns='urn:example:deep'>" * 3000 + "</a>" * 3000
# The issue's cases first: one element whose namespace holds a space, from a stranger (a
# message, an IQ), from an occupant (a presence, which the room replays on every join, and a
# groupchat message), and the user's own client.
ISSUE_CASES = [
    stanza("message", "chat", STRANGER, "i1", f"<body>hi</body>{ODD}"),
    stanza("iq", "get", STRANGER, "i2", ODD),
    stanza("iq", "get", STRANGER, "i3", f"<ping xmlns='urn:xmpp:ping'>{ODD}</ping>"),
    stanza("presence", None, OCCUPANT, "i4", ODD),
    stanza("message", "groupchat", OCCUPANT, "i5", f"<body>hi</body>{ODD}"),
    stanza("message", "chat", OCCUPANT, "i6", f"<body>psst</body>{ODD}"),
    stanza("message", "chat", PHONE, "i7", f"<body>status</body>{ODD}"),
    stanza("presence", None, PHONE, "i8", f"<status>away</status>{ODD}"),
    stanza("message", "groupchat", OCCUPANT, "i9", f"<body>deep</body>{DEEP}"),
    stanza("message", "groupchat", OCCUPANT, "i10", f"<body>{'B' * 250_000}</body>"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(stanzas(), min_size=1, max_size=3), st.sampled_from([0, 0, 7, 300]))
@example(ISSUE_CASES, 0)
@example(ISSUE_CASES, 7)
def test_whatever_the_server_forwards_the_stream_stays_up_and_serving(batch, size):
    for one in batch:
        expat_elements(one.xml.encode())  # what a server forwards: well-formed
    asyncio.run(run(batch, size))
