"""Phones (issue 19): a mention wakes a phone that is not connected (the server stores it
and pushes, XEP-0357), and read state follows the user (XEP-0490 read markers).

The phone is a resource in ``mentions`` mode that enables push towards an app server
played by a test client of another account (it answers the server's publish), then closes
its stream (no resumption: the test client has no XEP-0198)."""

from __future__ import annotations

import pytest

from harness import NS, el_of, wait_until
from harness.relays import post

NICK = "Ally"
PUSH_NODE = "minimix-test-node"
NS_PUSH = "urn:xmpp:push:0"
NS_MDS = "urn:xmpp:mds:displayed:0"


def app_server(user):
    """A client of another account that takes the server's push notifications (pubsub
    publishes to it) and answers each, as an app server does."""
    return user._client(user.server, resource="push")


def pushes(app) -> list:
    found = []
    for iq in list(app.iq_requests):
        publish = el_of(iq).find("{http://jabber.org/protocol/pubsub}pubsub/{http://jabber.org/protocol/pubsub}publish")
        if publish is not None and publish.get("node") == PUSH_NODE:
            found.append(iq)
    return found


def pushed_bodies(app) -> list[str | None]:
    """What each push says of the message that caused it (XEP-0357's summary form; the
    test servers include the body)."""
    bodies = []
    for iq in pushes(app):
        fields = el_of(iq).iter("{jabber:x:data}field")
        bodies.append(next((f.findtext("{jabber:x:data}value") for f in fields if f.get("var") == "last-message-body"),
                           None))
    return bodies


def answer_pushes(app, answered: set) -> None:
    for iq in pushes(app):
        if iq["id"] not in answered:
            answered.add(iq["id"])
            app.send_raw(f"<iq type='result' id='{iq['id']}' to='{iq['from']}'/>")


def enable_push(phone, app) -> None:
    phone.iq(f"<enable xmlns='{NS_PUSH}' jid='{app.jid}' node='{PUSH_NODE}'/>", type_="set")


def archived(c, text: str) -> int:
    """How many messages of the account's archive (MAM) say ``text``."""
    mark = len(c.messages)
    c.iq("<query xmlns='urn:xmpp:mam:2' queryid='phones'/>", type_="set")
    return sum(
        1
        for m in c.messages[mark:]
        if (fwd := el_of(m).find("{urn:xmpp:mam:2}result/forward:forwarded/client:message", NS)) is not None
        and fwd.findtext("client:body", namespaces=NS) == text
    )


def said(c, text: str, since: int = 0) -> list:
    """Every message ``c`` got whose body is ``text`` (a relay's fallback or a stored one)."""
    return [m for m in c.messages[since:] if m["body"] == text]


def phone_goes(user) -> None:
    """The phone closes its stream; bob's ping of the daemon then comes after the server
    told the daemon (in-order delivery)."""
    user.phone.disconnect()
    assert user.bob.ping(user.full_jid) == "result"


@pytest.mark.interop
def test_a_mention_for_a_phone_away_is_stored_pushed_and_not_played_back(user):
    if not user.server.push:
        pytest.skip(f"{user.server.kind}: no XEP-0357 push module installed")
    room = user.room(prefix="lobby")
    app = app_server(user)
    answered: set = set()
    enable_push(user.phone, app)
    user.phone.publish_bookmark(room, nick=NICK)
    user.start({"relay": {"clients": {"phone": "mentions"}}})
    user.wait_joined(room, NICK)
    assert "relay for this client: mentions" in user.command(user.phone, "status")  # the daemon knows the phone
    # The user's desktop at a negative priority: the server hands it nothing sent to the
    # bare JID, so it is as if no client were there (relays off).
    desktop = user.other("desktop", priority=-1)

    phone_goes(user)
    post(user, room, ["nothing for the phone"])
    assert user.bob.ping(user.full_jid) == "result"  # the daemon has handled it
    assert app.ping(user.server.domain) == "result"
    assert not pushes(app)  # it woke no one
    post(user, room, [f"{NICK}: lunch?"])
    text = f"[{room.split('@')[0]}] bob: {NICK}: lunch?"
    wait_until(lambda: text in pushed_bodies(app), message="the server never pushed the mention")
    answer_pushes(app, answered)
    # Prosody 0.12 pushes it as an offline message and again for each copy its archive
    # adds; ejabberd 23.01 once without a summary and once with it.
    assert set(pushed_bodies(app)) <= {text, None}
    # The daemon has the server's ack of it (a phone back before that may get it twice).
    wait_until(lambda: "1 mentions stored" in user.command(desktop, "status"))

    mark = len(user.phone.messages)
    user.phone.connect()
    assert user.phone.ping(user.full_jid) == "result"  # its playback is out by now
    stored = user.phone.wait_message(lambda m: m["body"] == text, since=mark)
    assert str(stored["to"]).split("/")[0] == user.account.jid
    user.settle()
    assert len(said(user.phone, text, mark)) == 1, "offline storage and playback both sent it"
    copies = archived(user.phone, text)  # in the account's archive, for clients that sync it
    assert copies >= 1
    print(f"{user.server.kind}: pushes {len(pushes(app))}, archived {copies}")
    assert not said(desktop, text)  # no copy (carbons) to the client at a negative priority


