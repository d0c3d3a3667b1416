"""What the user's clients say to minimix: commands (chat or ad-hoc), and replies to relays.

Only resources of the account itself reach this module (the edge drops everything else).
Their text is a command (core.commands parses it) or, with a XEP-0461 reply to a relay,
an answer posted in that relay's room.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from minimix.core import actions as A
from minimix.core import commands as C
from minimix.core.events import ClientCommand, ClientText, PostRefused
from minimix.core.ledger import Ledger
from minimix.core.relay import ClientSettings, config_mode
from minimix.core.router import Router, Target
from minimix.core.types import RoomsView

REFUSAL_TEXT_MAX = 300  # of a room's error text, passed on to the client it concerns


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a command cannot be carried out, in words for the user."""

    text: str


class Chat:
    def __init__(self, router: Router, ledger: Ledger, rooms: RoomsView,
                 address_check: C.AddressCheck | None = None) -> None:
        self.router = router
        self.ledger = ledger
        self.rooms = rooms
        self.address_check = address_check  # the edge's stringprep of what commands bookmark

    def text(self, ev: ClientText, now: float) -> list[A.Action]:
        if ev.reply_to is not None and (target := self.router.targets.get(ev.reply_to)) is not None:
            return self._answer(ev.resource, target, ev.text)
        return self.command(ClientCommand(ev.resource, C.parse(ev.text)), now)

    def _answer(self, resource: str, target: Target, text: str) -> list[A.Action]:
        if not text.strip():
            return [A.Reply(resource, f"your reply to {target.room} had nothing but the quote: nothing was sent")]
        if self.rooms.nick(target.room) is None:
            return [A.Reply(resource, f"not in {target.room} right now: your reply was not sent")]
        if target.private and target.nick:
            return [self._post(resource, target.room, text, nick=target.nick)]
        reply_to = (f"{target.room}/{target.nick}", target.stanza_id) if target.nick and target.stanza_id else None
        return [self._post(resource, target.room, text, reply_to=reply_to)]

    def _post(self, resource: str, room: str, text: str, *, nick: str | None = None,
              reply_to: tuple[str, str] | None = None) -> A.SendToRoom:
        origin_id = self.ledger.new_id()
        self.router.posting(origin_id, resource)
        return A.SendToRoom(room, text, origin_id, nick, reply_to)

    def post_refused(self, ev: PostRefused) -> list[A.Action]:
        """A room refused something said for a client (a private message in a room that
        allows none, a visitor's post in a moderated room): that client is told, rather
        than left believing it was said.  Only our own posts' ids count (random, unknown
        to anyone else), so no one can make the daemon talk with a made-up error."""
        resource = self.router.posted.get(ev.origin_id)
        if resource is None:
            return []
        why = f"{ev.text[:REFUSAL_TEXT_MAX]} ({ev.condition})" if ev.text else ev.condition
        return [A.Reply(resource, f"not sent to {ev.to}: {why}")]

    def command(self, ev: ClientCommand, now: float) -> list[A.Action]:
        resource, token = ev.resource, ev.token
        settings = self.router.settings_of(resource)

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
                return self._set(resource, settings.with_mode(mode, None),
                                 reply(f"relay for this client: {mode.value} (default)"))
            case C.Relay(mode, query):
                room = self._resolve(query, self.rooms.known())
                if isinstance(room, Problem):
                    return [reply(room.text)]
                return self._set(resource, settings.with_mode(mode, room),
                                 reply(f"relay for this client: {mode.value} in {room}"))
            case C.Keywords("list", _):
                return [reply("keywords: " + (", ".join(settings.keywords) if settings.keywords else "(none)"))]
            case C.Keywords(op, word):
                changed = settings.with_keyword(word or "", op == "add")
                return self._set(resource, changed, reply(f"keywords: {', '.join(changed.keywords) or '(none)'}"))
            case C.Join(query, nick):
                room = self._resolve(query, self.rooms.known(), allow_new=True)
                if isinstance(room, Problem):
                    return [reply(room.text)]
                if problem := C.address_problem(room, nick, self.address_check):
                    return [reply(f"not bookmarked: {problem}")]
                return [A.UpdateBookmark(room, autojoin=True, nick=nick),
                        reply(f"bookmarked {room} with autojoin" + (f" as {nick}" if nick else "") + "; joining")]
            case C.Leave(query):
                room = self._resolve(query, self.rooms.known())
                if isinstance(room, Problem):
                    return [reply(room.text)]
                return [A.UpdateBookmark(room, autojoin=False), reply(f"autojoin off for {room}; leaving")]
            case C.Nick(query, nick):
                room = self._resolve(query, self.rooms.known())
                if isinstance(room, Problem):
                    return [reply(room.text)]
                if problem := C.address_problem(room, nick, self.address_check):
                    return [reply(f"nick not changed: {problem}")]
                return [A.UpdateBookmark(room, nick=nick), reply(f"nick in {room}: {nick}")]
            case C.Say(_, text, _) if not text.strip():
                return [reply("usage: say ROOM TEXT (there was no text: nothing was sent)")]
            case C.Say(query, text, nick):
                room = self._resolve(query, self.rooms.occupied())
                if isinstance(room, Problem):
                    return [reply(room.text)]
                to = f"{room}/{nick}" if nick else room
                return [self._post(resource, room, text, nick=nick), reply(f"sent to {to}")]
        return [reply(C.HELP)]

    def _set(self, resource: str, settings: ClientSettings, answer: A.Reply) -> list[A.Action]:
        self.router.settings[resource] = settings
        return [A.SaveClient(resource, settings), answer]

    @staticmethod
    def _resolve(query: str, rooms: Iterable[str], allow_new: bool = False) -> str | Problem:
        found = C.resolve_room(query, rooms, allow_new=allow_new)
        if isinstance(found, C.Ambiguous):
            return Problem(f"{query!r} is ambiguous: " + ", ".join(found.candidates))
        if isinstance(found, C.NotFound):
            return Problem(f"no room matches {query!r}")
        return found

    def _status(self, resource: str) -> str:
        connected, joined, wanted = self.rooms.summary()
        settings = self.router.settings_of(resource)
        default = settings.default or config_mode(resource, self.router.globs)
        overrides = f", {len(settings.rooms)} room overrides" if settings.rooms else ""
        return (
            f"{'connected' if connected else 'not connected'}; {joined}/{wanted} rooms joined; "
            f"relay for this client: {default.value}{overrides}{self._counts(None)}"
        )

    def _counts(self, room: str | None) -> str:
        """How many messages are unread (after the user's read marker, where one is known)
        and how many mentions were stored on the server for phones away: of a room, or
        (None) of all of them."""
        unread, pushes = self.router.unread, self.ledger.pushes
        read = (sum(unread.values()) if unread else None) if room is None else unread.get(room)
        stored = sum(pushes.values()) if room is None else pushes.get(room, 0)
        return ("" if read is None else f"; {read} unread") + (f"; {stored} mentions stored" if stored else "")

    def _rooms(self, resource: str) -> str:
        lines = []
        for r in self.rooms.lines():
            state = r.state + (f" ({r.reason})" if r.reason else "")
            nick = f" as {r.nick}" if r.nick else ""
            lines.append(f"{r.jid}: {state}{nick}, {r.occupants} occupants, relay {self.router.mode(resource, r.jid).value}"
                         f"{self._counts(r.jid)}")
        return "\n".join(lines) or "no rooms"
