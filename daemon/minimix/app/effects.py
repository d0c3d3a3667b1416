"""The core's actions carried out: one small function each, nothing decided here.

An action that reads the store (a playback page, the keys of a room's history) hands what
it read back to the core as an event (``feed``), whose actions are carried out at once,
in the same batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import structlog

from minimix import logging as minimix_logging
from minimix.core import actions as A
from minimix.core.events import KnownMessages, PlaybackLoaded, ReadAt, TimerFired
from minimix.core.ledger_records import Change, InFlight
from minimix.store import Store
from minimix.timers import Timers
from minimix.xmpp.session import Session

log = structlog.get_logger("minimix")

SELF_PING_TIMEOUT_S = 30.0


class Effects:
    def __init__(self, session: Session, store: Store, timers: Timers, feed: Callable[[object], None]) -> None:
        self.session = session
        self.store = store
        self.timers = timers
        self.feed = feed  # an event for the core, its actions carried out at once
        self._by_type: dict[type, Callable[[A.Action], None]] = {
            A.Note: self.note,
            A.Join: self.join,
            A.LoadKeys: self.load_keys,
            A.Leave: lambda a: session.muc.leave(a.room, a.nick, a.status),
            A.ChangeNick: lambda a: session.muc.change_nick(a.room, a.nick),
            A.SelfPing: lambda a: session.muc.self_ping(a.room, a.nick, SELF_PING_TIMEOUT_S),
            A.QueryReservedNick: lambda a: session.muc.query_reserved_nick(a.room),
            A.DestroyRoom: lambda a: session.muc.destroy_room(a.room, a.reason),
            A.Arm: lambda a: timers.arm(f"{a.kind.value}:{a.room}", a.at, TimerFired(a.room, a.kind)),
            A.Disarm: lambda a: timers.disarm(f"{a.kind.value}:{a.room}"),
            A.WriteBookmark: self.write_bookmark,
            A.Relay: self.relay,
            A.Store: lambda a: session.delivery.store(a),
            A.FindRead: self.find_read,
            A.SaveRoom: self.save_room,
            A.SaveGap: lambda a: store.set_room_gap(a.room, a.after),
            A.CatchUp: lambda a: session.catchups.catch_up(a.room, a.after, a.limit, a.token),
            A.LoadPlayback: self.load_playback,
            A.Reply: self.reply,
            A.SendToRoom: lambda a: session.muc.send_to_room(a),
            A.SaveClient: self.save_client,
            A.MirrorPresence: lambda a: session.muc.mirror_presence(a.show, a.status, list(a.rooms)),
        }

    def run(self, actions: list[A.Action]) -> None:
        for action in actions:
            effect = self._by_type.get(type(action))
            if effect is not None:
                effect(action)
            elif isinstance(action, Change):
                self.store.apply((action,))
            else:  # the name only: an action's fields may be someone's message
                log.warning("unknown action", action=type(action).__name__)

    def note(self, a: A.Note) -> None:
        getattr(log, a.level)(a.event, **a.fields)

    def join(self, a: A.Join) -> None:
        if a.password:
            minimix_logging.add_secret(a.password)
        self.session.muc.join(a.room, a.nick, a.password, a.history_since)

    def load_keys(self, a: A.LoadKeys) -> None:
        self.feed(KnownMessages(a.room, tuple(self.store.keys_since(a.room, a.since, a.after))))

    def write_bookmark(self, a: A.WriteBookmark) -> None:
        self.session.bookmarks.change(a.bookmark, a.room, autojoin=a.autojoin, nick=a.nick, venue=a.venue,
                                      reason=a.reason)

    def relay(self, a: A.Relay) -> None:
        """On record before it goes out (see Router.take for the order and why): the
        ledger's changes, each relay in flight with its place in the XEP-0198 count of the
        session it goes out on (the edge knows it), and that session's inbound count."""
        if a.changes:
            sm_id, positions, inbound = self.session.delivery.next_sm_positions(len(a.deliveries))
            wire = {relay_id: (sm_id, n) for (_, relay_id), n in zip(a.deliveries, positions, strict=True)
                    if sm_id is not None and n is not None}
            self.store.apply([dataclasses.replace(c, wire=wire.get(c.relay_id)) if isinstance(c, InFlight) else c
                              for c in a.changes])
            if sm_id is not None and inbound is not None:
                self.store.record_stream(sm_id, inbound)
        self.session.delivery.relay(a)

    def save_room(self, a: A.SaveRoom) -> None:
        if a.cursor is not None:
            self.store.set_room_cursor(a.room, *a.cursor)
        if a.mam is not None:
            self.store.set_room_mam(a.room, a.mam)

    def load_playback(self, a: A.LoadPlayback) -> None:
        found, more = self.store.messages_after(a.cursors, a.default, a.limit, a.after)
        self.feed(PlaybackLoaded(a.client, tuple(found), more))

    def find_read(self, a: A.FindRead) -> None:
        if (found := self.store.read_position(a.room, a.stanza_id)) is not None:
            self.feed(ReadAt(a.room, *found))

    def reply(self, a: A.Reply) -> None:
        if isinstance(a.token, asyncio.Future):  # an ad-hoc command waits for its answer
            if not a.token.done():
                a.token.set_result(a.text)
        else:
            self.session.delivery.reply(a.resource, a.text)

    def save_client(self, a: A.SaveClient) -> None:
        self.store.save_client(a.resource, a.settings)  # type: ignore[arg-type]
        log.info("client settings saved", client=a.resource)
