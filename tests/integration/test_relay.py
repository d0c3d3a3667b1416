"""Relays: room traffic reaches exactly the user's clients that asked for it, as they asked.

The user's clients are resources of the daemon's account (the phone, a laptop, a tablet);
bob, another account, owns the rooms and talks in them. A relay is a chat message from
the daemon's full JID with a readable body and the original room message forwarded whole.

"Nothing arrived" is never waited for: the daemon handles what reaches it in order and
sends to one client in order, so a later message that must arrive (to an all-client, or a
mention) proves that the earlier ones were handled; a ping round trip from a client to the
daemon then flushes whatever the daemon had sent that client (carbon copies included: the
server makes them while routing the original, before the daemon's answer to the ping).
"""

from __future__ import annotations

import pytest

from harness import NS, el_of, tostring, wait_until

NICK = "Ally"


def joined_room(user, prefix: str = "kitchen", nick: str = NICK, extra: dict | None = None):
    """Start the daemon with one autojoin room (bob in it); (daemon, room) once joined."""
    room = user.room(prefix=prefix)
    user.phone.publish_bookmark(room, nick=nick)
    d = user.start(extra)
    user.wait_joined(room, nick)
    return d, room


def bare(jid) -> str:
    return str(jid).split("/", 1)[0]


def label(room: str) -> str:
    return room.split("@", 1)[0]


def flush(user, *clients) -> None:
    """A ping round trip from each client through the daemon (see the module docstring)."""
    for c in clients:
        assert c.ping(user.full_jid) == "result"


def assert_nothing_from_daemon(user, c, since: int = 0) -> None:
    got = user.from_daemon(c, since)
    assert not got, f"{c.jid} got from the daemon:\n" + "\n".join(tostring(m)[:400] for m in got)


# -- who gets what -----------------------------------------------------------------------


@pytest.mark.interop
def test_mentions_client_gets_mentions_all_client_everything_and_the_others_nothing(user):
    _, room = joined_room(user)
    tablet = user.other("tablet", carbons=True)  # never opts in; carbons on
    laptop = user.other("laptop")
    phone = user.phone

    assert user.command(phone, "relay mentions") == "relay for this client: mentions (default)"
    assert user.command(laptop, "relay all") == "relay for this client: all (default)"
    said = [
        "just chatting",
        f"{NICK}: lunch?",
        f"is {NICK.lower()} around",  # case-insensitive
        f"{NICK}son is someone else",  # not the nick as a word
        f"email {NICK.upper()}@example.org",  # a word next to punctuation
        f"bye {NICK}",
    ]
    for text in said:
        user.bob.say(room, text)

    user.wait_relay(laptop, said[-1])
    user.wait_relay(phone, said[-1])
    assert user.relayed(laptop) == said  # every message, once each, in order
    assert user.relayed(phone) == [said[1], said[2], said[4], said[5]]
    relay = user.relays(phone)[0]
    assert relay["body"] == f"[{label(room)}] bob: {said[1]}"
    assert (str(relay["to"]), relay["type"]) == (phone.jid, "chat")
    flush(user, tablet, user.bob)
    assert_nothing_from_daemon(user, tablet)
    assert not [m for m in user.bob.messages if bare(m["from"]) == user.account.jid]
    assert user.command(tablet, "status").endswith("relay for this client: off")


