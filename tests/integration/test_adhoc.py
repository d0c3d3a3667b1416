"""XEP-0050 ad-hoc commands: the chat commands as forms, for the user's own clients only.

Each command with a choice is two steps: `execute` returns a form (list-single fields) and
a sessionid, the submitted form completes the command with a note. Anyone who is not one
of the user's other resources sees no commands and is refused (forbidden).
"""

from __future__ import annotations

import pytest

from harness import NS, StanzaError, el_of, tostring

NICK = "Ally"
NODES = {"relay", "keywords", "join", "leave", "nick", "say", "rooms", "status"}
DEFAULT = "(this client's default)"


def joined_room(user, prefix: str = "kitchen"):
    room = user.room(prefix=prefix)
    user.phone.publish_bookmark(room, nick=NICK)
    d = user.start()
    user.wait_joined(room, NICK)
    return d, room


def command_list(c, jid: str) -> dict[str, str]:
    """node -> name of the commands `jid` lists for `c` (disco#items on the commands node)."""
    result = c.iq(f"<query xmlns='{NS['disco_items']}' node='{NS['commands']}'/>", jid)
    return {
        i.get("node"): i.get("name")
        for i in el_of(result).iterfind("disco_items:query/disco_items:item", NS)
    }


def execute(
    c,
    jid: str,
    node: str,
    action: str = "execute",
    sessionid: str | None = None,
    fields: dict[str, str] | None = None,
):
    """One ad-hoc request; the <command/> element of the answer."""
    sid = f" sessionid='{sessionid}'" if sessionid else ""
    form = ""
    if fields is not None:
        form = (
            f"<x xmlns='{NS['data']}' type='submit'>"
            + "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
            + "</x>"
        )
    result = c.iq(
        f"<command xmlns='{NS['commands']}' node='{node}' action='{action}'{sid}>{form}</command>",
        jid,
        "set",
    )
    return el_of(result).find("commands:command", NS)


def form_fields(command) -> dict[str, dict]:
    return {
        f.get("var"): {
            "type": f.get("type"),
            "options": [
                o.findtext("data:value", namespaces=NS) for o in f.findall("data:option", NS)
            ],
            "value": f.findtext("data:value", namespaces=NS),
        }
        for f in command.iterfind("data:x/data:field", NS)
    }


def run_form(c, jid: str, node: str, values: dict[str, str]) -> str:
    """Both steps: get the form, submit `values`; the note of the completed command."""
    first = execute(c, jid, node)
    assert first.get("status") == "executing" and first.get("sessionid"), tostring(first)
    done = execute(c, jid, node, "complete", first.get("sessionid"), values)
    assert done.get("status") == "completed", tostring(done)
    return done.findtext("commands:note", namespaces=NS)


@pytest.mark.interop
def test_only_the_users_other_clients_see_and_run_the_commands(user, client, server):
    _, room = joined_room(user)
    laptop = user.other("laptop")
    bob = user.bob
    mallory = client(server, resource="laptop")  # a stranger with the laptop's resource name

    listed = command_list(laptop, user.full_jid)
    assert set(listed) == NODES, listed
    assert all(listed.values()), listed  # each has a human name
    assert NS["commands"] in laptop.disco_info(user.full_jid).features

    for stranger in (bob, mallory):
        assert command_list(stranger, user.full_jid) == {}
        for node in ("relay", "status", "say"):
            with pytest.raises(StanzaError) as refused:
                execute(stranger, user.full_jid, node)
            assert refused.value.condition == "forbidden", node
        with pytest.raises(StanzaError) as refused:  # even a submitted form with a sessionid
            execute(
                stranger,
                user.full_jid,
                "relay",
                "complete",
                "0123456789abcdef",
                {"mode": "all", "room": DEFAULT},
            )
        assert refused.value.condition == "forbidden"
        # Every IQ gets an answer: unknown payloads an error, never silence.
        with pytest.raises(StanzaError):
            stranger.iq("<query xmlns='urn:example:nothing'/>", user.full_jid)
        with pytest.raises(StanzaError):
            stranger.iq("<query xmlns='urn:example:nothing'/>", user.full_jid, "set")
        assert stranger.ping(user.full_jid) == "result"

    # Nothing changed: the laptop still gets no relays.
    user.command(user.phone, "relay all")
    user.bob.say(room, "marker")
    user.wait_relay(user.phone, "marker")
    assert laptop.ping(user.full_jid) == "result"
    assert user.relays(laptop) == []
    assert user.command(laptop, "status").endswith("relay for this client: off")
    with pytest.raises(StanzaError) as unknown:
        execute(laptop, user.full_jid, "no-such-command")
    assert unknown.value.condition == "item-not-found"
    with pytest.raises(StanzaError):  # an unknown IQ from the user's own client: an error too
        laptop.iq("<query xmlns='urn:example:nothing'/>", user.full_jid, "set")
    info = laptop.disco_info(user.full_jid, node="relay")  # each command node answers disco
    assert NS["data"] in info.features, info


