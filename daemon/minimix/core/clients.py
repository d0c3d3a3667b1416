"""The user's own clients: who is online, what each wants relayed, and what they ask for.

Only resources of the account itself ever reach this module (the edge drops everything
else): they get relays, their text is a command or a reply to a relay, and their presence
is mirrored into the rooms.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from minimix.core import actions as A
from minimix.core import commands as C
from minimix.core.events import ClientCommand, ClientPresence, ClientText, RoomMessage, TimerKind
from minimix.core.relay import ClientSettings, Incoming, Mode, Seen, config_mode, wants

if TYPE_CHECKING:
    from minimix.core.engine import Engine

PRESENCE_DEBOUNCE_S = 2.0
# How available each show is, for "the most available of the user's clients".
AVAILABILITY = {"chat": 5, "available": 4, "away": 3, "dnd": 2, "xa": 1}
REMEMBERED = 10_000  # relays (for replies) and own posts (for echoes) kept in memory


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
    """What a relay id stands for: where a reply to it goes."""

    room: str
    nick: str | None
    stanza_id: str | None
    private: bool


def _bounded_put(d: OrderedDict, key: str, value: object) -> None:
    d[key] = value
    while len(d) > REMEMBERED:
        d.popitem(last=False)


def room_label(room: str) -> str:
    return room.split("@", 1)[0]


def fallback_text(msg: RoomMessage) -> str:
    label, nick = room_label(msg.room), msg.nick or "?"
    if msg.private:
        return f"[{label}] {nick} (private): {msg.body}"
    if msg.body is None and msg.subject is not None:
        return f"[{label}] {nick} set the subject: {msg.subject}"
    return f"[{label}] {nick}: {msg.body}"


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
        # The room's archive id identifies a message; without one (a room without stanza-ids,
        # subject changes on Prosody) the sender's origin-id, else what it says and who.
        if msg.stanza_id:
            keys = [f"sid:{msg.stanza_id}"]
        elif msg.origin_id:
            keys = [f"oid:{msg.origin_id}"]
        else:
            keys = [f"msg:{msg.nick}:{msg.message_id}:{msg.body}:{msg.subject}"]
        if not self.seen.add(msg.room, keys):
            return []  # a duplicate (a resent history, a resumed stream)
        sender = self.posted.get(msg.origin_id) if msg.origin_id else None  # our own echo
        nicks = [n for n in (room.nick, room.wanted_nick) if n]
        incoming = Incoming(msg.room, msg.body, msg.subject, msg.private)
        deliveries = []
        for resource in self.online:
            if resource == sender:
                continue  # the client that wrote it has it already
            settings = self.settings_of(resource)
            if wants(self.mode(resource, msg.room), incoming, nicks, settings.keywords):
                relay_id = f"mmx-{self.rng.getrandbits(64):016x}"
                deliveries.append((resource, relay_id))
                _bounded_put(self.relayed, relay_id, Relayed(msg.room, msg.nick, msg.stanza_id, msg.private))
        if not deliveries:
            return []
        return [A.Relay(msg.room, tuple(deliveries), fallback_text(msg), msg.ref, msg.private)]

    # -- presence -----------------------------------------------------------------------

    def presence(self, ev: ClientPresence, now: float) -> list[A.Action]:
        if ev.available:
            self.online[ev.resource] = Online(ev.show, ev.status)
        else:
            self.online.pop(ev.resource, None)
        return self._arm_presence(now)

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

    def session_lost(self) -> None:
        self.online.clear()  # the server sends every client's presence again after login

    # -- text and commands -----------------------------------------------------------------

    def text(self, ev: ClientText, now: float) -> list[A.Action]:
        if ev.reply_to is not None and (target := self.relayed.get(ev.reply_to)) is not None:
            return self._answer(ev.resource, target, ev.text)
        return self.command(ClientCommand(ev.resource, C.parse(ev.text)), now)

    def _answer(self, resource: str, target: Relayed, text: str) -> list[A.Action]:
        room = self.engine.rooms.get(target.room)
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
                return [A.UpdateBookmark(room, nick=nick), reply(f"nick in {room}: {nick}")]
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