@pytest.mark.interop
def test_relay_carries_the_original_whole_with_fallback_delay_and_hints(user, server):
    _, room = joined_room(user)
    laptop = user.other("laptop")
    user.command(laptop, "relay all")

    mark = len(user.bob.messages)
    user.bob.say(room, "hello all", extra_xml="<thing xmlns='urn:example:unknown'><sub/></thing>")
    relay = user.wait_relay(laptop, "hello all")
    echo = user.bob.wait_groupchat(room, "hello all", since=mark)  # what the room made of it

    m = el_of(relay)
    assert m.findtext("client:body", namespaces=NS) == f"[{label(room)}] bob: hello all"
    fallback = m.find("fallback:fallback", NS)
    assert fallback is not None and fallback.get("for") == NS["forward"], tostring(relay)
    assert m.find("hints:no-copy", NS) is not None and m.find("hints:no-store", NS) is not None
    if server.kind == "ejabberd":  # Prosody strips <private/> on delivery
        assert m.find("carbons:private", NS) is not None, tostring(relay)
    delay = m.find("forward:forwarded/delay:delay", NS)
    assert delay is not None and delay.get("stamp"), tostring(relay)
    inner = user.forwarded_message(relay)
    assert (inner.get("from"), inner.get("type")) == (f"{room}/bob", "groupchat")
    sid = inner.find("sid:stanza-id", NS)
    echo_sid = el_of(echo).find("sid:stanza-id", NS)
    assert sid is not None and sid.get("by") == room
    assert sid.get("id") == echo_sid.get("id")
    assert inner.find("{urn:example:unknown}thing/{urn:example:unknown}sub") is not None
    # Whatever else the room added (occupant-id on Prosody, <archived/> on ejabberd) too.
    assert {c.tag for c in el_of(echo)} <= {c.tag for c in inner}, tostring(relay)
    # Each relay has an id of its own (the handle a reply refers to).
    user.bob.say(room, "second")
    second = user.wait_relay(laptop, "second")
    assert relay["id"] and second["id"] and relay["id"] != second["id"]


@pytest.mark.interop
def test_relays_are_not_archived_in_the_accounts_mam(user):
    _, room = joined_room(user)
    user.command(user.phone, "relay all")
    user.bob.say(room, "archive me not")
    user.wait_relay(user.phone, "archive me not")

    mark = len(user.phone.messages)
    user.phone.iq(f"<query xmlns='{NS['mam']}'/>", type_="set")  # results come before the fin
    archived = [
        el_of(m).find("mam:result/forward:forwarded/client:message", NS)
        for m in user.phone.messages[mark:]
    ]
    bodies = [a.findtext("client:body", namespaces=NS) for a in archived if a is not None]
    assert "relay all" in bodies, bodies  # the archive works: the phone's command is there
    assert not [b for b in bodies if "archive me not" in (b or "")], bodies


def test_only_resources_available_now_get_relays(user, client):
    _, room = joined_room(user)
    tablet = user.other("tablet", carbons=True)
    laptop = user.other("laptop")
    silent = client(user.server, user.account, "silent", connect=False)
    silent.connect(presence=False)  # connected, but never available
    user.command(user.phone, "relay all")
    user.command(laptop, "relay all")
    assert user.command(silent, "relay all") == "relay for this client: all (default)"
    user.bob.say(room, "both here")
    user.wait_relay(laptop, "both here")

    laptop.disconnect()
    user.phone.wait_presence(lambda p: str(p["from"]) == laptop.jid and p["type"] == "unavailable")
    user.command(user.phone, "status")  # the daemon has seen the laptop go, too
    mark = {c: len(c.messages) for c in (user.phone, tablet)}
    user.bob.say(room, "laptop is gone")
    user.wait_relay(user.phone, "laptop is gone", since=mark[user.phone])

    # A chat message to a resource that is gone would go to the account's other
    # resources (or offline storage): the daemon must not send one at all.
    flush(user, tablet, user.phone, silent)
    assert_nothing_from_daemon(user, tablet)
    assert user.relays(silent) == []
    assert [str(m["to"]) for m in user.relays(user.phone)] == [user.phone.jid] * 2
    back = user.other("laptop")  # its choice stands when it comes back
    user.command(back, "status")  # the daemon has seen it come back
    user.bob.say(room, "welcome back")
    user.wait_relay(back, "welcome back")
    # What it missed comes as playback (once, with its original time), then live traffic.
    assert user.relayed(back) == ["laptop is gone", "welcome back"]


