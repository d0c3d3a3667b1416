"""The text a relay's body carries: room, nick and text first, as a person reads the room."""

from minimix.core.events import RoomMessage
from minimix.core.router import fallback_text

ROOM = "lobby@conference.example.org"


def text(body, subject=None, private=False, nick="bob"):
    return fallback_text(RoomMessage(ROOM, nick, body, subject, private=private))


def test_a_message_reads_room_nick_text():
    assert text("hi all") == "[lobby] bob: hi all"
    assert text("psst", private=True) == "[lobby] bob (private): psst"
    assert text("hi", nick=None) == "[lobby] ?: hi"


def test_a_subject_change_says_so():
    assert text(None, subject="Release day") == "[lobby] bob set the subject: Release day"


def test_an_action_reads_as_the_room_shows_it():
    """profanity 0.13 shows "/me waves" in the room as "*bob waves" and, before, showed the
    relay as "me: [lobby] bob: /me waves" (docs/clients/)."""
    assert text("/me waves") == "[lobby] * bob waves"
    assert text("/me waves", private=True) == "[lobby] * bob (private) waves"
    assert text("/mean it") == "[lobby] bob: /mean it"
    assert text("say /me waves") == "[lobby] bob: say /me waves"
