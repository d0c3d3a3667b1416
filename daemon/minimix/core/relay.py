"""Relay policy: which of the user's clients get which room message.

Each client (a resource of the user's own account) has a mode — ``all``, ``mentions`` or
``off`` — as its default and per room (a per-room setting beats the default), plus its
keywords.  A setting the client made itself (chat command, ad-hoc form) beats the config
file's ``[relay.clients]`` globs, which beat ``off``.
"""

from __future__ import annotations

import enum
import fnmatch
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache


class Mode(enum.Enum):
    ALL = "all"
    MENTIONS = "mentions"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What one client asked for.  ``default=None``: it never chose (config or off applies)."""

    default: Mode | None = None
    rooms: Mapping[str, Mode] = field(default_factory=dict)
    keywords: tuple[str, ...] = ()

    def mode(self, room: str, fallback: Mode) -> Mode:
        return self.rooms.get(room) or self.default or fallback

    def with_mode(self, mode: Mode, room: str | None) -> ClientSettings:
        if room is None:
            return ClientSettings(mode, self.rooms, self.keywords)
        return ClientSettings(self.default, {**self.rooms, room: mode}, self.keywords)

    def with_keyword(self, word: str, add: bool) -> ClientSettings:
        words = [w for w in self.keywords if w.casefold() != word.casefold()]
        if add:
            words.append(word)
        return ClientSettings(self.default, self.rooms, tuple(words))


def config_mode(resource: str, globs: Mapping[str, str]) -> Mode:
    """The mode ``[relay.clients]`` gives a resource: the first glob that matches, else off."""
    for pattern, mode in globs.items():
        if fnmatch.fnmatchcase(resource, pattern):
            return Mode(mode)
    return Mode.OFF


_UNSPACED = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR")


def _unspaced(char: str) -> bool:
    """A character of a script written without spaces between words."""
    return unicodedata.name(char, "").startswith(_UNSPACED)


def _fold(text: str) -> str:
    """Caseless and canonically composed: "JÖRG" typed as O + U+0308 is "jörg"."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


@lru_cache(maxsize=4096)
def _word_pattern(word: str) -> re.Pattern[str]:
    # Word boundaries that also work for nicks starting or ending with punctuation ("[bot]",
    # "alice_") and for any script: the word may not touch a letter or digit on either side —
    # except on a side where it ends in a script written without spaces (雪, ไทย).
    word = _fold(word)
    before = "" if _unspaced(word[0]) else r"(?<![\w])"
    after = "" if _unspaced(word[-1]) else r"(?![\w])"
    return re.compile(before + re.escape(word) + after)


def mentions(text: str, words: Iterable[str]) -> bool:
    """True if ``text`` contains one of ``words`` as a whole word, case-insensitively and
    whichever way an accent was typed (Unicode normalisation form C)."""
    folded = _fold(text)
    return any(w and _word_pattern(w).search(folded) for w in words)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A room message as the relay policy sees it."""

    room: str
    body: str | None
    subject: str | None = None
    private: bool = False  # a MUC private message to the account's occupant


def wants(mode: Mode, msg: Incoming, nicks: Iterable[str], keywords: Iterable[str]) -> bool:
    if mode is Mode.OFF:
        return False
    if msg.private:
        return msg.body is not None
    if mode is Mode.ALL:
        return msg.body is not None or msg.subject is not None
    return msg.body is not None and mentions(msg.body, [*nicks, *keywords])


class Seen:
    """The keys of the last ``size`` messages per room: a message is relayed once."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._rooms: dict[str, OrderedDict[str, None]] = {}

    def add(self, room: str, keys: Iterable[str]) -> bool:
        """Record the message; False if any of its keys was seen already."""
        seen = self._rooms.setdefault(room, OrderedDict())
        keys = [k for k in keys if k]
        if any(k in seen for k in keys):
            return False
        for k in keys:
            seen[k] = None
        while len(seen) > self.size:
            seen.popitem(last=False)
        return True