@pytest.mark.interop
def test_a_stranger_changes_nothing_and_gets_nothing(user, client, server):
    _, room = joined_room(user)
    tablet = user.other("tablet", carbons=True)
    phone, bob = user.phone, user.bob
    user.command(phone, "relay mentions")
    bookmarks = phone.get_bookmarks()
    other_room = user.room(prefix="elsewhere")
    # A stranger whose resource is the name of one of the user's clients.
    mallory = client(server, resource="tablet")
    bob.say(room, f"first, {NICK}")
    stolen = user.wait_relay(phone, f"first, {NICK}")["id"]  # as if bob had learnt it

    for text in [
        "relay all",
        "/RELAY ALL",
        f"relay all {room}",
        "keywords add chatting",
        f"join {other_room} intruder",
        f"leave {label(room)}",
        f"nick {label(room)} Mallory",
        f"say {label(room)} hacked",
        f"say {label(room)}/bob hacked privately",
        "help",
        "status",
    ]:
        bob.send_message(user.full_jid, text)
        mallory.send_message(user.full_jid, text)
    # Spoofed carbons and forwards of a command "from" the user's tablet.
    spoofed = (
        f"<message xmlns='jabber:client' from='{user.account.jid}/tablet' to='{user.full_jid}'"
        f" type='chat'><body>relay all</body></message>"
    )
    for wrapper in ("received", "sent"):
        bob.send_raw(
            f"<message to='{user.full_jid}' type='chat'><{wrapper} xmlns='{NS['carbons']}'>"
            f"<forwarded xmlns='{NS['forward']}'>{spoofed}</forwarded></{wrapper}></message>"
        )
    bob.send_raw(
        f"<message to='{user.full_jid}' type='chat'><body>relay all</body>"
        f"<forwarded xmlns='{NS['forward']}'>{spoofed}</forwarded></message>"
    )
    # A reply to a real relay, but from a stranger: never posted.
    bob.send_message(
        user.full_jid, "hacked reply", extra_xml=f"<reply xmlns='{NS['reply']}' id='{stolen}'/>"
    )
    # The same command as a private message to the account's occupant: relayed to the
    # mentions client as what it is (a private message), never obeyed, never answered.
    bob.send_message(
        f"{room}/{NICK}", "relay all", "chat", extra_xml=f"<x xmlns='{NS['muc_user']}'/>"
    )
    bob.say(room, f"chatting with {NICK}")

    user.wait_relay(phone, f"chatting with {NICK}")
    flush(user, tablet, bob, mallory)
    assert user.relayed(phone) == [f"first, {NICK}", "relay all", f"chatting with {NICK}"]
    assert user.relays(phone)[1]["body"] == f"[{label(room)}] bob (private): relay all"
    assert_nothing_from_daemon(user, tablet)
    for stranger in (bob, mallory):
        answers = [
            m
            for m in stranger.messages
            if bare(m["from"]) == user.account.jid or str(m["from"]) == f"{room}/{NICK}"
        ]
        assert all(m["type"] == "error" for m in answers), [tostring(m) for m in answers]
    assert not [m for m in bob.messages if m["body"] and "hacked" in m["body"]]
    assert user.daemon_nick(room) == NICK
    assert user.daemon_nick(other_room) is None
    assert phone.get_bookmarks() == bookmarks
    assert user.command(phone, "keywords list") == "keywords: (none)"
    assert user.command(tablet, "status").endswith("relay for this client: off")


# -- per-room settings, keywords, private messages, subjects -----------------------------------


