"""The daemon keeps the account in exactly its autojoin rooms, at start and live.

Bookmarks are written by the user's phone (another resource of the account); the verdict
comes from bob, the owner of every room, who sees the daemon's occupant by its real JID.
"""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

from harness import BOOKMARKS_NODE, NS, StanzaError, el_of, muc_codes

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


# -- at start ---------------------------------------------------------------------------


@pytest.mark.interop
def test_start_joins_autojoin_rooms_with_the_bookmark_nick_or_the_default_nick(user, client):
    server, phone = user.server, user.phone
    named = user.room()
    unnamed = user.room()
    protected = user.room(password="R00m-Secret-1")
    not_autojoin = user.room()
    phone.publish_bookmark(named, nick="bm-nick")
    phone.publish_bookmark(unnamed)
    phone.publish_bookmark(protected, nick="inside", password="R00m-Secret-1")
    phone.publish_bookmark(not_autojoin, autojoin=False, nick="never")

    user.start(extra={"rooms": {"default_nick": "dflt"}})

    user.wait_joined(named, "bm-nick")
    user.wait_joined(unnamed, "dflt")
    user.wait_joined(protected, "inside")
    with pytest.raises(StanzaError) as refused:  # the room really wants the password
        client(server).join(protected, "gatecrasher")
    assert refused.value.condition == "not-authorized"
    user.barrier()
    assert user.daemon_nick(not_autojoin) is None


@pytest.mark.interop
def test_without_default_nick_the_localpart_is_the_nick(user):
    room = user.room()
    user.phone.publish_bookmark(room)

    user.start()

    user.wait_joined(room, user.account.localpart)


@pytest.mark.interop
def test_presence_has_negative_priority_and_caps_announce_bookmark_notifications(user):
    user.start()

    presence = user.wait_daemon_online()

    assert el_of(presence).findtext("client:priority", namespaces=NS) == "-1"
    c = el_of(presence).find("caps:c", NS)
    assert c is not None, "the daemon's presence carries no entity caps"
    info = user.phone.disco_info(user.full_jid, node=f"{c.get('node')}#{c.get('ver')}")
    assert f"{BOOKMARKS_NODE}+notify" in info.features
    assert "http://jabber.org/protocol/muc" in info.features
    # The server trusts a caps hash only if it matches the features behind it.
    assert (c.get("hash"), c.get("ver")) == ("sha-1", caps_ver(info.raw))


def caps_ver(query) -> str:
    """XEP-0115 §5.1 verification string (no data forms) of a disco#info <query/>."""
    identities = sorted(
        (i.get("category"), i.get("type"), i.get(XML_LANG) or "", i.get("name") or "")
        for i in query.findall("disco_info:identity", NS)
    )
    features = sorted(f.get("var") for f in query.findall("disco_info:feature", NS))
    assert query.find("data:x", NS) is None, "forms are not handled here"
    s = "".join("/".join(i) + "<" for i in identities) + "".join(f + "<" for f in features)
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


# -- live changes from another resource ---------------------------------------------------


@pytest.mark.interop
def test_new_autojoin_bookmark_is_joined_and_retracting_it_leaves(user):
    """Where the server notifies retractions (Prosody, ejabberd 24.12) the daemon polls
    nothing and leaves on the notification; elsewhere (ejabberd 23.01) it polls."""
    d = user.start()
    user.wait_daemon_online()
    room = user.room()

    user.phone.publish_bookmark(room, nick="live")
    user.wait_joined(room, "live")

    user.phone.retract_bookmark(room)
    user.wait_left(room)
    polling = d.grep(r"server does not push every bookmark change: polling")
    assert bool(polling) != user.server.retract_notifications, polling


@pytest.mark.interop
def test_autojoin_false_leaves_and_true_joins_again(user):
    room = user.room()
    user.phone.publish_bookmark(room, nick="toggle")
    user.start()
    user.wait_joined(room, "toggle")

    user.phone.publish_bookmark(room, autojoin=False, nick="toggle")
    user.wait_left(room)

    user.phone.publish_bookmark(room, nick="toggle")
    user.wait_joined(room, "toggle")


@pytest.mark.interop
def test_nick_changed_in_the_bookmark_changes_the_nick_in_the_room(user):
    room = user.room()
    user.phone.publish_bookmark(room, nick="before")
    user.start()
    user.wait_joined(room, "before")
    mark = len(user.bob.presences)

    user.phone.publish_bookmark(room, nick="after")

    user.wait_joined(room, "after")
    assert "before" not in user.bob.occupants(room)
    # A nick change (XEP-0045 §7.6: status 303), not a leave and a new join.
    gone = user.bob.wait_presence(
        lambda p: str(p["from"]) == f"{room}/before" and p["type"] == "unavailable", since=mark
    )
    assert 303 in muc_codes(gone)


@pytest.mark.interop
def test_room_password_changed_then_bookmark_updated_rejoins_with_the_new_one(user, client):
    room = user.room(password="pw-one")
    user.phone.publish_bookmark(room, nick="keeper", password="pw-one")
    user.start()
    user.wait_joined(room, "keeper")

    user.set_room_password(room, "pw-two")
    mark = len(user.bob.presences)
    user.phone.publish_bookmark(room, nick="keeper", password="pw-two")

    # It leaves (a rejoin is the only way to hand a room a password) and gets back in.
    user.bob.wait_presence(
        lambda p: str(p["from"]) == f"{room}/keeper" and p["type"] == "unavailable", since=mark
    )
    user.wait_joined(room, "keeper")
    with pytest.raises(StanzaError) as refused:  # the old password no longer opens it
        client(user.server).join(room, "old-password", password="pw-one")
    assert refused.value.condition == "not-authorized"


@pytest.mark.interop
def test_wrong_password_then_the_right_one_in_the_bookmark_gets_in(user):
    room = user.room(password="right-pw")
    user.phone.publish_bookmark(room, nick="late", password="wrong-pw")
    d = user.start()
    d.wait_log(rf"room state room={room} from=joining to=gave-up")  # refused: not-authorized

    user.phone.publish_bookmark(room, nick="late", password="right-pw")

    user.wait_joined(room, "late")


def test_without_retract_notifications_a_removal_is_noticed_within_a_minute(ejabberd, make_user):
    """ejabberd 23.01 pushes no retracts: with the default poll interval the daemon still
    leaves a room whose bookmark another client removed within 60 s (the target)."""
    user = make_user(ejabberd)
    room = user.room()
    user.phone.publish_bookmark(room, nick="polled")
    user._daemon(ejabberd, user.account, resource=user.resource)  # the default config
    user.wait_joined(room, "polled")
    user.phone.retract_bookmark(room)
    started = time.monotonic()
    user.wait_left(room, timeout=60)
    assert time.monotonic() - started <= 60


def test_a_bookmark_nick_is_the_one_the_room_sees(user):
    """A fullwidth Ａlice is Alice on the wire: compared raw, it was never the nick held (a
    regain for ever); a soft hyphen prepares to nothing: it joined the bare room JID and
    retried for ever, instead of being skipped."""
    wide, soft = user.room(), user.room()
    user.phone.publish_bookmark(wide, nick="\uff21lice")
    user.phone.publish_bookmark(soft, nick="\u00ad")
    d = user.start()
    user.wait_joined(wide, "Alice")
    d.wait_log(rf"bookmark skipped item={soft} .*resourcepart")
    user.barrier()
    assert user.daemon_nick(soft) is None
    assert not d.grep(r"nick regain|to=backoff")
