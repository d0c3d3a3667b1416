"""Legacy XEP-0048 bookmarks (private XML), as many real clients still write them.

- With Prosody's mod_bookmarks (``#compat``), a legacy write is mapped into XEP-0402
  and must take effect live.
- Without it (``prosody_legacy``), private XML is the only store: the daemon reads it at
  start, and a malformed entry costs only itself.
"""

from __future__ import annotations

from harness import NS, LegacyBookmark
from harness.stanzas import attr


def test_legacy_bookmark_written_by_another_client_is_joined_and_its_removal_leaves(
    prosody, make_user
):
    user = make_user(prosody)
    kept, legacy = user.room(), user.room()
    user.phone.publish_bookmark(kept, nick="kept")
    user.start()
    user.wait_joined(kept, "kept")

    # An old client rewrites the whole list, now with the new room in it.
    user.phone.set_legacy_bookmarks(
        [
            LegacyBookmark(kept, autojoin=True, nick="kept"),
            LegacyBookmark(legacy, autojoin=True, name="Old school", nick="oldie"),
        ]
    )
    user.wait_joined(legacy, "oldie")

    user.phone.set_legacy_bookmarks([LegacyBookmark(kept, autojoin=True, nick="kept")])
    user.wait_left(legacy)
    assert user.daemon_nick(kept) == "kept"


def test_legacy_only_server_bookmarks_are_joined_at_start_and_bad_entries_skipped(
    prosody_legacy, make_user
):
    server = prosody_legacy
    user = make_user(server, notify=False)  # no PEP bookmarks to be notified of here
    with_nick, without_nick, off, yes_room = (user.room() for _ in range(4))
    conferences = [
        conference(with_nick, "true", nick="legacy-nick"),
        conference(yes_room, "yes", nick="yes-man"),  # not an xs:boolean
        conference("not a jid@@conference.localhost", "true"),
        conference(without_nick, "1"),
        conference(off, "false", nick="off"),
        "<conference autojoin='true' name='no jid at all'/>",
    ]
    user.phone.iq(
        f"<query xmlns='{NS['private']}'><storage xmlns='{NS['legacy_bookmarks']}'>"
        f"{''.join(conferences)}</storage></query>",
        type_="set",
    )
    assert len(user.phone.get_legacy_bookmarks()) == 6  # stored as is

    d = user.start(extra={"rooms": {"default_nick": "legacy-default"}})

    user.wait_joined(with_nick, "legacy-nick")
    user.wait_joined(without_nick, "legacy-default")
    d.wait_log(r"<6>bookmarks loaded store=xep-0048 items=6 autojoin=2")
    skipped = d.grep(r"<4>bookmark skipped .*store=xep-0048")
    assert any(f"item={yes_room}" in line and "autojoin" in line for line in skipped), skipped
    assert any("not a jid@@conference.localhost" in line for line in skipped), skipped
    assert len(skipped) == 3, skipped  # and the entry without a jid: nothing else
    # Not joined: the room with autojoin="yes" nor the one with autojoin off (the
    # decision was taken before the log line above, so before the ping of settle()).
    user.settle()
    assert user.daemon_nick(yes_room) is None
    assert user.daemon_nick(off) is None
    assert d.running


def conference(jid: str, autojoin: str, nick: str | None = None) -> str:
    inner = f"<nick>{nick}</nick>" if nick else ""
    return f"<conference jid={attr(jid)} autojoin={attr(autojoin)}>{inner}</conference>"