def test_relay_clients_globs_apply_to_clients_that_never_chose(user):
    extra = {"relay": {"clients": {"lap*": "all", "tab*": "mentions", "*": "off"}}}
    _, room = joined_room(user, extra=extra)
    laptop = user.other("laptop-x1")
    tablet = user.other("tablet")

    user.bob.say(room, "plain")
    user.bob.say(room, f"hey {NICK}")
    user.wait_relay(laptop, f"hey {NICK}")
    user.wait_relay(tablet, f"hey {NICK}")
    assert user.relayed(laptop) == ["plain", f"hey {NICK}"]
    assert user.relayed(tablet) == [f"hey {NICK}"]
    # A client's own choice beats the glob.
    assert user.command(laptop, "relay off") == "relay for this client: off (default)"
    mark = len(laptop.messages)
    user.bob.say(room, f"again {NICK}")
    user.wait_relay(tablet, f"again {NICK}")
    flush(user, laptop, user.phone)
    assert user.relays(laptop, mark) == []
    assert user.relays(user.phone) == []  # "phone" matches only "*" = off


def test_per_room_setting_beats_the_default(user):
    _, kitchen = joined_room(user, prefix="kitchen")
    garden = user.room(prefix="garden")
    user.phone.publish_bookmark(garden, nick=NICK)
    user.wait_joined(garden, NICK)
    laptop = user.other("laptop")

    assert user.command(user.phone, "relay all") == "relay for this client: all (default)"
    assert user.command(user.phone, "relay off gard") == f"relay for this client: off in {garden}"
    assert user.command(laptop, "!Relay Mentions") == "relay for this client: mentions (default)"
    assert user.command(laptop, f"relay ALL {garden}") == f"relay for this client: all in {garden}"
    assert user.command(laptop, "relay all nowhere") == "no room matches 'nowhere'"

    user.bob.say(kitchen, "k plain")
    user.bob.say(garden, "g plain")
    user.bob.say(garden, f"g {NICK}")
    user.bob.say(kitchen, f"k {NICK}")
    user.wait_relay(user.phone, f"k {NICK}")
    user.wait_relay(laptop, f"k {NICK}")
    assert user.relayed(user.phone) == ["k plain", f"k {NICK}"]
    assert user.relayed(laptop) == ["g plain", f"g {NICK}", f"k {NICK}"]
    rooms = user.command(laptop, "rooms")
    assert f"{garden}: joined as {NICK}, " in rooms, rooms
    assert {line.split(":")[0]: line.rsplit(" ", 1)[-1] for line in rooms.splitlines()} == {
        kitchen: "mentions",
        garden: "all",
    }, rooms


def test_keywords_count_as_mentions_as_whole_words(user):
    _, room = joined_room(user)
    phone = user.phone
    user.command(phone, "relay mentions")
    assert user.command(phone, "keywords add pizza") == "keywords: pizza"
    assert user.command(phone, "KEYWORDS add Big Deal") == "keywords: pizza, Big Deal"
    assert user.command(phone, "keywords list") == "keywords: pizza, Big Deal"

    for text in ["PIZZA tonight?", "pizzas are not it", "that is a big deal", "big deals neither"]:
        user.bob.say(room, text)
    user.bob.say(room, f"{NICK}?")
    user.wait_relay(phone, f"{NICK}?")
    assert user.relayed(phone) == ["PIZZA tonight?", "that is a big deal", f"{NICK}?"]

    assert user.command(phone, "keywords remove PIZZA") == "keywords: Big Deal"
    mark = len(phone.messages)
    user.bob.say(room, "pizza again")
    user.bob.say(room, f"{NICK}!")
    user.wait_relay(phone, f"{NICK}!", since=mark)
    assert user.relayed(phone, mark) == [f"{NICK}!"]


def test_private_message_to_the_occupant_reaches_mentions_clients(user):
    _, room = joined_room(user)
    laptop = user.other("laptop")
    user.command(user.phone, "relay mentions")
    user.command(laptop, "relay off")

    user.bob.send_message(
        f"{room}/{NICK}", "psst, a secret", "chat", extra_xml=f"<x xmlns='{NS['muc_user']}'/>"
    )
    relay = user.wait_relay(user.phone, "psst, a secret")
    assert relay["body"] == f"[{label(room)}] bob (private): psst, a secret"
    inner = user.forwarded_message(relay)
    assert (inner.get("from"), inner.get("type")) == (f"{room}/bob", "chat")
    flush(user, laptop)
    assert user.relays(laptop) == []


