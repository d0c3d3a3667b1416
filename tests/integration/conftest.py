"""Shared pieces of the daemon's integration tests.

The daemon is only ever driven as a user drives it (a config file and the CLI) and judged
from independent XMPP clients:

- ``phone``: another resource of the daemon's account (slixmpp, advertising
  ``urn:xmpp:bookmarks:1+notify``); it edits the bookmarks, as the user's phone would;
- ``bob``: another account that creates the rooms (he is their owner, so the rooms show
  him the real JID of every occupant) and watches the daemon's occupant come and go;
- more clients of the user (``user.other("laptop")``), which talk to the daemon's full JID
  (``user.command``) and get relays (``user.relays``, ``user.wait_relay``).

The daemon's occupant is recognised by its real full JID (``account/minimix``), not by a
nick, so a join under an unexpected nick is still seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from harness import BOOKMARKS_NODE, NS, DaemonProcess, TestClient, el_of, wait_until
from servers import Account, XmppServer


@dataclass
class User:
    """One daemon user: their account, their phone, their friend bob, their daemons."""

    server: XmppServer
    account: Account
    phone: TestClient
    bob: TestClient
    _daemon: object = field(repr=False)
    resource: str = "minimix"
    _client: object = field(default=None, repr=False)

    @property
    def full_jid(self) -> str:
        return f"{self.account.jid}/{self.resource}"

    # -- rooms -------------------------------------------------------------------------

    def room(self, password: str | None = None, prefix: str = "room") -> str:
        """A fresh room that exists (bob created it and stays in it as its owner)."""
        room = self.server.new_room(prefix)
        self.bob.join(room, "bob")
        if password is not None:
            self.set_room_password(room, password)
        return room

    def set_room_password(self, room: str, password: str) -> None:
        """As the owner (ejabberd needs the flag as well as the secret)."""
        self.bob.configure_room(
            room,
            {"muc#roomconfig_passwordprotectedroom": True, "muc#roomconfig_roomsecret": password},
        )

    def daemon_nick(self, room: str) -> str | None:
        """The daemon's nick in `room` as bob sees it (by real JID), or None."""
        for nick, occupant in self.bob.occupants(room).items():
            if occupant.jid == self.full_jid:
                return nick
        return None

    def wait_joined(self, room: str, nick: str | None = None, timeout: float | None = None) -> str:
        """Wait until bob sees the daemon in `room` (under `nick`, if given); its nick."""

        def joined():
            current = self.daemon_nick(room)
            return current if current is not None and nick in (None, current) else None

        return wait_until(
            joined,
            timeout,
            message=lambda: (
                f"the daemon never joined {room} as {nick or 'any nick'}; "
                f"bob sees {self._seen(room)}"
            ),
        )

    def wait_left(self, room: str, timeout: float | None = None) -> None:
        wait_until(
            lambda: self.daemon_nick(room) is None,
            timeout,
            message=lambda: f"the daemon never left {room}; bob sees {self._seen(room)}",
        )

    def _seen(self, room: str) -> dict[str, str | None]:
        return {n: o.jid for n, o in self.bob.occupants(room).items()}

    def barrier(self, **bookmark) -> str:
        """Publish an autojoin bookmark for a fresh room and wait for the daemon to join it.

        The daemon handles what reaches it in order, so whatever reached it before this
        bookmark's notification has been handled once this returns: the way to check that
        something did *not* happen, without sleeping."""
        room = self.room(prefix="barrier")
        self.phone.publish_bookmark(room, **bookmark)
        self.wait_joined(room)
        return room

    def settle(self) -> None:
        """A round trip through the daemon, then one through bob: what the daemon sent
        before answering the phone's ping has been processed by the server, and what that
        sent bob has been read by bob's client."""
        assert self.phone.ping(self.full_jid) == "result"
        assert self.bob.ping(self.server.domain) == "result"

    # -- the user's other clients and what the daemon tells them ----------------------------

    def other(self, resource: str, *, carbons: bool = False, **kw) -> TestClient:
        """Another connected client of the user (a resource of the account); `carbons`:
        it enables XEP-0280 carbons first. `kw`: the `client` fixture's (show, status…)."""
        c = self._client(self.server, self.account, resource, **kw)
        if carbons:
            c.iq(f"<enable xmlns='{NS['carbons']}'/>", type_="set")
        if kw.get("presence", True):
            # A running daemon has this client's presence once it answers a ping sent after
            # it (in-order delivery): from then on it counts the client as online. (Without
            # a daemon the server answers the ping with an error: no harm.)
            c.ping(self.full_jid)
        return c

    def is_relay(self, m) -> bool:
        return (
            str(m["from"]) == self.full_jid and el_of(m).find("forward:forwarded", NS) is not None
        )

    def is_reply(self, m) -> bool:
        """A chat message from the daemon that is not a relay: an answer to a command."""
        return (
            str(m["from"]) == self.full_jid
            and m["type"] == "chat"
            and el_of(m).find("forward:forwarded", NS) is None
        )

    @staticmethod
    def forwarded_message(m):
        """The original room message a relay carries (an ElementTree element)."""
        return el_of(m).find("forward:forwarded/client:message", NS)

    def relays(self, c: TestClient, since: int = 0) -> list:
        return [m for m in c.messages[since:] if self.is_relay(m)]

    def relayed(self, c: TestClient, since: int = 0) -> list[str | None]:
        """The bodies of the room messages relayed to `c`, in order (None: no body)."""
        return [
            self.forwarded_message(m).findtext("client:body", namespaces=NS)
            for m in self.relays(c, since)
        ]

    def wait_relay(self, c: TestClient, body: str, since: int = 0):
        """The relay to `c` of the room message with exactly this body."""
        return c.wait_message(
            lambda m: (
                self.is_relay(m)
                and self.forwarded_message(m).findtext("client:body", namespaces=NS) == body
            ),
            since=since,
        )

    def from_daemon(self, c: TestClient, since: int = 0) -> list:
        """Every message `c` got from the daemon: directly, or as a carbon copy (sent or
        received) of one the daemon sent to another client."""
        found = []
        for m in c.messages[since:]:
            if str(m["from"]) == self.full_jid:
                found.append(m)
            for kind in ("sent", "received"):
                inner = el_of(m).find(f"carbons:{kind}/forward:forwarded/client:message", NS)
                if inner is not None and inner.get("from") == self.full_jid:
                    found.append(m)
        return found

    def command(self, c: TestClient, text: str) -> str:
        """Send a chat command from `c` to the daemon's full JID; the body of its answer."""
        mark = len(c.messages)
        c.send_message(self.full_jid, text)
        answer = c.wait_message(self.is_reply, since=mark, message=f"{c.jid}: no answer: {text!r}")
        return answer["body"]

    # -- the daemon ----------------------------------------------------------------------

    def start(self, extra: dict | None = None, **kw) -> DaemonProcess:
        """Start the daemon for this account (python -m minimix run --config FILE).

        On a server without retract notifications (ejabberd 23.01) a removed bookmark is
        noticed by polling, every `[bookmarks] poll_interval_s` (30 s by default): tests use
        2 s unless they set it (one test checks the default's bound)."""
        if not self.server.retract_notifications:
            extra = dict(extra or {})
            extra["bookmarks"] = {"poll_interval_s": 2, **extra.get("bookmarks", {})}
        return self._daemon(self.server, self.account, extra=extra, resource=self.resource, **kw)

    def start_as(self, account: Account, extra: dict | None = None, **kw) -> DaemonProcess:
        """Start a daemon with other credentials (e.g. a wrong password)."""
        return self._daemon(self.server, account, extra=extra, resource=self.resource, **kw)

    def daemon_presences(self, type_: str | None = None) -> list:
        """Presences the phone received from the daemon's resource (type_ "" = available)."""
        return [
            p
            for p in self.phone.presences
            if str(p["from"]) == self.full_jid and (type_ is None or p["type"] == type_)
        ]

    def wait_daemon_online(self, since: int = 0):
        """Wait for the daemon's available presence, as the phone sees it."""
        return self.phone.wait_presence(
            lambda p: str(p["from"]) == self.full_jid and p["type"] != "unavailable",
            since=since,
            message=f"the phone never saw {self.full_jid} come online",
        )


@pytest.fixture
def make_user(client, daemon):
    """make_user(server) -> a User with a fresh account, a connected phone (whose caps the
    server has queried, so +notify bookmark events reach it) and a connected bob."""

    def make(server: XmppServer, notify: bool = True, account: Account | None = None) -> User:
        account = account or server.new_account()
        phone = client(server, account, "phone", notify=[BOOKMARKS_NODE] if notify else [])
        if notify:
            phone.wait_caps_queried()
        bob = client(server, resource="bob")
        return User(server, account, phone, bob, daemon, _client=client)

    return make


@pytest.fixture
def user(server, make_user) -> User:
    return make_user(server)
