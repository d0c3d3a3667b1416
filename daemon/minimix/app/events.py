"""The app's own events: what signals and the app's timers post to the loop (the core's
are in core.events; the edge's own in xmpp.events)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shutdown:
    signal: str


@dataclass(frozen=True, slots=True)
class Reload:
    pass


@dataclass(frozen=True, slots=True)
class ResyncDue:
    reason: str


@dataclass(frozen=True, slots=True)
class WatchdogDue:
    pass


@dataclass(frozen=True, slots=True)
class SnapshotDue:
    pass


@dataclass(frozen=True, slots=True)
class PruneDue:
    pass


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing to do: the loop's task is to look at its state (set while it was idle)."""