def set_subject(bob, room: str, subject: str, id_: str | None = None) -> None:
    id_attr = f" id='{id_}'" if id_ else ""
    bob.send_raw(
        f"<message to='{room}' type='groupchat'{id_attr}><subject>{subject}</subject></message>"
    )


def subject_relays(user, c, since: int = 0) -> list[str]:
    return [m["body"] for m in user.relays(c, since) if "set the subject" in m["body"]]


def test_subject_changes_are_relayed_in_all_mode_but_not_the_subject_of_a_join(user):
    room = user.room(prefix="kitchen")
    set_subject(user.bob, room, "old news", "s1")
    user.bob.wait_message(lambda m: m["subject"] == "old news")
    user.phone.publish_bookmark(room, nick=NICK)
    laptop = user.other("laptop")
    user.start(extra={"relay": {"clients": {"laptop": "all"}}})
    user.wait_joined(room, NICK)  # the join ended with the subject "old news"

    user.bob.say(room, "joined")
    user.wait_relay(laptop, "joined")
    set_subject(user.bob, room, "fresh news", "s2")
    user.bob.say(room, "after the change")
    user.wait_relay(laptop, "after the change")
    label_ = label(room)
    assert subject_relays(user, laptop) == [f"[{label_}] bob set the subject: fresh news"]

    # A rejoin ends with the subject again: still not news.
    user.phone.publish_bookmark(room, autojoin=False, nick=NICK)
    user.wait_left(room)
    mark = len(laptop.messages)
    user.phone.publish_bookmark(room, nick=NICK)
    user.wait_joined(room, NICK)
    user.bob.say(room, "rejoined")
    user.wait_relay(laptop, "rejoined", since=mark)
    assert user.relayed(laptop, mark) == ["rejoined"]


@pytest.mark.interop
def test_first_subject_change_in_a_room_without_subject_is_relayed(user):
    _, room = joined_room(user)  # bob's fresh room has no subject
    user.command(user.phone, "relay all")

    set_subject(user.bob, room, "first topic", "s1")
    user.bob.say(room, "after")
    user.wait_relay(user.phone, "after")
    assert subject_relays(user, user.phone) == [f"[{label(room)}] bob set the subject: first topic"]


def test_every_subject_change_without_id_is_relayed(user):
    room = user.room(prefix="kitchen")
    set_subject(user.bob, room, "topic zero")  # a subject before the join
    user.bob.wait_message(lambda m: m["subject"] == "topic zero")
    user.phone.publish_bookmark(room, nick=NICK)
    user.start()
    user.wait_joined(room, NICK)
    user.command(user.phone, "relay all")

    for subject in ("topic one", "topic two", "topic three"):
        set_subject(user.bob, room, subject)
    user.bob.say(room, "after")
    user.wait_relay(user.phone, "after")
    assert subject_relays(user, user.phone) == [
        f"[{label(room)}] bob set the subject: topic {n}" for n in ("one", "two", "three")
    ]


@pytest.mark.interop
def test_messages_with_distinct_stanza_ids_are_relayed_even_if_an_origin_id_repeats(user):
    _, room = joined_room(user)
    user.command(user.phone, "relay all")

    origin = f"<origin-id xmlns='{NS['sid']}' id='not-so-unique'/>"
    user.bob.say(room, "one", extra_xml=origin)
    user.bob.say(room, "two", extra_xml=origin)
    user.bob.say(room, "three")
    user.wait_relay(user.phone, "three")
    assert user.relayed(user.phone) == ["one", "two", "three"]


# -- posting: say, replies, echoes --------------------------------------------------------------


