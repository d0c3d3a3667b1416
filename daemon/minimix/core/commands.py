"""The chat-command language: one line of text from one of the user's clients → a command.

:func:`parse` never raises: anything it does not understand becomes :class:`Unknown`,
answered with the help text.  Commands are case-insensitive, need no prefix, and a
leading ``/`` or ``!`` is tolerated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from minimix.core.relay import Mode

HELP = """\
minimix commands (no prefix needed):
  status                         connection and rooms, in one line
  rooms                          each room: state, nick, occupants
  relay all|mentions|off [ROOM]  what this client gets (without ROOM: its default)
  keywords add|remove WORD       words that count as a mention; keywords list
  join ROOM [NICK]               bookmark ROOM with autojoin (all your clients see it)
  leave ROOM                     turn autojoin off in ROOM's bookmark
  nick ROOM NICK                 change your nick in ROOM's bookmark
  say ROOM TEXT                  post TEXT in ROOM (ROOM/NICK: a private message)
ROOM is a room JID or a unique prefix of its name. Reply to a relayed message to answer in its room."""


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Status:
    pass


@dataclass(frozen=True, slots=True)
class Rooms:
    pass


@dataclass(frozen=True, slots=True)
class Relay:
    mode: Mode
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Keywords:
    op: str  # "add" | "remove" | "list"
    word: str | None = None


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    nick: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str


@dataclass(frozen=True, slots=True)
class Nick:
    room: str
    nick: str


@dataclass(frozen=True, slots=True)
class Say:
    room: str
    text: str
    nick: str | None = None  # say ROOM/NICK TEXT: a private message to that occupant


@dataclass(frozen=True, slots=True)
class Unknown:
    text: str
    usage: str | None = None  # what the command looks like, when the verb was right


Command = Help | Status | Rooms | Relay | Keywords | Join | Leave | Nick | Say | Unknown

MAX_LINE = 4096


def parse(text: str) -> Command:
    line = text.strip()[:MAX_LINE] if isinstance(text, str) else ""
    if line[:1] in ("/", "!"):
        line = line[1:].lstrip()
    verb, _, rest = line.partition(" ")
    verb = verb.casefold()
    rest = rest.strip()
    args = rest.split()
    match verb:
        case "" | "help" | "?":
            return Help()
        case "status":
            return Status()
        case "rooms" | "list":
            return Rooms()
        case "relay":
            if not args or args[0].casefold() not in {m.value for m in Mode} or len(args) > 2:
                return Unknown(text, "relay all|mentions|off [ROOM]")
            return Relay(Mode(args[0].casefold()), args[1] if len(args) == 2 else None)
        case "keywords" | "keyword":
            op = args[0].casefold() if args else "list"
            if op == "list" and len(args) <= 1:
                return Keywords("list")
            if op in ("add", "remove") and len(args) >= 2:
                return Keywords(op, " ".join(args[1:]))
            return Unknown(text, "keywords add|remove WORD, or keywords list")
        case "join":
            if len(args) in (1, 2):
                return Join(args[0], args[1] if len(args) == 2 else None)
            return Unknown(text, "join ROOM [NICK]")
        case "leave" | "part":
            if len(args) == 1:
                return Leave(args[0])
            return Unknown(text, "leave ROOM")
        case "nick":
            if len(args) >= 2:
                return Nick(args[0], rest[len(args[0]) :].strip())
            return Unknown(text, "nick ROOM NICK")
        case "say":
            target, _, body = rest.partition(" ")
            body = body.strip()
            if not target or not body:
                return Unknown(text, "say ROOM TEXT")
            room, _, nick = target.partition("/")
            return Say(room, body, nick or None)
    return Unknown(text)


@dataclass(frozen=True, slots=True)
class Ambiguous:
    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotFound:
    query: str


def resolve_room(query: str, rooms: Iterable[str], *, allow_new: bool = False) -> str | Ambiguous | NotFound:
    """A room JID from what the user typed: a JID, or a unique prefix of a room's name.

    ``allow_new``: a full JID that is not among ``rooms`` is accepted (``join`` a new room).
    """
    known = sorted(set(rooms))
    wanted = query.strip().casefold()
    if not wanted:
        return NotFound(query)
    if "@" in wanted:
        exact = [r for r in known if r.casefold() == wanted]
        if exact:
            return exact[0]
        return wanted if allow_new else NotFound(query)
    exact_local = [r for r in known if r.split("@", 1)[0].casefold() == wanted]
    if len(exact_local) == 1:
        return exact_local[0]
    matches = [r for r in known if r.split("@", 1)[0].casefold().startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        return Ambiguous(tuple(matches))
    return NotFound(query)
