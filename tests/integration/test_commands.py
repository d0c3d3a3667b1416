"""Chat commands: the user's clients talk to the daemon's full JID in one-line commands.

Every command gets a short human answer; anything the daemon does not understand gets the
help text. Room commands edit the XEP-0402 bookmark (so every client sees the change) and
the daemon then follows its own bookmark: bob sees its occupant come, rename and go.
"""

from __future__ import annotations

import pytest

from harness import NS

NICK = "Ally"


def joined_room(user, prefix: str = "kitchen"):
    room = user.room(prefix=prefix)
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start()
    user.wait_joined(room, NICK)
    return d, room


def test_every_command_gets_a_short_answer_and_anything_else_the_help(user):
    _, room = joined_room(user)
    phone = user.phone
    help_text = user.command(phone, "help")
    assert help_text.startswith("minimix commands")
    for verb in (
        "status",
        "rooms",
        "relay all|mentions|off [ROOM]",
        "keywords",
        "join ROOM",
        "leave ROOM",
        "nick ROOM NICK",
        "say ROOM TEXT",
    ):
        assert verb in help_text, verb

    # Case-insensitive, an optional leading / or !.
    for text in ("HELP", "/help", "! Help", "?", "hello there", "relay", "join"):
        answer = user.command(phone, text)
        if text in ("relay", "join"):  # the verb was right: its usage
            assert answer.startswith("usage: "), (text, answer)
        else:
            assert answer == help_text, text
    assert user.command(phone, "relay sometimes") == "usage: relay all|mentions|off [ROOM]"
    assert (
        user.command(phone, "keywords add") == "usage: keywords add|remove WORD, or keywords list"
    )
    assert user.command(phone, "nick kitchen") == "usage: nick ROOM NICK"

    assert user.command(phone, "/STATUS") == (
        "connected; 1/1 rooms joined; relay for this client: off"
    )
    rooms = user.command(phone, "!rooms")
    assert rooms.startswith(f"{room}: joined as {NICK}, ") and rooms.endswith(", relay off"), rooms
    assert user.command(phone, "Relay Mentions") == "relay for this client: mentions (default)"
    assert (
        user.command(phone, f"relay all {room.upper()}") == f"relay for this client: all in {room}"
    )
    assert user.command(phone, "status") == (
        "connected; 1/1 rooms joined; relay for this client: mentions, 1 room overrides"
    )
    assert user.command(phone, "keywords") == "keywords: (none)"
    assert user.command(phone, "relay off nowhere") == "no room matches 'nowhere'"
    # Exactly one answer per command.
    user.settle()
    answers = [m for m in phone.messages if user.is_reply(m)]
    assert len(answers) == 18, [m["body"][:40] for m in answers]


def test_an_ambiguous_room_prefix_is_refused_with_the_candidates(user):
    _, first = joined_room(user, prefix="garden")
    second = user.room(prefix="garden")
    user.phone.publish_bookmark(second, nick=NICK)
    user.wait_joined(second, NICK)

    answer = user.command(user.phone, "relay all gard")
    assert answer == f"'gard' is ambiguous: {', '.join(sorted([first, second]))}"
    assert user.command(user.phone, "status").endswith("relay for this client: off")


@pytest.mark.interop
def test_join_nick_and_leave_edit_the_bookmark_and_the_daemon_follows(user):
    _, kitchen = joined_room(user)
    laptop = user.other("laptop")  # any other client sees the bookmark
    garden = user.room(prefix="garden")  # exists (bob made it), not bookmarked

    assert user.command(user.phone, f"join {garden} Gardener") == (
        f"bookmarked {garden} with autojoin as Gardener; joining"
    )
    user.wait_joined(garden, "Gardener")
    mark = laptop.get_bookmarks()
    assert (mark[garden].autojoin, mark[garden].nick) == (True, "Gardener")

    assert user.command(user.phone, "nick gard Digger") == f"nick in {garden}: Digger"
    user.wait_joined(garden, "Digger")
    assert laptop.get_bookmarks()[garden].nick == "Digger"

    assert user.command(laptop, "leave garden") == f"autojoin off for {garden}; leaving"
    user.wait_left(garden)
    bookmark = laptop.get_bookmarks()[garden]
    assert (bookmark.autojoin, bookmark.nick) == (False, "Digger")  # the nick is kept

    assert user.command(laptop, "JOIN gard") == f"bookmarked {garden} with autojoin; joining"
    user.wait_joined(garden, "Digger")
    bookmarks = laptop.get_bookmarks()
    assert (bookmarks[garden].autojoin, bookmarks[garden].nick) == (True, "Digger")
    assert (bookmarks[kitchen].autojoin, bookmarks[kitchen].nick) == (True, NICK)
    assert user.daemon_nick(kitchen) == NICK

    assert user.command(laptop, "leave nowhere") == "no room matches 'nowhere'"
    assert user.command(laptop, "join nowhere") == "no room matches 'nowhere'"