@pytest.mark.interop
def test_say_posts_in_the_room_and_privately_as_the_accounts_nick(user):
    _, room = joined_room(user)
    phone, bob = user.phone, user.bob

    assert user.command(phone, f"say {label(room)} hello, room") == f"sent to {room}"
    bob.wait_groupchat(room, "hello, room")
    assert [str(m["from"]) for m in bob.messages if m["body"] == "hello, room"] == [
        f"{room}/{NICK}"
    ]

    assert user.command(phone, f"Say {room}/bob just for you") == f"sent to {room}/bob"
    pm = bob.wait_message(lambda m: m["body"] == "just for you")
    assert (str(pm["from"]), pm["type"]) == (f"{room}/{NICK}", "chat")

    assert user.command(phone, "say nowhere hi").startswith("no room matches")
    assert user.command(phone, "say").startswith("usage: say ROOM TEXT")


@pytest.mark.interop
def test_reply_to_a_relay_goes_to_its_room_with_the_quote_stripped(user):
    _, room = joined_room(user)
    laptop, bob = user.other("laptop"), user.bob
    user.command(laptop, "relay all")

    mark = len(bob.messages)
    bob.say(room, "who wants tea?")
    question = bob.wait_groupchat(room, "who wants tea?", since=mark)
    relay = user.wait_relay(laptop, "who wants tea?")
    quote = "> bob: who wants tea? \U0001f375\n"  # fallback offsets count code points
    laptop.send_message(
        user.full_jid,
        quote + "me, please",
        extra_xml=(
            f"<reply xmlns='{NS['reply']}' to='{user.full_jid}' id='{relay['id']}'/>"
            f"<fallback xmlns='{NS['fallback']}' for='{NS['reply']}'>"
            f"<body start='0' end='{len(quote)}'/></fallback>"
        ),
    )

    answer = bob.wait_groupchat(room, "me, please", since=mark)
    assert str(answer["from"]) == f"{room}/{NICK}"
    reply = el_of(answer).find("reply:reply", NS)
    assert reply is not None, tostring(answer)
    assert (reply.get("to"), reply.get("id")) == (
        f"{room}/bob",
        el_of(question).find("sid:stanza-id", NS).get("id"),
    )


def test_a_reply_with_nothing_but_its_quote_or_a_nonsense_range_never_garbles_the_room(user):
    """All quote once posted an empty message; a backwards range doubled text ("shohort");
    a range that is not a number lost the message with no answer."""
    _, room = joined_room(user)
    laptop, bob = user.other("laptop"), user.bob
    user.command(laptop, "relay all")
    bob.say(room, "who wants tea?")
    relay = user.wait_relay(laptop, "who wants tea?")

    def reply(body: str, start: str, end: str) -> None:
        laptop.send_message(
            user.full_jid, body,
            extra_xml=(
                f"<reply xmlns='{NS['reply']}' to='{user.full_jid}' id='{relay['id']}'/>"
                f"<fallback xmlns='{NS['fallback']}' for='{NS['reply']}'><body start='{start}' end='{end}'/></fallback>"
            ),
        )  # fmt: skip

    mark = len(laptop.messages)
    reply("> bob: who wants tea?", "0", "21")
    laptop.wait_message(lambda m: "nothing but the quote" in (m["body"] or ""), since=mark)
    room_mark = len(bob.messages)
    reply("short", "3", "1")
    reply("also whole", "x", "2")
    bob.wait_groupchat(room, "short", since=room_mark)
    bob.wait_groupchat(room, "also whole", since=room_mark)
    said = [m["body"] for m in bob.messages[room_mark:] if m["type"] == "groupchat"]
    assert "" not in said and "shohort" not in said, said


