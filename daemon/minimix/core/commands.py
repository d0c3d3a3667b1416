"""The chat-command language: one line of text from one of the user's clients → a command.

:func:`parse` never raises: anything it does not understand becomes :class:`Unknown`,
answered with the help text.  Commands are case-insensitive, need no prefix, and a
leading ``/`` or ``!`` is tolerated.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from minimix.core.bookmarks import MAX_NICK_BYTES, nick_too_long
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

# The first word and the rest: any whitespace separates words (a tab, a no-break space).
_FIRST_WORD = re.compile(r"(\S*)\s*(.*)", re.S)


def _first_word(text: str) -> tuple[str, str]:
    m = _FIRST_WORD.match(text)
    return m[1], m[2]


def parse(text: str) -> Command:
    """One command.  Nothing is cut off: ``say``'s text is posted whole (a message is
    bounded by the server's stanza size already)."""
    line = text.strip() if isinstance(text, str) else ""
    if line[:1] in ("/", "!"):
        line = line[1:].lstrip()
    verb, rest = _first_word(line)
    verb = verb.casefold()
    rest = rest.strip()
    args = rest.split(maxsplit=2)
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
                return Keywords(op, " ".join(rest.split()[1:]))
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
            target, body = _first_word(rest)
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


#: The edge's own check of a room address and nick (stringprep, which the core does not do):
#: (room, nick or None) -> why they cannot be bookmarked, or None.
AddressCheck = Callable[[str, str | None], str | None]

_NOT_IN_ADDRESSES = ("Cc", "Cf", "Co", "Cs", "Cn")  # control, format, private use, surrogate, unassigned


def address_problem(room: str, nick: str | None = None, check: AddressCheck | None = None) -> str | None:
    """Why ``room`` (and ``nick``) cannot go into a bookmark, or None: what the bookmark
    reader would skip must never be written (it would leave the room)."""
    local, at, domain = room.partition("@")
    if not at or not local or not domain or "@" in domain or "/" in room:
        return f"{room[:100]!r} is not a room address (room@service)"
    if any(c.isspace() or unicodedata.category(c) in _NOT_IN_ADDRESSES for c in room):
        return f"{room[:100]!r} is not a room address: it has spaces or control characters"
    if max(len(local.encode("utf-8", "surrogatepass")), len(domain.encode("utf-8", "surrogatepass"))) > 1023:
        return "that room address is too long"
    if nick is not None:
        if not nick.strip():
            return "the nick is empty"
        if nick_too_long(nick):
            return f"the nick is longer than {MAX_NICK_BYTES} bytes"
        if any(unicodedata.category(c) in ("Cc", "Co", "Cs", "Cn") for c in nick):
            return "the nick has control characters"
    return check(room, nick) if check is not None else None