@pytest.mark.interop
def test_nothing_goes_to_the_account_while_a_client_at_priority_0_is_online(user):
    room = user.room(prefix="lobby")
    laptop = user.other("laptop")  # priority 0, relays off: it would get what goes to the bare JID
    user.phone.publish_bookmark(room, nick=NICK)
    user.start({"relay": {"clients": {"phone": "mentions", "laptop": "off"}}})
    user.wait_joined(room, NICK)
    user.command(user.phone, "status")
    phone_goes(user)
    laptop_mark = len(laptop.messages)
    post(user, room, [f"{NICK}: dinner?"])
    assert laptop.ping(user.full_jid) == "result"
    assert not user.from_daemon(laptop, laptop_mark)
    assert not [m for m in laptop.messages[laptop_mark:] if m["body"] and "dinner" in m["body"]]
    mark = len(user.phone.messages)
    user.phone.connect()
    user.wait_relay(user.phone, f"{NICK}: dinner?", since=mark)  # its playback has it


@pytest.mark.interop
def test_wait_keeps_the_mention_for_the_playback(user):
    room = user.room(prefix="lobby")
    user.phone.publish_bookmark(room, nick=NICK)
    user.start({"relay": {"clients": {"phone": "mentions"}, "offline_mentions": "wait"}})
    user.wait_joined(room, NICK)
    user.command(user.phone, "status")
    phone_goes(user)
    post(user, room, [f"{NICK}: tea?"])
    mark = len(user.phone.messages)
    user.phone.connect()
    user.wait_relay(user.phone, f"{NICK}: tea?", since=mark)
    assert user.phone.ping(user.full_jid) == "result"
    assert len(said(user.phone, f"[{room.split('@')[0]}] bob: {NICK}: tea?", mark)) == 1


def displayed(room: str, stanza_id: str) -> str:
    return (f"<item id='{room}'><displayed xmlns='{NS_MDS}'>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' id='{stanza_id}' by='{room}'/></displayed></item>")


def mark_read(c, room: str, stanza_id: str) -> None:
    """What Conversations, Monal and Gajim publish when the user has seen a chat."""
    c.iq(f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{NS_MDS}'>"
         f"{displayed(room, stanza_id)}</publish></pubsub>", type_="set")


def unread_line(user, c, room: str) -> str:
    return next(line for line in user.command(c, "rooms").splitlines() if line.startswith(room))


@pytest.mark.interop
def test_playback_skips_what_the_user_read_on_another_client(user):
    room = user.room(prefix="lobby")
    laptop = user.other("laptop")  # priority 0 (nothing is stored for the phone), relays off
    tablet = user.other("tablet")
    user.phone.publish_bookmark(room, nick=NICK)
    user.start({"relay": {"clients": {"phone": "mentions", "laptop": "off", "tablet": "all"}}})
    user.wait_joined(room, NICK)
    for c in (user.phone, tablet):
        user.command(c, "status")  # the daemon knows them
    user.phone.disconnect()
    tablet.disconnect()
    assert laptop.ping(user.full_jid) == "result"
    lines = ["first", f"{NICK}: second", "third", f"{NICK}: fourth"]
    ids = post(user, room, lines)
    assert laptop.ping(user.full_jid) == "result"
    assert "unread" not in unread_line(user, laptop, room)  # no marker yet: not counted

    mark_read(laptop, room, ids["third"])  # the user read up to "third" on the laptop
    wait_until(lambda: "1 unread" in unread_line(user, laptop, room))
    # A stranger's notification naming the node changes nothing.
    user.bob.send_raw(
        f"<message to='{user.full_jid}'><event xmlns='http://jabber.org/protocol/pubsub#event'>"
        f"<items node='{NS_MDS}'>{displayed(room, ids[lines[-1]])}</items></event></message>"
    )
    assert user.bob.ping(user.full_jid) == "result"
    assert "1 unread" in unread_line(user, laptop, room)

    for c in (tablet, user.phone):
        mark = len(c.messages)
        c.connect()
        user.wait_relay(c, lines[-1], since=mark)
        assert c.ping(user.full_jid) == "result"
        assert user.relayed(c, mark) == [lines[-1]], f"{c.resource}: played back what was read elsewhere"