def test_reply_to_a_private_message_answers_privately(user):
    _, room = joined_room(user)
    user.command(user.phone, "relay mentions")
    user.bob.send_message(
        f"{room}/{NICK}", "secret?", "chat", extra_xml=f"<x xmlns='{NS['muc_user']}'/>"
    )
    relay = user.wait_relay(user.phone, "secret?")

    user.phone.send_message(
        user.full_jid, "secret!", extra_xml=f"<reply xmlns='{NS['reply']}' id='{relay['id']}'/>"
    )

    pm = user.bob.wait_message(lambda m: m["body"] == "secret!")
    assert (str(pm["from"]), pm["type"]) == (f"{room}/{NICK}", "chat")
    assert not [m for m in user.bob.messages if m["type"] == "groupchat" and m["body"] == "secret!"]


def test_text_that_is_neither_command_nor_reply_gets_help_and_never_reaches_a_room(user):
    _, room = joined_room(user)
    phone = user.phone
    help_text = user.command(phone, "help")
    assert help_text.startswith("minimix commands")

    assert user.command(phone, "good morning everyone") == help_text
    mark = len(phone.messages)
    phone.send_message(
        user.full_jid,
        "a reply to nothing",
        extra_xml=f"<reply xmlns='{NS['reply']}' to='{user.full_jid}' id='mmx-unknown'/>",
    )
    assert phone.wait_message(user.is_reply, since=mark)["body"] == help_text
    user.command(phone, f"say {label(room)} marker")
    user.bob.wait_groupchat(room, "marker")
    bodies = [m["body"] for m in user.bob.messages if m["type"] == "groupchat"]
    assert "good morning everyone" not in bodies and "a reply to nothing" not in bodies


def test_reply_to_a_room_the_daemon_left_is_refused_with_a_reason(user):
    _, room = joined_room(user)
    user.command(user.phone, "relay all")
    user.bob.say(room, "still there?")
    relay = user.wait_relay(user.phone, "still there?")
    user.phone.publish_bookmark(room, autojoin=False, nick=NICK)
    user.wait_left(room)

    mark = len(user.phone.messages)
    user.phone.send_message(
        user.full_jid, "yes", extra_xml=f"<reply xmlns='{NS['reply']}' id='{relay['id']}'/>"
    )
    answer = user.phone.wait_message(user.is_reply, since=mark)["body"]
    assert answer == f"not in {room} right now: your reply was not sent"


def test_mentions_follow_the_nick_the_daemon_has_now(user):
    _, room = joined_room(user)
    user.command(user.phone, "relay mentions")
    assert user.command(user.phone, f"nick {label(room)} Bea") == f"nick in {room}: Bea"
    user.wait_joined(room, "Bea")

    user.bob.say(room, f"{NICK}, are you there?")
    user.bob.say(room, "Bea, are you there?")
    user.wait_relay(user.phone, "Bea, are you there?")
    assert user.relayed(user.phone) == ["Bea, are you there?"]


@pytest.mark.interop
def test_own_echo_goes_to_the_other_all_clients_but_not_back_to_its_sender(user):
    _, room = joined_room(user)
    laptop = user.other("laptop")
    phone = user.phone
    user.command(phone, "relay all")
    user.command(laptop, "relay all")

    user.command(laptop, f"say {label(room)} from the laptop")
    user.wait_relay(phone, "from the laptop")  # the room's echo, relayed to the other client
    user.bob.wait_groupchat(room, "from the laptop")
    user.bob.say(room, "after the echo")
    user.wait_relay(laptop, "after the echo")
    user.wait_relay(phone, "after the echo")
    assert user.relayed(laptop) == ["after the echo"]
    assert user.relayed(phone) == ["from the laptop", "after the echo"]
    assert user.relays(phone)[0]["body"] == f"[{label(room)}] {NICK}: from the laptop"

    # The same for a reply: not back to the client that wrote it.
    relay = user.relays(laptop)[0]
    laptop.send_message(
        user.full_jid, "replied", extra_xml=f"<reply xmlns='{NS['reply']}' id='{relay['id']}'/>"
    )
    user.wait_relay(phone, "replied")
    user.bob.say(room, "after the reply")
    user.wait_relay(laptop, "after the reply")
    assert user.relayed(laptop) == ["after the echo", "after the reply"]


