"""Hostile input: malformed bookmarks from the user's own clients, and a stranger (bob)
sending the daemon's full JID whatever he likes. The daemon skips what is bad, says so
once, never crashes, never reconnects, and keeps following the real bookmarks."""

from __future__ import annotations

import contextlib

import pytest

from harness import BOOKMARKS_NODE, NS, StanzaError, el_of
from minimix.logging import render_field

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: prohibited in JIDs (RFC 3454 C.8)


def item_field(item_id: str) -> str:
    """How the daemon's log writes item=<id> (logfmt, quoted when needed, escaped)."""
    return render_field("item", item_id)


def skip_lines(d, item_id: str) -> list[str]:
    field = item_field(item_id)
    return [
        line
        for line in d.grep(r"^<4>bookmark skipped ")
        if f" {field} " in line or line.endswith(f" {field}")
    ]


def assert_never_went_offline(user, d) -> None:
    assert d.running, f"the daemon exited with {d.returncode}"
    assert not user.daemon_presences("unavailable"), "the daemon went offline"
    assert len(d.grep(r"<6>session established ")) == 1, "the daemon reconnected"
    assert not d.grep(r"internal error|Traceback|<[0-3]>"), d.grep(r"internal error|<[0-3]>")


# -- malformed bookmarks from the user's other client --------------------------------------


@pytest.mark.interop
def test_malformed_bookmarks_are_skipped_once_each_and_the_valid_ones_still_joined(user):
    server, phone = user.server, user.phone
    before = user.room()
    phone.publish_bookmark(before, nick="before")
    d = user.start(extra={"bookmarks": {"resync_interval_s": 1}})
    user.wait_joined(before, "before")

    dup = user.room()
    zoe = user.room()
    rooms = {name: user.room() for name in ("maybe", "foreign", "long", "rlo-nick", "empty")}
    bad = {  # item id -> the payload, for what must be skipped
        "not a jid": dict(room="not a jid"),
        rooms["maybe"]: dict(room=rooms["maybe"], autojoin="maybe", nick="maybe"),
        rooms["foreign"]: dict(
            room=rooms["foreign"], raw_payload_xml="<foo xmlns='urn:example:foreign'/>"
        ),
        rooms["long"]: dict(room=rooms["long"], nick="n" * 5000),
        rooms["rlo-nick"]: dict(room=rooms["rlo-nick"], nick=f"evil{RLO}gnp.exe"),
        f"ro{RLO}om@{server.muc_domain}": dict(room=f"ro{RLO}om@{server.muc_domain}"),
        dup.upper(): dict(room=dup.upper(), nick="dup-upper"),  # the same room as `dup`
    }
    phone.publish_bookmark(dup, nick="dup-lower")
    for kw in bad.values():
        phone.publish_bookmark(**kw)
    phone.publish_bookmark(
        rooms["empty"], raw_payload_xml=f"<conference xmlns='{BOOKMARKS_NODE}'/>"
    )
    phone.publish_bookmark(zoe, nick="Zoë ünïcödé")  # odd, but a valid nick

    after = user.barrier()  # a valid bookmark published afterwards is still joined
    user.wait_joined(zoe, "Zoë ünïcödé")
    assert user.daemon_nick(dup) == "dup-lower"
    for name, room in rooms.items():
        assert user.daemon_nick(room) is None, f"joined {name} room {room}"
    for item_id in bad:
        assert len(skip_lines(d, item_id)) == 1, (item_id, d.grep("bookmark skipped"))

    # Re-fetches (every second here) see the same items: nothing is logged again, the
    # duplicate keeps losing to the same item, and nothing joined changes.
    mark = len(d.lines)
    d.wait_log(r"<6>bookmarks loaded store=xep-0402", since=mark)
    d.wait_log(r"<6>bookmarks loaded store=xep-0402", since=len(d.lines))
    for item_id in bad:
        assert len(skip_lines(d, item_id)) == 1, (item_id, d.grep("bookmark skipped"))
    user.settle()
    assert user.daemon_nick(dup) == "dup-lower"
    for room, nick in ((before, "before"), (after, None), (zoe, "Zoë ünïcödé")):
        assert user.daemon_nick(room) == (nick or user.account.localpart)
    assert_never_went_offline(user, d)


