"""What the delivery ledger records: each change it makes to its state (a :class:`Change`,
in the actions it returns, in the order they must be on record), what a store keeps of them
(:class:`LedgerState`), the port a store implements (:class:`LedgerStore`: SQLite, or
memory in tests), and crash settlement over what was kept (:func:`reached_server`).

The ledger (core/ledger.py) decides; a store persists these records as they are, without
interpreting them, so a restart loads exactly the state the ledger had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from minimix.core import actions as A
from minimix.core.events import Stored

SM_WRAP = 1 << 32  # XEP-0198 counts are modulo 2^32


# -- the changes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change(A.Action):
    """A change of the delivery state, to be persisted as it is."""


@dataclass(frozen=True, slots=True)
class Logged(Change):
    """A room message appended to the log (before any relay of it goes out)."""

    seq: int
    room: str
    stanza_id: str | None
    nick: str | None
    private: bool
    stamp: float
    body: str | None
    subject: str | None
    text: str  # the relay's readable fallback
    ref: object  # the original stanza, as it is forwarded
    key: str | None = None  # what de-duplicates it
    # The room's catch-up cursor moves past it, in the same change: logged and caught up
    # are one fact (a crash between the two would have the next start catch it up again,
    # and relay it a second time to a client that gets it in its playback too).
    room_cursor: tuple[str | None, float] | None = None


@dataclass(frozen=True, slots=True)
class CursorMoved(Change):
    """A client's cursor in a room is now ``seq`` (forward, or back: owed again)."""

    client: str
    room: str
    seq: int


@dataclass(frozen=True, slots=True)
class InFlight(Change):
    """A relay about to be sent.  ``wire`` is where it stands in the XEP-0198 count of the
    session it goes out on: (session id, number), which the edge knows as it sends it."""

    relay_id: str
    client: str
    room: str
    seq: int
    wire: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Acked(Change):
    """The server has these relays; their receipts are due (they stay in flight)."""

    relay_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Settled(Change):
    """These relays are no longer in flight: delivered (their cursors moved) or owed again."""

    relay_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pushed(Change):
    """The server has message ``seq`` of ``room`` for these clients (sent to the account's
    bare JID to be stored): their playback skips it.  Their cursors stay where they are
    (earlier messages may still be owed)."""

    clients: tuple[str, ...]
    room: str
    seq: int


@dataclass(frozen=True, slots=True)
class PushesForgotten(Change):
    """These stored messages no longer need skipping for ``client``: its cursor in their
    rooms is past them."""

    client: str
    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Away(Change):
    """A client went away after message ``seq``, at ``at``; None: it is back and has had
    its playback."""

    client: str
    seq: int | None
    at: float | None = None


@dataclass(frozen=True, slots=True)
class AnswersReceipts(Change):
    client: str
    answers: bool


@dataclass(frozen=True, slots=True)
class CursorsForgotten(Change):
    """These clients' cursors and relays in flight go; their away marks stay."""

    clients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientsForgotten(Change):
    """Everything about these clients' deliveries goes (their settings are not the ledger's)."""

    clients: tuple[str, ...]


# -- what a store keeps -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flight:
    """A relay in flight, as kept."""

    client: str
    room: str
    seq: int
    acked: bool = False  # the server has it; its receipt is due
    wire: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class LedgerState:
    """Everything a LedgerStore keeps for the ledger (what :meth:`LedgerStore.load` gives)."""

    last_seq: int = 0
    cursors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    away: Mapping[str, int] = field(default_factory=dict)
    away_at: Mapping[str, float] = field(default_factory=dict)  # when each went (where known)
    flights: Mapping[str, Flight] = field(default_factory=dict)
    receipts: frozenset[str] = frozenset()
    pushed: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # client → seq → room


class LedgerStore(Protocol):
    """Where the ledger's changes are kept: the SQLite store, or memory (tests)."""

    def apply(self, changes: Sequence[Change]) -> None:
        """Persist the changes, in order, exactly as they say."""

    def load(self) -> LedgerState: ...

    def messages_after(
        self, cursors: Mapping[str, int], default: int, limit: int, after: int = 0
    ) -> tuple[list[Stored], int]:
        """The log after each room's cursor (``default`` for other rooms) and after
        ``after``, oldest first: at most ``limit`` messages, and 1 if there are more."""


# -- crash settlement ---------------------------------------------------------------------------


def reached_server(flight: Flight, previous: tuple[str, int] | None, handled: int | None) -> bool:
    """Did the server have this relay in flight at a crash?  It did if it acknowledged it
    (only its receipt was due), or if it was sent on the session the server reports on and
    stands within the count of our stanzas the server says it handled (XEP-0198 §4; counts
    wrap at 2^32).  Without an answer: no (owed again; a possible duplicate, never a loss)."""
    if flight.acked:
        return True
    if handled is None or previous is None or flight.wire is None:
        return False
    sm_id, number = flight.wire
    return sm_id == previous[0] and (handled - number) % SM_WRAP < SM_WRAP // 2
