"""The user's own clients: who is online, what each wants relayed, and what they ask for.

Only resources of the account itself ever reach this module (the edge drops everything
else): they get relays, their text is a command or a reply to a relay, and their presence
is mirrored into the rooms.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from minimix.core import actions as A
from minimix.core import commands as C
from minimix.core.events import (
    CatchUpDone,
    CatchUpPage,
    ClientCommand,
    ClientPresence,
    ClientsAway,
    ClientText,
    PlaybackLoaded,
    RelayBounced,
    RelayReceived,
    RelaysAcked,
    RoomMessage,
    Stored,
    TimerKind,
)
from minimix.core.relay import ClientSettings, Incoming, Mode, Seen, config_mode, wants

if TYPE_CHECKING:
    from minimix.core.engine import Engine

PRESENCE_DEBOUNCE_S = 2.0
# How available each show is, for "the most available of the user's clients".
AVAILABILITY = {"chat": 5, "available": 4, "away": 3, "dnd": 2, "xa": 1}
REMEMBERED = 10_000  # relays (for replies) and own posts (for echoes) kept in memory
AWAITING_MAX = 2_000  # relays waiting for a receipt, at most (beyond: the server's ack)
# Live messages held back in a room while its archive is read, at most: beyond, the
# catch-up is given up (an archive that slow, a room that busy) and they go out at once.
HELD_MAX = 1_000
# A client away this many times the log's retention is forgotten whole (see Clients.expire).
FORGOTTEN_AFTER_RETENTIONS = 10


@dataclass(slots=True)
class Online:
    show: str = "available"
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a command cannot be carried out, in words for the user."""

    text: str


@dataclass(frozen=True, slots=True)
class Relayed:
    """What a relay id stands for: where a reply to it goes, and what a bounce owes again."""

    room: str
    nick: str | None
    stanza_id: str | None
    private: bool
    client: str | None = None
    seq: int | None = None


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


def _bounded_put(d: OrderedDict, key: str, value: object) -> None:
    d[key] = value
    while len(d) > REMEMBERED:
        d.popitem(last=False)


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


PLAYBACK_PAGE = 500  # messages read from the log at a time for a playback


@dataclass
class Playback:
    """A returning client's playback, read from the log page by page (oldest first).

    What was owed from before the client left (``mark``: the last message it was there for;
    relays in flight at a crash, or bounced) goes out whole, as it is read: nothing the
    server did not deliver is ever dropped.  Of what came while it was away, it gets the
    newest ``playback_max`` that its mode selects, after one notice of how many earlier
    ones are not shown (a bouncer's ring buffer)."""

    mark: int | None
    kept: deque[Stored]
    skipped: int = 0
    sent: int = 0