# -- a stranger at the daemon's full JID -----------------------------------------------------


def spoofed_event(to: str, items_xml: str, type_: str = "headline") -> str:
    return (
        f"<message to='{to}' type='{type_}'><event xmlns='{NS['pubsub_event']}'>"
        f"<items node='{BOOKMARKS_NODE}'>{items_xml}</items></event></message>"
    )


@pytest.mark.interop
def test_spoofed_bookmark_events_from_a_stranger_change_nothing(user, client):
    """CVE-2023-28686 (Dino): bookmark events are only believed from the account itself."""
    server, bob = user.server, user.bob
    mine, evil = user.room(), user.room(prefix="evil")
    user.phone.publish_bookmark(mine, nick="mine")
    user.start()
    user.wait_joined(mine, "mine")
    target = user.full_jid
    publish = (
        f"<item id='{evil}' publisher='{user.account.jid}'>"
        f"<conference xmlns='{BOOKMARKS_NODE}' autojoin='true'><nick>pwned</nick></conference>"
        "</item>"
    )
    retract = f"<retract id='{mine}'/>"

    # Control: the server does forward such a message between users.
    carol = client(server, resource="carol")
    bob.send_raw(spoofed_event(carol.jid, publish))
    carol.wait_message(lambda m: el_of(m).find(".//pubsub_event:item", NS) is not None)

    for type_ in ("headline", "normal", "chat"):
        bob.send_raw(spoofed_event(target, publish, type_))
        bob.send_raw(spoofed_event(target, retract, type_))
    # The same, dressed as a carbon copy of a message the account "received".
    bob.send_raw(
        f"<message to='{target}'><received xmlns='urn:xmpp:carbons:2'>"
        f"<forwarded xmlns='urn:xmpp:forward:0'>"
        f"{spoofed_event(target, publish).replace('<message ', f'<message from={chr(39)}{user.account.jid}{chr(39)} ')}"
        "</forwarded></received></message>"
    )

    user.barrier()
    assert user.daemon_nick(evil) is None
    assert user.daemon_nick(mine) == "mine"


