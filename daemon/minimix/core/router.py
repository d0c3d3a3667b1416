"""The relay router: each room message is logged once and relayed to the online clients
whose mode selects it (see core.relay for the policy, core.ledger for delivery)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from minimix.core import actions as A
from minimix.core.events import RoomMessage, Stored
from minimix.core.ledger import Ledger
from minimix.core.relay import ClientSettings, Incoming, Mode, Seen, config_mode, wants
from minimix.core.types import RoomsView

REMEMBERED = 10_000  # relays (for replies) and own posts (for echoes) kept in memory


@dataclass(frozen=True, slots=True)
class Target:
    """What a relay id stands for, for a reply to it: where the answer goes."""

    room: str
    nick: str | None
    stanza_id: str | None
    private: bool


def _digest(what: str) -> str:
    return hashlib.blake2b(what.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def private_key(msg: RoomMessage) -> str:
    """The de-duplication key of a private message: who, the stanza's id, and its text."""
    return "pm:" + _digest("\0".join(x or "" for x in (msg.nick, msg.message_id, msg.stanza_id, msg.origin_id,
                                                         msg.body)))


def message_key(kind: str, what: str) -> str:
    """The de-duplication key of a room message: its kind ("sid", "oid", "msg") and a hash of
    what identifies it.  A hash, fixed-size: the keys are kept per room in memory and with
    each message in the log, and what identifies a message without ids is its text
    (whatever its sender put there).  An older minimix kept ``kind:what`` itself: see
    :func:`current_key`."""
    return f"{kind}#{_digest(what)}"


def current_key(key: str) -> str:
    """A key read back from the log, as this minimix makes it: a room's history asked again
    after an upgrade matches what an older minimix logged (``sid:ID``, ``oid:ID``,
    ``msg:NICK:ID:BODY:SUBJECT``); ``pm:`` keys were hashes already."""
    kind, colon, what = key.partition(":")
    return message_key(kind, what) if colon and kind in ("sid", "oid", "msg") else key


def dedup_key(msg: RoomMessage) -> str:
    """What identifies a message: the room's archive id; without one (a room without
    stanza-ids, subject changes on Prosody) the sender's origin-id, else what it says and
    who.  A private message's ids are the sender's own (the room stamps none on it): it is
    one message per sender, id and text, whatever ids it claims."""
    if msg.private:
        return private_key(msg)
    if msg.stanza_id:
        return message_key("sid", msg.stanza_id)
    if msg.origin_id:
        return message_key("oid", msg.origin_id)
    return message_key("msg", f"{msg.nick}:{msg.message_id}:{msg.body}:{msg.subject}")


def said_at(msg: RoomMessage, now: float) -> float:
    """When a room message was said, on the room's word only, and never later than now.

    The room's word is the time its archive gives a message, or the one it gives a message
    of the history it replays at a join.  A live message, or a private one, was said when
    it came: whatever <delay/> it carries is the sender's (an occupant can date his line
    2999, and a room cursor in 2999 catches up nothing, a logged line in 2999 is never
    pruned).  A room's clock ahead of ours is clamped too."""
    if msg.stamp is None or msg.private or not (msg.archived or msg.history):
        return now
    return min(msg.stamp, now)


def room_label(room: str) -> str:
    return room.split("@", 1)[0]


ME = "/me "  # XEP-0245: the body is an action of its sender


def fallback_text(msg: RoomMessage) -> str:
    """What a client shows of a relay: room, nick and text first, as one line reads.

    An action ("/me waves") reads as the room shows it ("* bob waves"): the relay's sender
    is the user's own account, so a "/me" left in the text would either show as typed or be
    taken for the user's own action."""
    label, nick = room_label(msg.room), msg.nick or "?"
    if msg.body is None and msg.subject is not None and not msg.private:
        return f"[{label}] {nick} set the subject: {msg.subject}"
    who = f"{nick} (private)" if msg.private else nick
    if msg.body is not None and msg.body.startswith(ME):
        return f"[{label}] * {who} {msg.body[len(ME):]}"
    return f"[{label}] {who}: {msg.body}"