def test_messages_without_a_body_and_errors_get_no_answer(user):
    """Clients send chat states, receipts and markers all the time: no help text for those
    (nor for error bounces), or every client would be flooded."""
    joined_room(user)
    laptop = user.other("laptop")
    mark = len(laptop.messages)
    jid = user.full_jid
    laptop.send_message(
        jid, None, extra_xml="<active xmlns='http://jabber.org/protocol/chatstates'/>"
    )
    laptop.send_message(jid, None, extra_xml="<received xmlns='urn:xmpp:receipts' id='mmx-1'/>")
    laptop.send_message(
        jid, None, extra_xml="<displayed xmlns='urn:xmpp:chat-markers:0' id='mmx-1'/>"
    )
    laptop.send_message(
        jid,
        "help",
        "error",
        extra_xml=(f"<error type='cancel'><service-unavailable xmlns='{NS['stanzas']}'/></error>"),
    )
    laptop.send_message(jid, "help", "headline")
    laptop.send_message(jid, "help", "groupchat")

    status = user.command(laptop, "status")  # answered after all of the above was handled
    assert status.startswith("connected;")
    assert [m["body"] for m in laptop.messages[mark:] if user.is_reply(m)] == [status]


def test_what_the_bookmark_reader_would_skip_is_never_bookmarked(user):
    """`join` once published full JIDs and `a@b@c` as bookmarks ("joining"), and a nick the
    reader skips made the daemon leave the room it was only to be renamed in."""
    _, room = joined_room(user)
    phone = user.phone
    before = set(phone.get_bookmarks())
    for bad in (f"{room}/resource", f"@{user.server.muc_domain}", "a@b@c"):
        assert user.command(phone, f"join {bad}").startswith("not bookmarked:"), bad
    assert user.command(phone, "join new@" + user.server.muc_domain + " \u05d0a").startswith(
        "not bookmarked:"
    )  # a nick resourceprep refuses: the edge's check, through the core
    answer = user.command(phone, "nick kitchen " + "N" * 1100)
    assert answer.startswith("nick not changed:") and "1023 bytes" in answer
    assert set(phone.get_bookmarks()) == before
    user.barrier()
    assert user.daemon_nick(room) == NICK  # still there, as it was
    text = "y" * 6003
    assert user.command(phone, f"say kitchen {text}") == f"sent to {room}"
    assert user.bob.wait_groupchat(room, text)["body"] == text


#: how a room owner forbids private messages: XEP-0045's field (Prosody 13, ejabberd 24.12),
#: else ejabberd 23.01's own; Prosody 0.12 has no such option
NO_PRIVATE_MESSAGES = {"muc#roomconfig_allowpm": "none", "allow_private_messages": False}


@pytest.mark.interop
def test_a_private_message_the_room_refuses_is_reported_to_the_client_that_said_it(user):
    """`say ROOM/NICK` in a room that allows no private messages: the room answers with an
    error (Prosody 13 policy-violation, ejabberd forbidden or not-acceptable), and the client
    that asked is told it was not sent, instead of believing it was."""
    _, room = joined_room(user)
    fields = user.bob.room_config(room)
    forbid = {k: v for k, v in NO_PRIVATE_MESSAGES.items() if k in fields}
    if not forbid:
        pytest.skip(f"{user.server.kind}: a room cannot forbid private messages")
    user.bob.configure_room(room, dict([next(iter(forbid.items()))]))
    laptop = user.other("laptop")
    mark = len(laptop.messages)
    assert user.command(laptop, "say kitchen/bob hello bob") == f"sent to {room}/bob"
    refused = laptop.wait_message(
        lambda m: user.is_reply(m) and m["body"].startswith("not sent"), since=mark
    )
    assert refused["body"].startswith(f"not sent to {room}/bob: "), refused["body"]
    assert not [m for m in user.bob.messages if m["body"] == "hello bob"]
    # The room still works both ways, and the phone (which asked nothing) heard nothing.
    assert user.command(laptop, "say kitchen hello all") == f"sent to {room}"
    user.bob.wait_groupchat(room, "hello all")
    assert not [m for m in user.phone.messages if user.is_reply(m)]
