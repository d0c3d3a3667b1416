"""The delivery ledger: which of the user's clients has had which logged message.

One owner for all delivery state (soju keeps its per-client delivery receipts the same
way, behind a database interface):

- the message log's sequence: each logged room message gets the next ``seq``;
- a cursor per (client, room): the last message of that room the client has had;
- an away mark per client: the last message logged before it went (it is owed whatever
  comes after, in every room, at its next playback);
- relays in flight: sent, not yet known to have arrived; a relay the server has
  acknowledged, to a client that answers receipts (XEP-0184), waits for its receipt;
- which clients answer receipts;
- the playbacks being read back from the log, page by page;
- mentions stored on the server for clients away (:class:`Pushed`): their playback skips
  them, the server hands them over (offline storage, the account's archive);
- crash settlement: after a crash, which relays in flight the server had;
- forgetting clients that never come back (a random resource per login).

The ledger decides and does no I/O.  Each change it makes to that state is a record
(:class:`Change`) in the actions it returns, in the order they must be on record: a
message is logged before a relay of it goes out, and a relay is in flight before it is
sent.  A :class:`LedgerStore` persists the changes as they are, without interpreting
them, so a restart loads exactly the state the ledger had (:meth:`Ledger.restore`).
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from minimix.core import actions as A
from minimix.core.events import Stored
from minimix.core.ledger_records import (
    Acked,
    AnswersReceipts,
    Away,
    Change,
    ClientsForgotten,
    CursorMoved,
    CursorsForgotten,
    InFlight,
    LedgerState,
    Logged,
    Pushed,
    PushesForgotten,
    Settled,
    reached_server,
)

REMEMBERED = 10_000  # recent relays kept in memory (for receipts and bounces)
# A client away this many times the log's retention is forgotten whole (see Ledger.expire).
FORGOTTEN_AFTER_RETENTIONS = 10
AWAITING_MAX = 2_000  # relays waiting for a receipt, at most (beyond: the server's ack)
PLAYBACK_PAGE = 500  # messages read from the log at a time for a playback
# Mentions stored on the server, kept per client for its playback to skip (beyond: the oldest
# go, and a playback may send one of those again: a duplicate, never a loss).
PUSHED_MAX = 1_000


# -- playback -----------------------------------------------------------------------------------


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


# -- the ledger ---------------------------------------------------------------------------------


class Ledger:
    def __init__(self, rng: random.Random, *, playback_max: int = 200) -> None:
        self.rng = rng
        self.playback_max = playback_max
        self.next_seq = 1
        self.cursors: dict[tuple[str, str], int] = {}
        self.away: dict[str, int] = {}
        self.away_at: dict[str, float] = {}
        self.inflight: dict[str, tuple[str, str, int]] = {}  # relay id → (client, room, seq)
        self.awaiting: dict[str, tuple[str, str, int]] = {}  # acked by the server, receipt due
        self.receipts: set[str] = set()
        self.recent: OrderedDict[str, tuple[str, str, int]] = OrderedDict()  # for receipts, bounces
        self.playbacks: dict[str, Playback] = {}
        # Messages sent to the account's bare JID for clients away: in flight (push id →
        # (clients, room, seq)), then, once the server has them, per client (seq → room).
        self.pushing: OrderedDict[str, tuple[tuple[str, ...], str, int]] = OrderedDict()
        self.pushed: dict[str, OrderedDict[int, str]] = {}
        self.pushes: dict[str, int] = {}  # per room: how many went to the server since start
        # Clients back while a message stored for them is on its way to the server: their
        # playback waits for the server's answer (acked: the server hands it over, so the
        # playback skips it; lost: the playback has it), never both, never neither.
        self.held_back: set[str] = set()

    # -- start ---------------------------------------------------------------------------

    def restore(self, state: LedgerState, known: Iterable[str] = (), now: float = 0.0) -> list[Change]:
        """The state kept in the store, at start (after :meth:`settle`).

        A client known from the last run (``known``: those with settings, and those in the
        state) but not marked away was there when it ended: whatever is logged from now on
        is owed to it, in every room, until it is seen (it may be gone by now, and a room it
        never had a relay in has no cursor).  Returns those marks, to be persisted."""
        self.next_seq = state.last_seq + 1
        self.cursors = dict(state.cursors)
        self.away = dict(state.away)
        self.away_at = dict(state.away_at)
        self.receipts = set(state.receipts)
        self.pushed = {c: OrderedDict(sorted(seqs.items())) for c, seqs in state.pushed.items()}
        self.inflight, self.awaiting = {}, {}
        for relay_id, f in state.flights.items():
            (self.awaiting if f.acked else self.inflight)[relay_id] = (f.client, f.room, f.seq)
        clients = {*(c for c, _ in self.cursors), *known, *self.receipts} - set(self.away)
        marks: list[Change] = []
        for client in sorted(clients):
            self.away[client], self.away_at[client] = state.last_seq, now
            marks.append(Away(client, state.last_seq, now))
        return marks

    @staticmethod
    def needs_count(state: LedgerState) -> bool:
        """Whether settling the last run's relays needs the server's count of them (some were
        in flight that the server had not acknowledged)."""
        return any(not f.acked for f in state.flights.values())

    @staticmethod
    def settle(state: LedgerState, previous: tuple[str, int] | None, handled: int | None) -> list[Change]:
        """After a crash: the relays in flight the server had are delivered, the others are
        owed again (their cursors stay).  ``handled``: the server's count of our stanzas on
        the session ``previous`` (id, our inbound count), or None if it did not say."""
        cursors = dict(state.cursors)
        changes: list[Change] = []
        for flight in state.flights.values():
            key = (flight.client, flight.room)
            if reached_server(flight, previous, handled) and flight.seq > cursors.get(key, -1):
                cursors[key] = flight.seq
                changes.append(CursorMoved(flight.client, flight.room, flight.seq))
        if state.flights:
            changes.append(Settled(tuple(state.flights)))
        return changes

    # -- logging and relaying --------------------------------------------------------------

    def log(self, room: str, stanza_id: str | None, nick: str | None, private: bool, stamp: float,
            body: str | None, subject: str | None, text: str, ref: object, key: str | None,
            room_cursor: tuple[str | None, float] | None = None) -> Logged:
        """Give a room message its place in the log."""
        seq = self.next_seq
        self.next_seq += 1
        return Logged(seq, room, stanza_id, nick, private, stamp, body, subject, text, ref, key, room_cursor)

    def send(self, client: str, room: str, seq: int | None) -> tuple[str, list[Change]]:
        """A relay of message ``seq`` to ``client``: its id, and the changes that put it in
        flight.  A client's first relay in a room starts its cursor just before it: lost, it
        is still owed (not skipped by a playback that would start from the away mark)."""
        relay_id = self.new_id()
        if seq is None:
            return relay_id, []
        entry = (client, room, seq)
        self.inflight[relay_id] = entry
        self._remember(relay_id, entry)
        changes: list[Change] = []
        if (client, room) not in self.cursors:
            self.cursors[client, room] = seq - 1
            changes.append(CursorMoved(client, room, seq - 1))
        changes.append(InFlight(relay_id, client, room, seq))
        return relay_id, changes

    def new_id(self) -> str:
        return f"mmx-{self.rng.getrandbits(64):016x}"

    def _remember(self, relay_id: str, entry: tuple[str, str, int]) -> None:
        self.recent[relay_id] = entry
        while len(self.recent) > REMEMBERED:
            self.recent.popitem(last=False)

    def pending(self, client: str) -> set[int]:
        """The messages on their way to ``client`` (not to be played back again)."""
        return {seq for c, _, seq in (*self.inflight.values(), *self.awaiting.values()) if c == client}

    # -- what comes back ---------------------------------------------------------------------

    def acked(self, relay_ids: Iterable[str], delivered: bool, online: Callable[[str], bool]) -> list[A.Action]:
        """The server has these relays (or, ``delivered=False``, never will).  A relay to a
        client that answers receipts is delivered when its receipt comes; until then it stays
        in flight (a crash meanwhile settles it by the server's count, like any other)."""
        moved: dict[tuple[str, str], int] = {}
        settled, owed, waiting = [], [], []
        changes: list[Change] = []
        for relay_id in relay_ids:
            entry = self.inflight.pop(relay_id, None)
            if entry is None:
                if (push := self.pushing.pop(relay_id, None)) is not None and delivered:
                    changes += self._pushed(*push)
                continue
            client = entry[0]
            if delivered and client in self.receipts:
                if online(client):
                    self.awaiting[relay_id] = entry
                    waiting.append(relay_id)
                else:  # gone before the server had it: no receipt will come; owed
                    owed.append(relay_id)
                continue
            if delivered:
                self._advance(entry, moved)
            settled.append(relay_id)
        while len(self.awaiting) > AWAITING_MAX:  # a client that stopped answering receipts
            relay_id, entry = next(iter(self.awaiting.items()))
            del self.awaiting[relay_id]
            if entry[0] in self.receipts:  # until it answers one again: the server's ack
                self.receipts.discard(entry[0])
                changes.append(AnswersReceipts(entry[0], False))
            self._advance(entry, moved)
            settled.append(relay_id)  # (only a delivered ack adds to the awaiting ones)
        changes += self._moves(moved)
        if settled:
            changes.append(Settled(tuple(settled)))
        if waiting := [r for r in waiting if r in self.awaiting]:
            changes.append(Acked(tuple(waiting)))
        if owed:
            changes.append(Settled(tuple(owed)))
        return [*changes, *self._held_back_playbacks(online)]

    def _held_back_playbacks(self, online: Callable[[str], bool]) -> list[A.Action]:
        """The playbacks that waited for the server's answer about a stored message, now
        that none is on its way for them."""
        if not self.held_back:
            return []
        waiting = {c for clients, _, _ in self.pushing.values() for c in clients}
        actions: list[A.Action] = []
        for client in sorted(self.held_back - waiting):
            self.held_back.discard(client)
            if online(client) and (load := self.came_back(client)) is not None:
                actions.append(load)
        return actions

    def push(self, clients: Sequence[str], room: str, seq: int) -> str:
        """A message sent to the account's bare JID for these away clients: its id.  It
        counts for them once the server has it (:meth:`acked`); lost, it is still owed."""
        push_id = self.new_id()
        self.pushing[push_id] = (tuple(clients), room, seq)
        while len(self.pushing) > REMEMBERED:
            self.pushing.popitem(last=False)
        return push_id

    def _pushed(self, clients: tuple[str, ...], room: str, seq: int) -> list[Change]:
        for client in clients:
            kept = self.pushed.setdefault(client, OrderedDict())
            kept[seq] = room
            while len(kept) > PUSHED_MAX:
                kept.popitem(last=False)
        self.pushes[room] = self.pushes.get(room, 0) + 1
        return [Pushed(clients, room, seq)]

    def received(self, client: str, relay_id: str) -> list[Change]:
        """A client's receipt for a relay (XEP-0184): it has it.  From now on its relays wait
        for their receipts before they count as delivered.  Only the client a relay was for
        can answer it."""
        if (recent := self.recent.get(relay_id)) is None or recent[0] != client:
            return []
        changes: list[Change] = []
        if client not in self.receipts:
            self.receipts.add(client)
            changes.append(AnswersReceipts(client, True))
        entry = self.awaiting.pop(relay_id, None) or self.inflight.pop(relay_id, None)
        if entry is None:
            return changes  # settled already (the server's ack, before we knew it answers receipts)
        moved: dict[tuple[str, str], int] = {}
        self._advance(entry, moved)
        return [*changes, *self._moves(moved), Settled((relay_id,))]

    def bounced(self, client: str, relay_id: str) -> list[A.Action]:
        """A relay came back undelivered from the session it was sent to: it is owed again,
        with everything after it in its room (that session had none of those either), and
        goes out with the client's next playback.  Only the client the relay was for can
        give it back; an unknown or forgotten relay id changes nothing."""
        if (recent := self.recent.get(relay_id)) is None or recent[0] != client:
            return []
        _, room, seq = recent
        actions: list[A.Action] = []
        if (self.inflight.pop(relay_id, None) or self.awaiting.pop(relay_id, None)) is not None:
            actions.append(Settled((relay_id,)))  # still in flight: never delivered
        cursor = self.cursors.get((client, room))
        if cursor is None or cursor >= seq:
            self.cursors[client, room] = seq - 1
            actions.append(CursorMoved(client, room, seq - 1))
            actions.append(A.Note("info", "relay bounced: owed again", {"client": client, "room": room}))
        return actions

    def went_away(self, client: str, now: float) -> list[Change]:
        """A client went offline.  What it never answered a receipt for, it may never have had
        (a connection that died under it), and relays to it still in flight, if it answers
        receipts, will not be answered: owed again.  Its receipts come before its going (one
        session, in order), and owed now, not at the server's ack: a crash before that ack
        is handled would settle them by the server's count, as delivered.  Whatever is logged
        from now on is owed to it (its away mark)."""
        self.held_back.discard(client)
        changes = self._unanswered(client, delivered=False)
        # (For a client that does not answer receipts, the server's ack while it was here is
        # delivery: its relays in flight stay.)
        ids = tuple(r for r, (c, _, _) in self.inflight.items() if c == client) if client in self.receipts else ()
        for relay_id in ids:
            del self.inflight[relay_id]
        if ids:
            changes.append(Settled(ids))
        if client not in self.away:
            self.away[client], self.away_at[client] = self.next_seq - 1, now
            changes.append(Away(client, self.next_seq - 1, now))
        return changes

    def session_lost(self) -> list[Change]:
        """Receipts still due cannot reach a session that is gone: the server had those
        relays while their clients were available, which is delivery for a client that does
        not answer receipts; the same here.  (Clients come back with the next session.)"""
        self.held_back.clear()
        return self._unanswered(None, delivered=True)

    def _unanswered(self, client: str | None, delivered: bool) -> list[Change]:
        """Relays still waiting for a receipt (of one client, or of all): settled now."""
        ids = tuple(r for r, (c, _, _) in self.awaiting.items() if client is None or c == client)
        moved: dict[tuple[str, str], int] = {}
        for relay_id in ids:
            entry = self.awaiting.pop(relay_id)
            if delivered:
                self._advance(entry, moved)
        return [*self._moves(moved), Settled(ids)] if ids else []

    def _advance(self, entry: tuple[str, str, int], moved: dict[tuple[str, str], int]) -> None:
        client, room, seq = entry
        if seq > self.cursors.get((client, room), -1):
            self.cursors[client, room] = moved[client, room] = seq

    @staticmethod
    def _moves(moved: Mapping[tuple[str, str], int]) -> list[Change]:
        return [CursorMoved(client, room, seq) for (client, room), seq in moved.items()]

    # -- playback ----------------------------------------------------------------------------

    def came_back(self, client: str) -> A.LoadPlayback | None:
        """A client (re)appeared: read what it has not had since it was last here.  One
        never seen before starts with live traffic."""
        mark = self.away.get(client)
        if mark is None and not any(c == client for c, _ in self.cursors):
            return None
        if any(client in clients for clients, _, _ in self.pushing.values()):
            self.held_back.add(client)  # a message stored for it is on its way: see acked()
            return None
        self.playbacks[client] = Playback(mark, deque(maxlen=self.playback_max))
        return self._page(client, 0)

    def _page(self, client: str, after: int) -> A.LoadPlayback:
        cursors = {room: seq for (c, room), seq in self.cursors.items() if c == client}
        mark = self.playbacks[client].mark
        default = mark if mark is not None else self.next_seq - 1  # else only rooms it had relays in
        return A.LoadPlayback(client, cursors, default, PLAYBACK_PAGE, after)

    def play(self, client: str, messages: Sequence[Stored], more: int, wanted: Callable[[Stored], bool],
             relay: Callable[[str, Stored], A.Relay]) -> list[A.Action]:
        """A page of the log for a client's playback: what its mode selects (``wanted``) goes
        out as relays (``relay`` builds each), or the next page is asked for."""
        pb = self.playbacks.get(client)
        if pb is None:
            return []
        pending = self.pending(client)
        pushed = self.pushed.get(client, {})
        actions: list[A.Action] = []
        for m in messages:
            if m.seq in pending or m.seq in pushed or not wanted(m):
                continue
            if pb.mark is None or m.seq <= pb.mark:
                actions.append(relay(client, m))  # owed from before it left: whole
                pb.sent += 1
                continue
            if len(pb.kept) == pb.kept.maxlen:
                pb.skipped += 1  # the oldest kept goes (or, with playback_max 0, this one)
            pb.kept.append(m)
        if more and messages:
            return [*actions, self._page(client, messages[-1].seq)]
        del self.playbacks[client]
        if pb.skipped:
            actions.append(A.Reply(client, f"{pb.skipped} earlier messages from while you were away are not shown"))
        for m in pb.kept:
            actions.append(relay(client, m))
            pb.sent += 1
        if client in self.away:
            del self.away[client]
            self.away_at.pop(client, None)
            actions.append(Away(client, None))
        actions += self._forget_pushed(client)
        if pb.sent:
            actions.append(A.Note("info", "playback", {"client": client, "messages": pb.sent}))
        return actions

    def _forget_pushed(self, client: str) -> list[Change]:
        """The stored messages its cursors are past: no playback reads them again."""
        kept = self.pushed.get(client)
        if not kept:
            return []
        done = tuple(seq for seq, room in kept.items() if seq <= self.cursors.get((client, room), -1))
        for seq in done:
            del kept[seq]
        if not kept:
            del self.pushed[client]
        return [PushesForgotten(client, done)] if done else []

    def drop_playback(self, client: str) -> None:
        self.playbacks.pop(client, None)

    # -- clients that never come back -------------------------------------------------------

    def expire(self, now: float, retention_s: float, busy: Collection[str]) -> list[A.Action]:
        """Forget what no longer serves clients away for long: a client that picks a new
        resource at every login leaves a cursor per room and a mark behind each time.

        Away longer than the log keeps a message, a client's cursors and relays in flight
        go: all they name is pruned by then (it went away after them), and its mark (the
        last message before it went) gives its playback in every room.  Away ten times
        that long, it is forgotten whole: back, it starts with live traffic, as a client
        never seen.  A client online or in its playback (``busy``) is never forgotten."""
        busy = {*busy, *self.playbacks}
        delivering = {c for c, _ in self.cursors} | {c for c, _, _ in (*self.inflight.values(), *self.awaiting.values())}
        trimmed, forgotten = [], []
        for client, at in sorted(self.away_at.items()):
            if client in busy:
                continue
            if at < now - FORGOTTEN_AFTER_RETENTIONS * retention_s:
                forgotten.append(client)
            elif at < now - retention_s and client in delivering:
                trimmed.append(client)
        gone = {*trimmed, *forgotten}
        for key in [k for k in self.cursors if k[0] in gone]:
            del self.cursors[key]
        for pending in (self.inflight, self.awaiting):
            for relay_id in [r for r, (c, _, _) in pending.items() if c in gone]:
                del pending[relay_id]
        for client in gone:
            self.pushed.pop(client, None)
        for client in forgotten:
            del self.away[client], self.away_at[client]
            self.receipts.discard(client)
        actions: list[A.Action] = []
        if trimmed:
            actions.append(CursorsForgotten(tuple(trimmed)))
        if forgotten:
            actions.append(ClientsForgotten(tuple(forgotten)))
            actions.append(A.Note("info", "clients away for long forgotten", {"clients": len(forgotten)}))
        return actions