def _bounded_put(d: OrderedDict, key: str, value: object) -> None:
    d[key] = value
    while len(d) > REMEMBERED:
        d.popitem(last=False)


class Router:
    def __init__(
        self,
        ledger: Ledger,
        rooms: RoomsView,
        online: Collection[str],
        noted: Callable[[RoomMessage, float], tuple[str | None, float] | None],
        globs: Mapping[str, str] | None = None,
        server_delivers: Callable[[], bool] = lambda: True,
    ) -> None:
        self.ledger = ledger
        self.rooms = rooms
        self.online = online  # the clients online now (core.presence)
        self.server_delivers = server_delivers  # a resource would get what goes to the bare JID
        self.store_mentions = True  # [relay] offline_mentions = "store"
        self._noted = noted  # the room's catch-up cursor after this message, if it moves (core.catchup)
        self.globs = dict(globs or {})  # [relay.clients]
        self.settings: dict[str, ClientSettings] = {}
        self.seen = Seen()
        self.targets: OrderedDict[str, Target] = OrderedDict()  # relay id → where a reply goes
        self.posted: OrderedDict[str, str] = OrderedDict()  # origin-id → the client that posted
        # Read markers (XEP-0490), per room: the last message of the log the user has read on
        # some client, and how many of the room's messages came after it.  One per room of
        # the log, at most.
        self.read: dict[str, int] = {}
        self.unread: dict[str, int] = {}

    # -- what each client wants -------------------------------------------------------

    def settings_of(self, client: str) -> ClientSettings:
        return self.settings.get(client) or ClientSettings()

    def mode(self, client: str, room: str) -> Mode:
        return self.settings_of(client).mode(room, config_mode(client, self.globs))

    def wanted(self, client: str, room: str, body: str | None, subject: str | None, private: bool) -> bool:
        return wants(self.mode(client, room), Incoming(room, body, subject, private), self.rooms.nicks(room),
                     self.settings_of(client).keywords)

    # -- taking a message ---------------------------------------------------------------

    def take(self, msg: RoomMessage, now: float) -> list[A.Action]:
        """Log a room message once, and relay it to the online clients that want it.

        Order of effects (the app carries them out in this order): the message is on record
        in the log (with the room's archive cursor) *before* any relay of it goes out.  A
        crash in between loses nothing — the relay is still owed and goes out when the
        client is next seen (playback) — whereas sending first could lose the message for
        every offline client.  The relay itself is on record as "in flight" before it is
        sent, and the server's XEP-0198 count decides after a crash whether it arrived.
        ("On record": in the store's journal, which the next start replays; SQLite commits
        the writes right after the sends, off the relay's path.)
        """
        key = dedup_key(msg)
        if not self.seen.add(msg.room, [key]):
            return []  # a duplicate (a resent history, a resumed stream, archive and live)
        actions: list[A.Action] = []
        stamp = said_at(msg, now)
        # A private message's ids are its sender's claims: not the room's, not logged as one.
        stanza_id = None if msg.private else msg.stanza_id
        cursor = self._noted(msg, stamp)
        seq = None
        if msg.body is not None or msg.subject is not None:
            logged = self.ledger.log(msg.room, stanza_id, msg.nick, msg.private, stamp, msg.body,
                                     msg.subject, fallback_text(msg), msg.ref, key, cursor)
            seq = logged.seq
            actions.append(logged)
            if not msg.private and msg.room in self.unread:
                self.unread[msg.room] += 1
        elif cursor is not None:  # nothing to log (e.g. an empty message with an id): the cursor alone
            actions.append(A.SaveRoom(msg.room, cursor=cursor))
        # Our own echo: our origin-id, from our occupant (anyone can copy an origin-id).
        sender = self.posted.get(msg.origin_id) if msg.origin_id else None
        if sender is not None and (msg.private or msg.nick not in self.rooms.nicks(msg.room)):
            sender = None
        # (A client whose playback waits for the server's answer about a stored message gets
        # nothing live meanwhile: its cursor must not pass what the playback still owes it;
        # what comes now is in the log, and in that playback, in order.)
        held = self.ledger.held_back
        clients = [c for c in self.online
                   if c != sender and c not in held and self.wanted(c, msg.room, msg.body, msg.subject, msg.private)]
        if clients:
            target = Target(msg.room, msg.nick, stanza_id, msg.private)
            actions.append(self._relay(clients, msg.room, fallback_text(msg), msg.ref, msg.private, seq, stamp,
                                       target))
        if seq is not None and msg.body is not None and self.ledger.away and self.store_mentions:
            actions += self._store(msg, seq, stamp)
        return actions

    def _store(self, msg: RoomMessage, seq: int, stamp: float) -> list[A.Action]:
        """A message that selects ``mentions`` clients that are away, when no resource of the
        account would get it from the server now: sent once to the account's bare JID, for
        the server to store (offline storage, the archive) and wake a phone on push.  Clients
        in ``all`` mode get their playback as usual: a phone that wants every line is woken
        by none of them."""
        if self.server_delivers() or not isinstance(msg.ref, str):
            return []
        away = tuple(c for c in self.ledger.away if c not in self.online and self.mode(c, msg.room) is Mode.MENTIONS
                     and self.wanted(c, msg.room, msg.body, msg.subject, msg.private))
        if not away:
            return []
        push_id = self.ledger.push(away, msg.room, seq)
        return [A.Store(msg.room, push_id, fallback_text(msg), msg.ref, seq, stamp, away)]

    def read_at(self, room: str, seq: int, unread: int) -> None:
        """A read marker found in the log: playback skips the room's messages up to it (a
        marker never moves back: a client behind the others does not un-read)."""
        if seq > self.read.get(room, 0):
            self.read[room], self.unread[room] = seq, unread

    def _relay(self, clients: list[str], room: str, text: str, ref: object, private: bool, seq: int | None,
               stamp: float, target: Target) -> A.Relay:
        deliveries, changes = [], []
        for client in clients:
            relay_id, sent = self.ledger.send(client, room, seq)
            deliveries.append((client, relay_id))
            changes += sent
            _bounded_put(self.targets, relay_id, target)
        return A.Relay(room, tuple(deliveries), text, ref, private, seq=seq, stamp=stamp, changes=tuple(changes))

    def replay(self, client: str, m: Stored) -> A.Relay:
        """A message of the log, relayed again to one client (its playback)."""
        return self._relay([client], m.room, m.text, m.ref, m.private, m.seq, m.stamp,
                           Target(m.room, m.nick, None, m.private))

    def playback_wants(self, client: str) -> Callable[[Stored], bool]:
        """What a client's playback sends: what its mode selects and the user has not read
        on another client (a room's marker says nothing of its private messages)."""
        return lambda m: ((m.private or m.seq > self.read.get(m.room, 0))
                          and self.wanted(client, m.room, m.body, m.subject, m.private))

    def known(self, room: str, keys: tuple[str, ...]) -> list[A.Action]:
        """Keys of messages already logged (a room's history asked again): not taken twice."""
        for key in keys:
            self.seen.add(room, [current_key(key)])
        return []

    def tell(self, room: str, text: str) -> list[A.Action]:
        """A notice about a room to every online client that follows it."""
        return [A.Reply(c, text) for c in self.online if self.mode(c, room) is not Mode.OFF]

    def posting(self, origin_id: str, client: str) -> None:
        """A client posts in a room with this origin-id: its echo is not relayed back to it."""
        _bounded_put(self.posted, origin_id, client)