@pytest.mark.interop
def test_relay_through_the_two_step_form_sets_the_mode(user):
    _, room = joined_room(user)
    laptop = user.other("laptop")

    first = execute(laptop, user.full_jid, "relay")
    assert first.get("status") == "executing" and first.get("sessionid"), tostring(first)
    fields = form_fields(first)
    assert fields["mode"]["type"] == "list-single"
    assert set(fields["mode"]["options"]) == {"all", "mentions", "off"}
    assert fields["room"]["type"] == "list-single"
    assert fields["room"]["options"] == [DEFAULT, room]
    assert first.find("commands:actions", NS) is not None

    done = execute(
        laptop,
        user.full_jid,
        "relay",
        "complete",
        first.get("sessionid"),
        {"mode": "all", "room": DEFAULT},
    )
    assert done.get("status") == "completed", tostring(done)
    assert done.findtext("commands:note", namespaces=NS) == "relay for this client: all (default)"

    user.bob.say(room, "through the form")
    user.wait_relay(laptop, "through the form")
    # A per-room choice through the same form.
    assert run_form(laptop, user.full_jid, "relay", {"mode": "off", "room": room}) == (
        f"relay for this client: off in {room}"
    )
    user.bob.say(room, "not for the laptop")
    user.command(user.phone, "relay all")
    user.bob.say(room, "for the phone")
    user.wait_relay(user.phone, "for the phone")
    assert laptop.ping(user.full_jid) == "result"
    assert user.relayed(laptop) == ["through the form"]
    # The answers came as notes of the commands, not as chat messages as well.
    assert [m["body"] for m in laptop.messages if user.is_reply(m)] == []


def test_the_other_commands_through_forms(user):
    _, room = joined_room(user)
    laptop = user.other("laptop")
    jid = user.full_jid

    status = execute(laptop, jid, "status")  # nothing to choose: one step
    assert status.get("status") == "completed", tostring(status)
    assert status.findtext("commands:note", namespaces=NS).startswith("connected; 1/1 rooms joined")
    rooms = execute(laptop, jid, "rooms").findtext("commands:note", namespaces=NS)
    assert rooms.startswith(f"{room}: joined as {NICK}"), rooms

    assert run_form(laptop, jid, "keywords", {"action": "add", "word": "tea"}) == "keywords: tea"
    assert user.command(laptop, "keywords list") == "keywords: tea"

    assert run_form(laptop, jid, "say", {"room": room, "text": "said by form"}) == f"sent to {room}"
    said = user.bob.wait_groupchat(room, "said by form")
    assert str(said["from"]) == f"{room}/{NICK}"

    garden = user.room(prefix="garden")
    assert run_form(laptop, jid, "join", {"room": garden, "nick": "Gardener"}) == (
        f"bookmarked {garden} with autojoin as Gardener; joining"
    )
    user.wait_joined(garden, "Gardener")
    assert run_form(laptop, jid, "nick", {"room": garden, "nick": "Digger"}) == (
        f"nick in {garden}: Digger"
    )
    user.wait_joined(garden, "Digger")
    assert run_form(laptop, jid, "leave", {"room": garden}) == f"autojoin off for {garden}; leaving"
    user.wait_left(garden)
    assert user.phone.get_bookmarks()[garden].autojoin is False


def test_bad_forms_get_an_error_and_cancel_is_honoured(user):
    _, room = joined_room(user)
    laptop = user.other("laptop")
    jid = user.full_jid

    first = execute(laptop, jid, "relay")
    with pytest.raises(StanzaError) as bad:
        execute(
            laptop,
            jid,
            "relay",
            "complete",
            first.get("sessionid"),
            {"mode": "sometimes", "room": DEFAULT},
        )
    assert bad.value.condition == "bad-request"

    first = execute(laptop, jid, "say")
    with pytest.raises(StanzaError) as bad:  # no text
        execute(laptop, jid, "say", "complete", first.get("sessionid"), {"room": "x"})
    assert bad.value.condition == "bad-request"

    # An action outside the form's options is refused (it once acted as "remove").
    assert run_form(laptop, jid, "keywords", {"action": "add", "word": "zz"}) == "keywords: zz"
    first = execute(laptop, jid, "keywords")
    with pytest.raises(StanzaError) as bad:
        execute(laptop, jid, "keywords", "complete", first.get("sessionid"), {"action": "explode", "word": "zz"})
    assert bad.value.condition == "bad-request"
    assert user.command(laptop, "keywords list") == "keywords: zz"
    # A say form with its text left empty posts nothing.
    answer = run_form(laptop, jid, "say", {"room": room, "text": ""})
    assert answer.startswith("usage: say ROOM TEXT"), answer

    first = execute(laptop, jid, "relay")
    canceled = execute(laptop, jid, "relay", "cancel", first.get("sessionid"))
    assert canceled.get("status") == "canceled", tostring(canceled)
    # A submission without a known session is not carried out: the form comes again.
    again = execute(
        laptop, jid, "relay", "complete", "not-a-session", {"mode": "all", "room": DEFAULT}
    )
    assert again.get("status") == "executing", tostring(again)
    assert user.command(laptop, "status").endswith("relay for this client: off")