def test_a_barrage_from_a_stranger_leaves_the_daemon_connected_and_serving(user, client):
    """Prosody only: the 35,000-level nesting takes ejabberd 23.01 itself down (the server
    stops accepting connections), so there is nothing left to observe there."""
    bob = user.bob
    mine = user.room()
    user.phone.publish_bookmark(mine, nick="mine")
    d = user.start()
    user.wait_joined(mine, "mine")
    target = user.full_jid
    bob_mark = len(bob.presences)
    deep, big = 35_000, "B" * 250_000  # about as deep and as big as Prosody forwards

    def deep_message(to: str) -> str:
        return (
            f"<message to='{to}' type='headline' id='deep'><a xmlns='urn:example:deep'>"
            + "<a>" * (deep - 1)
            + "</a>" * deep
            + "</message>"
        )

    # Control: the server forwards both to a client.
    carol = client(user.server, resource="carol")
    bob.send_raw(deep_message(carol.jid))
    bob.send_message(carol.jid, big)
    carol.wait_message(lambda m: m["id"] == "deep")
    carol.wait_message(lambda m: m["body"] == big)

    bob.send_raw(deep_message(target))
    bob.send_message(target, big)
    # Chat messages are archived first; Prosody's archive takes ~120 levels at most.
    bob.send_message(
        target, "deep chat", extra_xml="<b xmlns='urn:example:deep'>" * 100 + "</b>" * 100
    )
    bob.send_message(
        target,
        "unknown",
        extra_xml="<x xmlns='urn:example:unknown' a='1'><y xmlns='urn:other'/><z/></x>"
        "<event xmlns='http://jabber.org/protocol/pubsub#event'><garbage/></event>",
    )
    bob.send_message(target, f"{RLO}\u200b\ufeffe\u0301 🦊 \U0010fffd \u0627\u0644", type_="normal")
    bob.send_raw(f"<message to='{target}' type='groupchat'><body>not from a room</body></message>")
    bob.send_raw(
        f"<message to='{target}' type='error'><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    )
    bob.send_raw(
        f"<presence to='{target}'><x xmlns='urn:example:unknown'/><priority>127</priority></presence>"
    )
    bob.send_raw(f"<presence to='{target}' type='subscribe'/>")
    bob.send_raw(
        f"<presence to='{target}'><x xmlns='http://jabber.org/protocol/muc#user'>"
        "<item affiliation='owner' role='moderator'/><status code='110'/><status code='201'/></x></presence>"
    )

    answers = {}
    for type_, payload in [
        ("get", "<query xmlns='urn:example:unknown'/>"),
        ("set", "<query xmlns='urn:example:unknown'><deep><er/></deep></query>"),
        ("get", "<query xmlns='jabber:iq:version'/>"),
        ("get", "<query xmlns='http://jabber.org/protocol/disco#items'/>"),
        ("set", "<query xmlns='jabber:iq:roster'><item jid='evil@localhost'/></query>"),
        ("set", f"<pubsub xmlns='{NS['pubsub']}'><publish node='{BOOKMARKS_NODE}'/></pubsub>"),
        ("get", f"<query xmlns='{NS['disco_info']}'>{RLO}🦊</query>"),
    ]:
        try:
            bob.iq(payload, to=target, type_=type_)
            answers[payload] = "result"
        except StanzaError as e:
            answers[payload] = e.condition  # an error reply is an answer
        # a TimeoutError (no answer at all) fails the test
    assert bob.ping(target) == "result", answers

    user.barrier()  # still following the bookmarks
    assert user.daemon_nick(mine) == "mine"
    assert not [
        p
        for p in bob.presences[bob_mark:]
        if str(p["from"]) == f"{mine}/mine" and p["type"] == "unavailable"
    ], "the daemon left its room"
    assert_never_went_offline(user, d)


def test_an_occupant_cannot_hide_his_words_or_later_pms_with_copied_ids(user):
    """Bob once copied the origin-id of a message the laptop had posted (say) and the laptop
    never got his words; two PMs with one forged stanza-id lost the second."""
    room = user.room()
    laptop = user.other("laptop")
    user.phone.publish_bookmark(room, nick="alice")
    user.start({"relay": {"clients": {"laptop": "all"}}})
    user.wait_joined(room, "alice")
    mark = len(user.bob.messages)
    assert user.command(laptop, "say " + room + " from the laptop") == f"sent to {room}"
    posted = el_of(user.bob.wait_groupchat(room, "from the laptop", since=mark))
    origin = posted.find("{urn:xmpp:sid:0}origin-id")
    assert origin is not None
    oid = origin.get("id")
    user.bob.say(room, "bob's own words", extra_xml=f"<origin-id xmlns='urn:xmpp:sid:0' id='{oid}'/>")
    user.wait_relay(laptop, "bob's own words")
    for body in ("pm A", "pm B"):
        user.bob.send_message(
            f"{room}/alice", body, "chat",
            extra_xml=f"<x xmlns='http://jabber.org/protocol/muc#user'/>"
                      f"<stanza-id xmlns='urn:xmpp:sid:0' by='{room}' id='fake-1'/>",
        )  # fmt: skip
    user.wait_relay(laptop, "pm B")
    assert "pm A" in user.relayed(laptop)


# -- one element the daemon's parser could not take (issue 16 §1) ----------------------------

ODD = "<x xmlns='a b'/>"  # well-formed XML, forwarded by Prosody and ejabberd alike


def left(user, rooms: list[str], nick: str, since: int = 0) -> list:
    """The unavailable presences bob saw from the daemon's occupant (``nick``) in ``rooms``."""
    occupants = {f"{room}/{nick}" for room in rooms}
    return [p for p in user.bob.presences[since:] if p["type"] == "unavailable" and str(p["from"]) in occupants]


@pytest.mark.interop
def test_a_namespace_with_a_space_from_anyone_never_takes_the_daemon_out(user, client):
    """<x xmlns='a b'/> made the daemon's own parser fail and close its stream: from a
    stranger, one message or IQ to its full JID; from an occupant, one presence in a room
    (which the room replays on every rejoin: out of every room for as long as he stays)."""
    server, bob = user.server, user.bob
    rooms = [user.room(), user.room()]
    room = rooms[0]
    laptop = user.other("laptop")
    for r in rooms:
        user.phone.publish_bookmark(r, nick="alice")
    d = user.start({"relay": {"clients": {"laptop": "all"}}})
    for r in rooms:
        user.wait_joined(r, "alice")
    target = user.full_jid
    stranger = client(server, resource="stranger")
    carol = client(server, resource="carol")
    carol.join(room, "carol")
    bob_mark = len(bob.presences)

    # Control: the server forwards each of them (to carol, a client of its own).
    stranger.send_raw(f"<message to='{carol.jid}' type='chat' id='ctl'><body>control</body>{ODD}</message>")
    carol.wait_message(lambda m: m["id"] == "ctl" and el_of(m).find("{a b}x") is not None)

    stranger.send_raw(f"<message to='{target}' type='chat' id='s1'><body>hi</body>{ODD}</message>")
    with contextlib.suppress(StanzaError):  # an error is an answer; none at all fails (TimeoutError)
        stranger.iq(ODD, to=target, type_="get")
    mark = len(carol.presences)
    bob.send_raw(f"<presence to='{room}/bob'>{ODD}</presence>")
    carol.wait_presence(lambda p: str(p["from"]) == f"{room}/bob" and el_of(p).find("{a b}x") is not None, since=mark)
    bob.send_raw(f"<message to='{room}' type='groupchat' id='odd-1'><body>odd one</body>{ODD}</message>")

    # The groupchat message reaches the opted-in client, the odd element in the original.
    relay = user.wait_relay(laptop, "odd one")
    assert user.forwarded_message(relay).find("{a b}x") is not None
    # Later traffic still flows: a room's message, a command, a ping.
    bob.say(room, "after")
    user.wait_relay(laptop, "after")
    assert user.command(laptop, "status")
    assert stranger.ping(target) == "result"
    # And the daemon never left a room: bob still sees it in each, and never saw it go.
    user.barrier()
    for r in rooms:
        assert user.daemon_nick(r) == "alice", r
    assert not left(user, rooms, "alice", bob_mark), "the daemon left a room"
    assert_never_went_offline(user, d)


@pytest.mark.interop
def test_a_room_message_too_big_to_relay_whole_goes_as_its_text_and_the_daemon_stays(user):
    """Bob's 150 KB message, relayed as a fallback body and the forwarded original (300 KB),
    made the server close the daemon's stream (policy-violation: stanza too big), and again
    after each reconnection (its playback relayed it again): out of every room for good."""
    room = user.room()
    laptop = user.other("laptop")
    user.phone.publish_bookmark(room, nick="alice")
    d = user.start({"relay": {"clients": {"laptop": "all"}}})
    user.wait_joined(room, "alice")
    label = room.split("@")[0]
    user.bob.say(room, "B" * 150_000)
    big = laptop.wait_message(
        lambda m: str(m["from"]) == user.full_jid and m["body"].startswith(f"[{label}] bob: BBB")
    )
    assert big["body"].endswith("characters in all]") and len(big["body"]) < 60_000
    user.bob.say(room, "after")
    user.wait_relay(laptop, "after")  # later traffic still flows
    user.barrier()
    assert user.daemon_nick(room) == "alice"
    assert_never_went_offline(user, d)