# -- persistence ---------------------------------------------------------------------------------


def test_choices_survive_a_daemon_restart(user):
    d, kitchen = joined_room(user)
    garden = user.room(prefix="garden")
    user.phone.publish_bookmark(garden, nick=NICK)
    user.wait_joined(garden, NICK)
    laptop = user.other("laptop")
    user.command(user.phone, "relay mentions")
    user.command(user.phone, "keywords add cake")
    user.command(laptop, f"relay all {label(garden)}")

    assert d.stop() == 0
    user.wait_left(kitchen)
    user.wait_left(garden)
    d.start()
    user.wait_joined(kitchen, NICK)
    user.wait_joined(garden, NICK)

    user.bob.say(kitchen, "nothing much")
    user.bob.say(kitchen, "cake!")
    user.bob.say(garden, "roses")
    user.bob.say(garden, f"{NICK}, look")
    user.wait_relay(user.phone, f"{NICK}, look")
    user.wait_relay(laptop, f"{NICK}, look")
    assert user.relayed(user.phone) == ["cake!", f"{NICK}, look"]
    assert user.relayed(laptop) == ["roses", f"{NICK}, look"]


# -- presence ------------------------------------------------------------------------------------


def daemon_occupant(user, room):
    return user.bob.occupants(room).get(NICK)


def wait_shown(user, room, show, status):
    """Wait until bob sees the daemon's occupant with this show and status."""

    def shown():
        o = daemon_occupant(user, room)
        return o is not None and (o.show, o.status) == (show, status)

    wait_until(
        shown,
        message=lambda: f"bob never saw {NICK} as {show}/{status}: {daemon_occupant(user, room)}",
    )


@pytest.mark.interop
def test_the_occupant_shows_the_most_available_client(user):
    _, room = joined_room(user)
    phone = user.phone

    phone.set_presence("away", "walking the dog")
    wait_shown(user, room, "away", "walking the dog")

    laptop = user.other("laptop", show="dnd", status="in a meeting")
    phone.set_presence("xa", "asleep")  # now dnd > xa
    wait_shown(user, room, "dnd", "in a meeting")

    mark = len(user.bob.presences)
    laptop.set_presence("away", "1")
    laptop.set_presence("dnd", "2")
    laptop.set_presence("chat", "let's talk")  # a burst: debounced into one presence
    wait_shown(user, room, "chat", "let's talk")
    laptop.disconnect()
    wait_shown(user, room, "xa", "asleep")
    ours = [p for p in user.bob.presences[mark:] if str(p["from"]) == f"{room}/{NICK}"]
    assert [(p["show"], p["status"]) for p in ours] == [
        ("chat", "let's talk"),
        ("xa", "asleep"),
    ]

    phone.disconnect()  # none of the user's clients is online
    wait_shown(user, room, "xa", "not connected")


def test_a_room_joined_later_sees_the_mirrored_presence_from_the_join_on(user):
    _, kitchen = joined_room(user)
    user.phone.set_presence("away", "out for lunch")
    wait_shown(user, kitchen, "away", "out for lunch")

    garden = user.room(prefix="garden")
    mark = len(user.bob.presences)
    user.phone.publish_bookmark(garden, nick=NICK)
    user.wait_joined(garden, NICK)
    first = next(p for p in user.bob.presences[mark:] if str(p["from"]) == f"{garden}/{NICK}")
    assert (first["show"], first["status"]) == ("away", "out for lunch"), tostring(first)


def test_with_no_client_online_the_occupant_is_xa_with_the_configured_status(user):
    room = user.room(prefix="kitchen")
    user.phone.publish_bookmark(room, nick=NICK)
    user.phone.disconnect()
    user.start(extra={"presence": {"offline_status": "gone fishing"}})
    user.wait_joined(room, NICK)
    wait_shown(user, room, "xa", "gone fishing")

    user.other("laptop", status="back")
    wait_shown(user, room, None, "back")
