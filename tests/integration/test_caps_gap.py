"""The caps gap: a bookmark published right after the daemon came online is not missed.

PEP pushes bookmark changes only to resources whose entity caps say
``urn:xmpp:bookmarks:1+notify``. On a server that has never seen the daemon's caps hash,
it first asks the daemon (disco#info on the caps node) and subscribes it only after the
answer. A bookmark published between the daemon's initial fetch and that moment is
pushed to nobody: the daemon must fetch again once the server has asked.

The server caches caps by hash, so each test here gets a fresh Prosody: with a second
daemon on the same server there would be no query, hence no gap.
"""

from __future__ import annotations

import re

import pytest

from harness import wait_until
from servers import ProsodyServer


@pytest.fixture
def fresh_prosody(tmp_path_factory):
    why_not = ProsodyServer.available()
    if why_not:
        pytest.skip(why_not)
    server = ProsodyServer(tmp_path_factory.mktemp("fresh-prosody"))
    server.start()
    yield server
    server.stop()


def test_bookmark_published_as_soon_as_the_daemon_is_online_is_joined(fresh_prosody, make_user):
    """As the user meets it: the phone publishes the moment it sees the daemon come online.

    Whether that publish falls into the gap depends on timing (the server's caps query
    and the daemon's initial fetch race with it), so this test alone may pass without
    the re-fetch. It still checks the outcome the user cares about, and, from the
    daemon's log, that a re-fetch followed the server's caps query. The next test holds
    the gap open on purpose, which makes it deterministic.
    """
    user = make_user(fresh_prosody)
    room = user.room()
    # The server's caps query is seen in the daemon's own dump of the stream: only with
    # log_messages (stanza content stays out of the log otherwise).
    d = user.start(extra={"logging": {"level": "debug", "log_messages": True}})

    user.wait_daemon_online()
    user.phone.publish_bookmark(room, nick="quick")

    user.wait_joined(room, "quick")
    caps_query = rf"incoming iq: <iq from='{user.account.jid}' to='{user.full_jid}' .*IQType\.GET.*disco\.xso\.InfoQuery"
    asked = _index(d, caps_query)
    refetch = _index(d, r'bookmark resync reason="caps queried"', since=asked)
    _index(d, r"<6>bookmarks loaded store=xep-0402", since=refetch)


def test_bookmark_published_before_the_servers_caps_query_is_joined(fresh_prosody, make_user):
    """Deterministic: the server holds back the daemon's initial presence (so its caps
    query) until the daemon's first fetch is done and the phone has published a bookmark.

    Holding the presence changes nothing in the daemon; it only makes the server slow
    where a loaded server may be slow anyway. That bookmark reaches the daemon neither
    with its initial fetch (done before) nor as a push (the server does not know the
    daemon wants them yet; the node never sends the last item), only through the
    re-fetch after the caps query: without it the daemon would not join before the
    next periodic resync (900 s).
    """
    server = fresh_prosody
    user = make_user(server)
    room = user.room()
    target = f"{user.full_jid}"
    server.shell(HOLD_PRESENCE.replace("TARGET", target))

    d = user.start()
    d.wait_log(r"<6>bookmarks loaded store=xep-0402 items=0 autojoin=0")
    wait_until(
        lambda: server.shell(">return #_G.minimix_hold.held").split()[-1] == "1",
        message="the server never received the daemon's initial presence",
    )
    assert not user.daemon_presences(), "the presence got through: the gap is not held open"
    user.phone.publish_bookmark(room, nick="patient")

    server.shell(">return _G.minimix_hold.release()")

    user.wait_joined(room, "patient")


def _index(d, pattern: str, since: int = 0) -> int:
    """Wait for an output line at or after index `since` matching `pattern`; its index."""
    rx = re.compile(pattern)

    def find():
        return next((i for i, line in enumerate(d.lines[since:], since) if rx.search(line)), None)

    return wait_until(
        lambda: (i := find()) is not None and (i,),
        message=lambda: f"no line matching {pattern!r} from line {since}; output:\n{d.tail(60)}",
    )[0]


#: Lua for Prosody's admin shell: hold the first available broadcast presence of the
#: session TARGET (a full JID) until minimix_hold.release() runs it through the router.
HOLD_PRESENCE = """>
rawset(_G, "minimix_hold", { held = {}, released = false }); local minimix_hold = _G.minimix_hold;
prosody.hosts["localhost"].events.add_handler("pre-presence/bare", function(event)
  local origin, stanza = event.origin, event.stanza;
  if minimix_hold.released or origin.full_jid ~= "TARGET" then return; end
  if stanza.attr.to == nil and stanza.attr.type == nil then
    table.insert(minimix_hold.held, { origin = origin, stanza = stanza });
    return true;
  end
end, 1000);
function minimix_hold.release()
  minimix_hold.released = true;
  for _, h in ipairs(minimix_hold.held) do prosody.core_process_stanza(h.origin, h.stanza); end
  return #minimix_hold.held;
end
return "installed"
""".replace("\n", " ")
