"""The bookmark model: validation, the two stores, and what they ask for.

Bookmarks come from two stores: XEP-0402 (PEP node ``urn:xmpp:bookmarks:1``, one
item per room) and legacy XEP-0048 (one ``<storage/>`` list in private XML).  A
server announcing ``urn:xmpp:bookmarks:1#compat`` keeps them in sync itself;
otherwise minimix acts on their union, and XEP-0402 wins where both name a room.

The edge parses stanzas into :class:`RawItem` (normalising JIDs and nicks with
stringprep, which the core does not do); :func:`validate` decides what counts.
Anything malformed is skipped and reported once per item and reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from minimix.core.actions import Note
from minimix.core.types import Bookmark, RawItem, Source, Want

MAX_NICK_BYTES = 1023  # RFC 7622 §3.4: a resourcepart is at most 1023 octets


@dataclass(frozen=True, slots=True)
class Rejected:
    item_id: str
    source: Source
    reason: str


def nick_too_long(nick: str) -> bool:
    return len(nick.encode("utf-8", "surrogatepass")) > MAX_NICK_BYTES


def parse_bool(raw: str | None, default: bool = False) -> bool:
    """An ``xs:boolean`` (XEP-0402 autojoin): true, false, 1 or 0."""
    if raw is None:
        return default
    value = raw.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {raw[:40]!r}")


def validate(raw: RawItem) -> Bookmark | Rejected:
    def reject(reason: str) -> Rejected:
        return Rejected(raw.item_id, raw.source, reason)

    if not raw.has_payload:
        return reject("no <conference/> payload")
    if raw.room is None:
        return reject(f"not a room JID ({raw.room_error})" if raw.room_error else "not a room JID")
    try:
        autojoin = parse_bool(raw.autojoin)
    except ValueError as exc:
        return reject(f"autojoin: {exc}")
    nick = raw.nick if raw.nick else None
    if nick is not None:
        if nick_too_long(nick):
            return reject(f"nick longer than {MAX_NICK_BYTES} bytes")
        if not raw.nick_ok:
            return reject("nick is not a valid XMPP resourcepart")
    return Bookmark(
        room=raw.room,
        autojoin=autojoin,
        name=raw.name,
        nick=nick,
        password=raw.password or None,
        source=raw.source,
        item_id=raw.item_id,
    )


class BookmarkSet:
    """The account's bookmarks from both stores, and what was reported about them."""

    def __init__(self) -> None:
        self._pep: dict[str, Bookmark | Rejected] = {}
        self._legacy: list[Bookmark | Rejected] = []
        self._reported: set[tuple[Source, str, str]] = set()
        self.pep_loaded = False
        self.legacy_loaded = False

    # -- updates from the server -----------------------------------------------------

    def load_pep(self, items: Iterable[RawItem]) -> None:
        self._pep = {raw.item_id: validate(raw) for raw in items}
        self.pep_loaded = True

    def publish(self, raw: RawItem) -> None:
        self._pep[raw.item_id] = validate(raw)

    def retract(self, item_id: str) -> bool:
        return self._pep.pop(item_id, None) is not None

    def load_legacy(self, items: Iterable[RawItem]) -> None:
        self._legacy = [validate(raw) for raw in items]
        self.legacy_loaded = True

    # -- what they say ---------------------------------------------------------------

    def resolve(self) -> tuple[dict[str, Bookmark], list[Note]]:
        """The effective bookmarks by room, and notes on what was skipped (once each)."""
        notes: list[Note] = []
        result: dict[str, Bookmark] = {}

        def skip(item_id: str, source: Source, reason: str) -> None:
            key = (source, item_id, reason)
            if key not in self._reported:
                self._reported.add(key)
                notes.append(
                    Note("warning", "bookmark skipped", {"item": item_id[:200], "store": source.value, "reason": reason})
                )

        def take(entries: Iterable[Bookmark | Rejected], source: Source) -> dict[str, Bookmark]:
            seen: dict[str, Bookmark] = {}
            for entry in entries:
                if isinstance(entry, Rejected):
                    skip(entry.item_id, source, entry.reason)
                elif entry.room in seen:
                    skip(entry.item_id, source, f"duplicate of item {seen[entry.room].item_id!r}")
                else:
                    seen[entry.room] = entry
            return seen

        result.update(take(self._legacy, Source.LEGACY))
        result.update(take(self._pep.values(), Source.PEP))  # XEP-0402 wins over legacy
        return result, notes


def wants(bookmarks: Mapping[str, Bookmark], default_nick: str) -> dict[str, Want]:
    """The rooms to be in, with the nick and password to use: the autojoin bookmarks."""
    return {
        room: Want(bm.nick or default_nick, bm.password)
        for room, bm in bookmarks.items()
        if bm.autojoin
    }


def may_move(bookmarks: Mapping[str, Bookmark], room: str, venue: str) -> str | None:
    """Why a destroyed room's bookmark must not be moved to its alternate venue (then only
    its autojoin goes off), or None.  A venue the user has a bookmark for already keeps
    that bookmark as it is (its nick, its password); a room named as its own venue would
    have the move retract the bookmark it just wrote."""
    if venue.casefold() == room.casefold():
        return "the venue is the room itself"
    if any(r.casefold() == venue.casefold() for r in bookmarks):
        return f"{venue} is bookmarked already"
    return None