@dataclass
class Clients:
    engine: Engine
    rng: random.Random
    globs: Mapping[str, str] = field(default_factory=dict)  # [relay.clients]
    offline_status: str = "not connected"
    online: dict[str, Online] = field(default_factory=dict)
    settings: dict[str, ClientSettings] = field(default_factory=dict)
    seen: Seen = field(default_factory=Seen)
    relayed: OrderedDict[str, Relayed] = field(default_factory=OrderedDict)
    posted: OrderedDict[str, str] = field(default_factory=OrderedDict)  # origin-id → resource
    mirrored: tuple[str, str | None] | None = None
    presence_armed: bool = False
    # delivery: the message log, cursors, catch-up
    catchup_max: int = 500
    playback_max: int = 200
    next_seq: int = 1  # the next message's place in the log
    # The last archive id seen, with its time; (None, time) where there is no id to go by:
    # a first join not yet looked at, an archive that was empty then, a room without one.
    room_cursor: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    room_mam: dict[str, bool] = field(default_factory=dict)
    provisional: dict[str, tuple[None, float]] = field(default_factory=dict)  # first joins' cursors
    catching_up: dict[str, list[RoomMessage]] = field(default_factory=dict)  # live, held back
    catch_up_tokens: dict[str, int] = field(default_factory=dict)  # room → its current CatchUp's token
    catch_up_count: int = 0
    cursors: dict[tuple[str, str], int] = field(default_factory=dict)  # (client, room) → seq delivered
    offline_since: dict[str, int] = field(default_factory=dict)  # client → last seq before it left
    inflight: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # relay id → (client, room, seq)
    # XEP-0184: clients seen answering a relay's receipt request; for them the server's ack
    # is not delivery: their relays wait here, still in flight in the store, for the receipt.
    receipts: set[str] = field(default_factory=set)
    awaiting: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # relay id → (client, room, seq)
    deferred_playback: set[str] = field(default_factory=set)  # came back before the bookmarks
    playbacks: dict[str, Playback] = field(default_factory=dict)  # client → its playback being read

    # -- relay ------------------------------------------------------------------------

    def settings_of(self, resource: str) -> ClientSettings:
        return self.settings.get(resource) or ClientSettings()

    def mode(self, resource: str, room: str) -> Mode:
        return self.settings_of(resource).mode(room, config_mode(resource, self.globs))

    def room_message(self, msg: RoomMessage, now: float) -> list[A.Action]:
        room = self.engine.rooms.get(msg.room)
        if room is None:
            return []
        room.touch(now)
        if not msg.archived and msg.room in self.catching_up:
            held = self.catching_up[msg.room]
            held.append(msg)  # after the archive's, to keep the order
            return self._give_up_catch_up(msg.room, now) if len(held) >= HELD_MAX else []
        return self._take(msg, now)

    def _give_up_catch_up(self, room: str, now: float) -> list[A.Action]:
        """Too much live traffic held back while the room's archive is read: what the
        archive still has to give is given up (its answer, late, is stale now), and the
        live messages go out, in order."""
        self.catch_up_tokens.pop(room, None)
        held = self.catching_up.pop(room)
        actions: list[A.Action] = [A.Note("warning", "catch-up given up: too many live messages held back meanwhile",
                                          {"room": room, "held": len(held)})]
        for msg in held:
            actions += self._take(msg, now)
        return actions

    def _take(self, msg: RoomMessage, now: float) -> list[A.Action]:
        """Log a room message once, and relay it to the online clients that want it.

        Order of effects (the app carries them out in this order): the message is on record
        in the log (with the room's archive cursor) *before* any relay of it goes out.  A
        crash in between loses nothing — the relay is still owed and goes out when the
        client is next seen (playback) — whereas sending first could lose the message for
        every offline client.  The relay itself is on record as "in flight" before it is
        sent, and the server's XEP-0198 count decides after a crash whether it arrived.
        ("On record": in the store's journal, which the next start replays; SQLite commits
        the writes right after the sends, off the relay's path.  See Store.grouped.)
        """
        # The room's archive id identifies a message; without one (a room without stanza-ids,
        # subject changes on Prosody) the sender's origin-id, else what it says and who.
        # A private message's ids are the sender's own (the room stamps none on it): it is
        # one message per sender, id and text, whatever ids it claims.
        if msg.private:
            keys = [private_key(msg)]
        elif msg.stanza_id:
            keys = [message_key("sid", msg.stanza_id)]
        elif msg.origin_id:
            keys = [message_key("oid", msg.origin_id)]
        else:
            keys = [message_key("msg", f"{msg.nick}:{msg.message_id}:{msg.body}:{msg.subject}")]
        if not self.seen.add(msg.room, keys):
            return []  # a duplicate (a resent history, a resumed stream, archive and live)
        actions: list[A.Action] = []
        stamp = said_at(msg, now)
        # A private message's ids are its sender's claims: not the room's, not logged as one.
        stanza_id = None if msg.private else msg.stanza_id
        # The room's cursor is decided here only, for memory and disk alike; on disk it
        # moves with the message it is for, in one write.
        cursor = self._cursor_after(msg, stanza_id, stamp)
        if cursor is not None:
            self.room_cursor[msg.room] = cursor
        seq = None
        if msg.body is not None or msg.subject is not None:
            seq = self.next_seq
            self.next_seq += 1
            actions.append(A.StoreMessage(seq, msg.room, stanza_id, msg.nick, msg.private, stamp,
                                          msg.body, msg.subject, fallback_text(msg), msg.ref, keys[0], cursor))
        elif cursor is not None:
            actions.append(A.SaveRoom(msg.room, cursor=cursor))
        # Our own echo: our origin-id, from our occupant (anyone can copy an origin-id).
        sender = self.posted.get(msg.origin_id) if msg.origin_id else None
        if sender is not None and (msg.private or msg.nick not in self._nicks(msg.room)):
            sender = None
        deliveries = [
            (resource, self._relay_id(resource, msg.room, seq))
            for resource in self.online
            if resource != sender and self._wanted(resource, msg.room, msg.body, msg.subject, msg.private)
        ]
        if deliveries:
            for resource, relay_id in deliveries:
                _bounded_put(self.relayed, relay_id,
                             Relayed(msg.room, msg.nick, stanza_id, msg.private, resource, seq))
            actions.append(A.Relay(msg.room, tuple(deliveries), fallback_text(msg), msg.ref, msg.private,
                                   seq=seq, stamp=stamp))
        return actions

    def _cursor_after(self, msg: RoomMessage, stanza_id: str | None, stamp: float) -> tuple[str | None, float] | None:
        """The room's cursor once it has this message, if it moves: to the room's id for it;
        in a room without an archive (no ids), to its time (the next join asks for the
        history since then).  A private message never moves it: what it claims is not the
        room's word."""
        if msg.private:
            return None
        if stanza_id:
            return (stanza_id, stamp)
        if self.room_mam.get(msg.room) is False:
            return (None, stamp)
        return None

    def _wanted(self, resource: str, room: str, body: str | None, subject: str | None, private: bool) -> bool:
        return wants(self.mode(resource, room), Incoming(room, body, subject, private), self._nicks(room),
                     self.settings_of(resource).keywords)

    def _nicks(self, room: str) -> list[str]:
        """The account's nicks in a room: held, wanted, and what its bookmark says."""
        r = self.engine.rooms.get(room)
        bookmark = self.engine.bookmark(room)
        nicks = [r.nick, r.wanted_nick] if r is not None else []
        nicks.append(bookmark.nick if bookmark is not None and bookmark.nick else self.engine.default_nick)
        return [n for n in dict.fromkeys(nicks) if n]

    def _relay_id(self, resource: str, room: str, seq: int | None) -> str:
        relay_id = f"mmx-{self.rng.getrandbits(64):016x}"
        if seq is not None:
            self.inflight[relay_id] = (resource, room, seq)
            # A client's first relay in a room starts its cursor just before it, as the store
            # does when the relay is committed: lost, it is still owed (not skipped by a
            # playback that would start from the client's offline mark).
            self.cursors.setdefault((resource, room), seq - 1)
        return relay_id

    # -- catch-up (the room's archive) ------------------------------------------------------

    def room_joined(self, room: str, now: float) -> list[A.Action]:
        """Joined (again): fetch from the room's archive what came after our cursor, and hold
        live messages back until then, so everything arrives in order and once.

        A first join has nothing to catch up, but gets a cursor at once: from now (a time
        cursor), until its first look at the archive says where the archive ends.  Stopped
        before that look, the next start still catches up from here."""
        cursor = self.room_cursor.get(room)
        actions: list[A.Action] = []
        if cursor is None:
            self.room_cursor[room] = self.provisional[room] = (None, now)
            actions.append(A.SaveRoom(room, cursor=(None, now)))
        if self.room_mam.get(room) is False:
            return actions  # no archive: the join asked for the history since our cursor instead
        if cursor is not None:  # a first join has nothing to catch up: nothing to hold back
            self.catching_up[room] = []
        self.catch_up_count += 1
        self.catch_up_tokens[room] = self.catch_up_count
        return [*actions, A.CatchUp(room, cursor, self.catchup_max, self.catch_up_count)]

    def _stale(self, room: str, token: int | None) -> bool:
        """An answer to a catch-up that is not the room's current one: a session before
        asked, and its failure (or its late pages) must not end or feed the new one."""
        return token is not None and self.catch_up_tokens.get(room) != token

    def known(self, room: str, keys: tuple[str, ...]) -> list[A.Action]:
        for key in keys:
            self.seen.add(room, [current_key(key)])
        return []

    def history_since(self, room: str) -> float | None:
        """For a room without an archive: catch up with the join's history since this time."""
        if self.room_mam.get(room) is False and room in self.room_cursor:
            return self.room_cursor[room][1]
        return None

    def catch_up_page(self, ev: CatchUpPage, now: float) -> list[A.Action]:
        if ev.room not in self.catching_up or self._stale(ev.room, ev.token):
            return []  # not (or no longer) catching up there: the session that asked is gone
        actions: list[A.Action] = []
        for msg in ev.messages:
            actions += self._take(msg, now)
        return actions

    def catch_up_done(self, ev: CatchUpDone, now: float) -> list[A.Action]:
        if self._stale(ev.room, ev.token):
            return []
        self.catch_up_tokens.pop(ev.room, None)
        actions: list[A.Action] = []
        if ev.mam is not None and self.room_mam.get(ev.room) is not ev.mam:
            self.room_mam[ev.room] = ev.mam
            actions.append(A.SaveRoom(ev.room, mam=ev.mam))
        provisional = self.provisional.pop(ev.room, None)
        if (
            provisional is not None
            and self.room_cursor.get(ev.room) == provisional  # no live message since
            and ev.head is not None
            and ev.error is None
            and not ev.messages
        ):
            # A first join's look: start from the archive's newest message (an exact id);
            # an empty archive, or none, keeps the time cursor of the join.
            head = (ev.head[0], min(ev.head[1], now))  # (a room's clock ahead of ours)
            self.room_cursor[ev.room] = head
            actions.append(A.SaveRoom(ev.room, cursor=head))
        for msg in ev.messages:
            actions += self._take(msg, now)
        if ev.more:
            text = f"[{room_label(ev.room)}] {ev.more} more messages in {ev.room} not shown"
            actions += [A.Reply(c, text) for c in self.online if self.mode(c, ev.room) is not Mode.OFF]
        if ev.messages or ev.streamed or ev.error:
            fields = {"room": ev.room, "messages": ev.streamed + len(ev.messages), "more": ev.more}
            if ev.error:
                fields["error"] = ev.error
            actions.append(A.Note("warning" if ev.error else "info", "caught up", fields))
        for msg in self.catching_up.pop(ev.room, []):
            actions += self._take(msg, now)
        return actions

    # -- delivery: acks and playback ----------------------------------------------------------

    def acked(self, ev: RelaysAcked) -> list[A.Action]:
        """The server has these relays (or never will).  A relay to a client that answers
        receipts is delivered when its receipt comes; until then it stays in flight (a crash
        meanwhile settles it by the server's count, like any other)."""
        settled, owed, waiting = [], [], []
        forgotten: list[A.Action] = []
        for relay_id in ev.relay_ids:
            entry = self.inflight.pop(relay_id, None)
            if entry is None:
                continue
            client = entry[0]
            if ev.delivered and client in self.receipts:
                if client in self.online:
                    self.awaiting[relay_id] = entry
                    waiting.append(relay_id)
                else:  # gone before the server had it: no receipt will come; owed
                    owed.append(relay_id)
                continue
            if ev.delivered:
                self._advance(*entry)
            settled.append(relay_id)
        while len(self.awaiting) > AWAITING_MAX:  # a client that stopped answering receipts
            relay_id, entry = next(iter(self.awaiting.items()))
            del self.awaiting[relay_id]
            if entry[0] in self.receipts:  # until it answers one again: the server's ack
                self.receipts.discard(entry[0])
                forgotten.append(A.SaveReceipts(entry[0], False))
            self._advance(*entry)
            settled.append(relay_id)  # (only a delivered ack adds to the awaiting ones)
        actions = [*forgotten, A.MarkRelays(tuple(settled), ev.delivered)] if settled else []
        if waiting:
            actions.append(A.AwaitReceipts(tuple(r for r in waiting if r in self.awaiting)))
        return [*actions, A.MarkRelays(tuple(owed), False)] if owed else actions

    def _advance(self, client: str, room: str, seq: int) -> None:
        if seq > self.cursors.get((client, room), -1):
            self.cursors[(client, room)] = seq

    def received(self, ev: RelayReceived) -> list[A.Action]:
        """A client's receipt for a relay (XEP-0184): it has it.  From now on its relays wait
        for their receipts before they count as delivered."""
        relayed = self.relayed.get(ev.relay_id)
        if relayed is None or relayed.client != ev.resource or relayed.seq is None:
            return []
        actions: list[A.Action] = []
        if ev.resource not in self.receipts:
            self.receipts.add(ev.resource)
            actions.append(A.SaveReceipts(ev.resource, True))
        entry = self.awaiting.pop(ev.relay_id, None) or self.inflight.pop(ev.relay_id, None)
        if entry is None:
            return actions  # settled already (the server's ack, before we knew it answers receipts)
        self._advance(*entry)
        return [*actions, A.MarkRelays((ev.relay_id,), True)]

    def _unanswered(self, client: str | None, delivered: bool) -> list[A.Action]:
        """Relays still waiting for a receipt (of one client, or of all): settled now."""
        ids = tuple(r for r, (c, _, _) in self.awaiting.items() if client is None or c == client)
        for relay_id in ids:
            entry = self.awaiting.pop(relay_id)
            if delivered:
                self._advance(*entry)
        return [A.MarkRelays(ids, delivered)] if ids else []

    def _in_flight_to(self, client: str) -> list[A.Action]:
        """A client that answers receipts has gone: the relays to it still in flight are
        owed now.  Its receipts come before its going (one session, in order), so it has
        none of them; the server's ack, when it comes, is no longer delivery.  Owed now,
        not at that ack: a crash before the ack is handled would settle them by the
        server's count, as delivered."""
        if client not in self.receipts:
            return []  # for it, the server's ack (while it was available) is delivery
        ids = tuple(r for r, (c, _, _) in self.inflight.items() if c == client)
        for relay_id in ids:
            del self.inflight[relay_id]
        return [A.MarkRelays(ids, False)] if ids else []

    def bounced(self, ev: RelayBounced) -> list[A.Action]:
        """A relay came back undelivered from the session it was sent to: it is owed again,
        with everything after it in its room (that session had none of those either), and
        goes out with the client's next playback, when it is next seen (the server ends
        the old session before the new one's presence arrives).

        Only the client the relay was for can give it back; an unknown or forgotten relay
        id changes nothing."""
        relayed = self.relayed.get(ev.relay_id)
        if relayed is None or relayed.client != ev.resource or relayed.seq is None:
            return []
        client, room, seq = ev.resource, relayed.room, relayed.seq
        actions: list[A.Action] = []
        if (self.inflight.pop(ev.relay_id, None) or self.awaiting.pop(ev.relay_id, None)) is not None:
            actions.append(A.MarkRelays((ev.relay_id,), False))  # still in flight: never delivered
        cursor = self.cursors.get((client, room))
        if cursor is None or cursor >= seq:
            self.cursors[(client, room)] = seq - 1
            actions.append(A.RewindCursor(client, room, seq - 1))
            actions.append(A.Note("info", "relay bounced: owed again", {"client": client, "room": room}))
        return actions

    def _playback(self, client: str) -> list[A.Action]:
        """A client (re)appeared: load what it has not had since it was last here."""
        mark = self.offline_since.get(client)
        if mark is None and not any(c == client for c, _ in self.cursors):
            return []  # never seen before: it starts with live traffic
        self.playbacks[client] = Playback(mark, deque(maxlen=self.playback_max))
        return [self._load_playback(client, 0)]

    def _load_playback(self, client: str, after: int) -> A.LoadPlayback:
        cursors = {room: seq for (c, room), seq in self.cursors.items() if c == client}
        mark = self.playbacks[client].mark
        default = mark if mark is not None else self.next_seq - 1  # else only rooms it had relays in
        return A.LoadPlayback(client, cursors, default, PLAYBACK_PAGE, after)

    def bookmarks_loaded(self) -> list[A.Action]:
        """The bookmarks are known: the clients that came back before them get their playback."""
        actions: list[A.Action] = []
        for client in sorted(self.deferred_playback):
            if client in self.online:
                actions += self._playback(client)
        self.deferred_playback.clear()
        return actions

    def playback_loaded(self, ev: PlaybackLoaded) -> list[A.Action]:
        client = ev.client
        pb = self.playbacks.get(client)
        if pb is None or client not in self.online:
            self.playbacks.pop(client, None)
            return []
        pending = {seq for c, _, seq in (*self.inflight.values(), *self.awaiting.values()) if c == client}
        actions: list[A.Action] = []
        for m in ev.messages:
            if m.seq in pending or not self._wanted(client, m.room, m.body, m.subject, m.private):
                continue
            if pb.mark is None or m.seq <= pb.mark:
                actions.append(self._play(client, m))  # owed from before it left: whole
                pb.sent += 1
                continue
            if len(pb.kept) == pb.kept.maxlen:
                pb.skipped += 1  # the oldest kept goes (or, with playback_max 0, this one)
            pb.kept.append(m)
        if ev.more and ev.messages:
            return [*actions, self._load_playback(client, ev.messages[-1].seq)]
        del self.playbacks[client]
        if pb.skipped:
            actions.append(A.Reply(client, f"{pb.skipped} earlier messages from while you were away are not shown"))
        for m in pb.kept:
            actions.append(self._play(client, m))
            pb.sent += 1
        if client in self.offline_since:
            del self.offline_since[client]
            actions.append(A.SaveOffline(client, None))
        if pb.sent:
            actions.append(A.Note("info", "playback", {"client": client, "messages": pb.sent}))
        return actions

    def _play(self, client: str, m: Stored) -> A.Relay:
        relay_id = self._relay_id(client, m.room, m.seq)
        _bounded_put(self.relayed, relay_id, Relayed(m.room, m.nick, None, m.private, client, m.seq))
        return A.Relay(m.room, ((client, relay_id),), m.text, m.ref, m.private, seq=m.seq, stamp=m.stamp)

    # -- clients that never come back ----------------------------------------------------

    def expire(self, ev: ClientsAway, now: float) -> list[A.Action]:
        """Forget what no longer serves clients away for long: a client that picks a new
        resource at every login leaves a cursor per room and a mark behind each time.

        Away longer than the log keeps a message, a client's cursors and relays in flight
        go: all they name is pruned by then (it went away after them), and its mark (the
        last message before it went) gives its playback in every room.  Away ten times
        that long, it is forgotten whole: back, it starts with live traffic, as a client
        never seen.  Its settings stay (the user chose them, with a command)."""
        busy = {*self.online, *self.playbacks}
        delivering = {c for c, _ in self.cursors} | {c for c, _, _ in (*self.inflight.values(), *self.awaiting.values())}
        trimmed, forgotten = [], []
        for client, since in sorted(ev.since):
            if client in busy:
                continue
            if since < now - FORGOTTEN_AFTER_RETENTIONS * ev.retention_s:
                forgotten.append(client)
            elif since < now - ev.retention_s and client in delivering:
                trimmed.append(client)
        self._forget_deliveries({*trimmed, *forgotten})
        for client in forgotten:
            self.offline_since.pop(client, None)
            self.receipts.discard(client)
        actions: list[A.Action] = []
        if trimmed:
            actions.append(A.ForgetCursors(tuple(trimmed)))
        if forgotten:
            actions.append(A.ForgetClients(tuple(forgotten)))
            actions.append(A.Note("info", "clients away for long forgotten", {"clients": len(forgotten)}))
        return actions

    def _forget_deliveries(self, clients: set[str]) -> None:
        for key in [k for k in self.cursors if k[0] in clients]:
            del self.cursors[key]
        for pending in (self.inflight, self.awaiting):
            for relay_id in [r for r, (c, _, _) in pending.items() if c in clients]:
                del pending[relay_id]

    # -- presence -----------------------------------------------------------------------

    def presence(self, ev: ClientPresence, now: float) -> list[A.Action]:
        actions = self._arm_presence(now)
        if ev.available:
            back = ev.resource not in self.online
            self.online[ev.resource] = Online(ev.show, ev.status)
            if back and not self.engine.loaded:
                self.deferred_playback.add(ev.resource)  # which rooms, which nicks: not known yet
            elif back:
                actions += self._playback(ev.resource)
        elif self.online.pop(ev.resource, None) is not None:
            # Gone without a receipt for these: it may never have had them (a connection that
            # died under it).  Owed again, at its next playback.
            actions += self._unanswered(ev.resource, delivered=False)
            actions += self._in_flight_to(ev.resource)
            if ev.resource not in self.offline_since:
                self.offline_since[ev.resource] = self.next_seq - 1
                actions.append(A.SaveOffline(ev.resource, self.next_seq - 1))
        return actions

    def _arm_presence(self, now: float) -> list[A.Action]:
        if self.presence_armed:
            return []
        self.presence_armed = True
        return [A.Arm("", TimerKind.PRESENCE, now + PRESENCE_DEBOUNCE_S)]

    def presence_due(self) -> list[A.Action]:
        """The debounce timer fired: show the rooms the user's presence if it changed."""
        self.presence_armed = False
        wanted = self.aggregate()
        if wanted == self.mirrored:
            return []
        self.mirrored = wanted
        return [A.MirrorPresence(*wanted)]

    def aggregate(self) -> tuple[str, str | None]:
        if not self.online:
            return "xa", self.offline_status
        best = max(self.online.values(), key=lambda o: AVAILABILITY.get(o.show, 0))
        return best.show, best.status

    def session_established(self, now: float) -> list[A.Action]:
        """A new session: the rooms see the mirrored presence in our join presences."""
        return self._arm_presence(now)

    def session_lost(self) -> list[A.Action]:
        # The server sends every client's presence again after login; a client seen again
        # then gets what it missed (its cursors did not move meanwhile).
        self.online.clear()
        self.deferred_playback.clear()
        self.catching_up.clear()  # the archive still has what was held back
        self.catch_up_tokens.clear()  # answers to that session's catch-ups are stale
        # Receipts still due cannot reach a session that is gone: the server had those
        # relays while their clients were available, which is delivery for a client that
        # does not answer receipts; the same here.
        return self._unanswered(None, delivered=True)

    # -- text and commands -----------------------------------------------------------------

    def text(self, ev: ClientText, now: float) -> list[A.Action]:
        if ev.reply_to is not None and (target := self.relayed.get(ev.reply_to)) is not None:
            return self._answer(ev.resource, target, ev.text)
        return self.command(ClientCommand(ev.resource, C.parse(ev.text)), now)

    def _answer(self, resource: str, target: Relayed, text: str) -> list[A.Action]:
        room = self.engine.rooms.get(target.room)
        if not text.strip():
            return [A.Reply(resource, f"your reply to {target.room} had nothing but the quote: nothing was sent")]
        if room is None or room.nick is None:
            return [A.Reply(resource, f"not in {target.room} right now: your reply was not sent")]
        if target.private and target.nick:
            return [self._post(resource, target.room, text, nick=target.nick)]
        reply_to = (f"{target.room}/{target.nick}", target.stanza_id) if target.nick and target.stanza_id else None
        return [self._post(resource, target.room, text, reply_to=reply_to)]

    def _post(self, resource: str, room: str, text: str, *, nick: str | None = None,
              reply_to: tuple[str, str] | None = None) -> A.SendToRoom:
        origin_id = f"mmx-{self.rng.getrandbits(64):016x}"
        _bounded_put(self.posted, origin_id, resource)
        return A.SendToRoom(room, text, origin_id, nick, reply_to)

    def command(self, ev: ClientCommand, now: float) -> list[A.Action]:
        resource, token = ev.resource, ev.token

        def reply(text: str) -> A.Reply:
            return A.Reply(resource, text, token)

        match ev.command:
            case C.Help():
                return [reply(C.HELP)]
            case C.Unknown(_, usage):
                return [reply(f"usage: {usage}" if usage else C.HELP)]
            case C.Status():
                return [reply(self._status(resource))]
            case C.Rooms():
                return [reply(self._rooms(resource))]
            case C.Relay(mode, None):
                return self._set(resource, self.settings_of(resource).with_mode(mode, None),
                                 reply(f"relay for this client: {mode.value} (default)"))
            case C.Relay(mode, query):
                room = self._resolve(query, self._known_rooms())
                if isinstance(room, Problem):
                    return [reply(room.text)]
                return self._set(resource, self.settings_of(resource).with_mode(mode, room),
                                 reply(f"relay for this client: {mode.value} in {room}"))
            case C.Keywords("list", _):
                words = self.settings_of(resource).keywords
                return [reply("keywords: " + (", ".join(words) if words else "(none)"))]
            case C.Keywords(op, word):
                settings = self.settings_of(resource).with_keyword(word or "", op == "add")
                words = ", ".join(settings.keywords) or "(none)"
                return self._set(resource, settings, reply(f"keywords: {words}"))
            case C.Join(query, nick):
                room = self._resolve(query, self._known_rooms(), allow_new=True)
                if isinstance(room, Problem):
                    return [reply(room.text)]
                if problem := C.address_problem(room, nick, self.engine.address_check):
                    return [reply(f"not bookmarked: {problem}")]
                return [A.UpdateBookmark(room, autojoin=True, nick=nick),
                        reply(f"bookmarked {room} with autojoin" + (f" as {nick}" if nick else "") + "; joining")]
            case C.Leave(query):
                room = self._resolve(query, self._known_rooms())
                if isinstance(room, Problem):
                    return [reply(room.text)]
                return [A.UpdateBookmark(room, autojoin=False), reply(f"autojoin off for {room}; leaving")]
            case C.Nick(query, nick):
                room = self._resolve(query, self._known_rooms())
                if isinstance(room, Problem):
                    return [reply(room.text)]
                if problem := C.address_problem(room, nick, self.engine.address_check):
                    return [reply(f"nick not changed: {problem}")]
                return [A.UpdateBookmark(room, nick=nick), reply(f"nick in {room}: {nick}")]
            case C.Say(_, text, _) if not text.strip():
                return [reply("usage: say ROOM TEXT (there was no text: nothing was sent)")]
            case C.Say(query, text, nick):
                joined = [r.jid for r in self.engine.rooms if r.nick is not None]
                room = self._resolve(query, joined)
                if isinstance(room, Problem):
                    return [reply(room.text)]
                to = f"{room}/{nick}" if nick else room
                return [self._post(resource, room, text, nick=nick), reply(f"sent to {to}")]
        return [reply(C.HELP)]

    def _set(self, resource: str, settings: ClientSettings, answer: A.Reply) -> list[A.Action]:
        self.settings[resource] = settings
        return [A.SaveClient(resource, settings), answer]

    def _known_rooms(self) -> list[str]:
        return sorted({*self.engine.effective, *self.engine.rooms.rooms})

    @staticmethod
    def _resolve(query: str, rooms: Iterable[str], allow_new: bool = False) -> str | Problem:
        found = C.resolve_room(query, rooms, allow_new=allow_new)
        if isinstance(found, C.Ambiguous):
            return Problem(f"{query!r} is ambiguous: " + ", ".join(found.candidates))
        if isinstance(found, C.NotFound):
            return Problem(f"no room matches {query!r}")
        return found

    def _status(self, resource: str) -> str:
        rooms = self.engine.rooms
        joined = sum(1 for r in rooms if r.nick is not None and r.state.value == "joined")
        settings = self.settings_of(resource)
        default = settings.default or config_mode(resource, self.globs)
        overrides = f", {len(settings.rooms)} room overrides" if settings.rooms else ""
        return (
            f"{'connected' if rooms.online else 'not connected'}; {joined}/{rooms.wanted} rooms joined; "
            f"relay for this client: {default.value}{overrides}"
        )

    def _rooms(self, resource: str) -> str:
        lines = []
        for room in sorted(self.engine.rooms, key=lambda r: r.jid):
            occupants = self.engine.occupants.count(room.jid)
            state = room.state.value + (f" ({room.reason})" if room.reason else "")
            nick = f" as {room.nick}" if room.nick else ""
            lines.append(f"{room.jid}: {state}{nick}, {occupants} occupants, relay {self.mode(resource, room.jid).value}")
        return "\n".join(lines) or "no rooms"
