"""What today's servers add to a room besides its messages, and that minimix takes in stride.

- A room avatar (XEP-0486-style: the room's vCard). Prosody 13 and ejabberd announce a new
  one with a presence from the bare room JID (``vcard-temp:x:update``, also sent to every
  joiner) and a groupchat message without a body, status 104: never relayed, and the room
  stays joined. Prosody 0.12 rooms have no vCard (skipped there).
- Hats (``urn:xmpp:hats:0``, Prosody 13) in occupant presences, the daemon's own included.
"""

from __future__ import annotations

import pytest

from harness import el_of
from harness.relays import post, texts, wait_text

NICK = "Ally"
#: a 1x1 PNG
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
NS_HATS = "urn:xmpp:hats:0"


def start_in_room(user, prefix: str):
    room = user.room(prefix=prefix)
    user.phone.publish_bookmark(room, nick=NICK)
    laptop = user.other("laptop")
    d = user.start({"relay": {"clients": {"laptop": "all"}}})
    user.wait_joined(room, NICK)
    return d, room, laptop


@pytest.mark.interop
def test_a_room_avatar_is_never_relayed_and_the_room_stays_joined(user):
    d, room, laptop = start_in_room(user, "avatar")
    if "vcard-temp" not in user.bob.disco_info(room).features:
        pytest.skip(f"{user.server.kind}: rooms have no vCard (no avatar)")
    mark = len(user.bob.messages)
    photo = f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{PNG}</BINVAL></PHOTO>"
    user.bob.iq(f"<vCard xmlns='vcard-temp'>{photo}</vCard>", room, "set")
    user.bob.wait_message(  # what every occupant got, the daemon included
        lambda m: m["type"] == "groupchat" and not m["body"] and "104" in str(m), since=mark
    )
    post(user, room, ["after the avatar"])
    wait_text(user, laptop, "after the avatar")

    # A daemon joining again gets the avatar's presence from the bare room JID on its join.
    assert d.stop() == 0
    user.wait_left(room)
    d.start()
    user.wait_joined(room, NICK)
    post(user, room, ["after the rejoin"])
    wait_text(user, laptop, "after the rejoin")
    assert texts(user, laptop) == ["after the avatar", "after the rejoin"]


@pytest.mark.prosodies
def test_hats_in_presences_change_nothing(user):
    """Prosody 13 puts the hats of an occupant's affiliation in its presences; 0.12 none."""
    d, room, laptop = start_in_room(user, "hats")
    mark = len(user.bob.presences)
    node = room.split("@", 1)[0]
    user.server.shell(
        f'>local r = prosody.hosts["{user.server.muc_domain}"].modules.muc.get_room_from_jid('
        f'"{room}"); return r:set_affiliation(true, "{user.account.jid}", "member", nil, '
        f'{{ hats = {{ ["urn:example:hat:{node}"] = {{ title = "Chef", active = true }} }} }})'
    )
    hatted = user.bob.wait_presence(
        lambda p: str(p["from"]) == f"{room}/{NICK}", since=mark
    )
    if el_of(hatted).find(f"{{{NS_HATS}}}hats") is None:
        pytest.skip(f"{user.server.kind}: no hats in presences")
    post(user, room, ["under a hat"])
    wait_text(user, laptop, "under a hat")
    assert user.daemon_nick(room) == NICK
    assert user.command(laptop, "rooms").startswith(f"{room}: joined as {NICK}, ")
    assert not d.grep(r"Traceback|unreadable"), d.tail()
