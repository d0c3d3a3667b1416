"""The stream's deadtime timers, checked lazily.

Cost (latency): XMLStream tells its AlivenessMonitor of every read, and the monitor cancels
both deadtime timers and arms them anew (two cancels, two call_later) before what was read
is parsed; the cancelled timers pile up in the loop's heap.  The same behaviour, lazily: a
read notes the time (and arms a timer only where none is armed); a timer that fires looks at
when data last came, and arms itself again for what is left of its limit if some came since,
else trips as before.
Test: tests/compat/test_lazy_timers.py (test_stock_reads_rearm_the_deadtime_timers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aioxmpp.utils

_orig_notify_received = aioxmpp.utils.AlivenessMonitor.notify_received
_orig_trip_soft = aioxmpp.utils.AlivenessMonitor._trip_soft_limit
_orig_trip_hard = aioxmpp.utils.AlivenessMonitor._trip_hard_limit


def _notify_received(self: Any) -> None:
    self._soft_limit_tripped = self._hard_limit_tripped = False
    self._last_rx = time.monotonic()
    if (self._soft_limit is not None and self._soft_limit_timer is None) or (
        self._hard_limit is not None and self._hard_limit_timer is None
    ):
        self._retrigger_timers()


def _lazy_trip(kind: str, original: Callable[[Any], None]) -> Callable[[Any], None]:
    timer_attr = f"_{kind}_limit_timer"

    def trip(self: Any) -> None:
        setattr(self, timer_attr, None)
        limit = getattr(self, f"_{kind}_limit")
        if limit is None:
            return
        left = limit.total_seconds() - (time.monotonic() - self._last_rx)
        if left > 0:  # data came since this timer was armed
            setattr(self, timer_attr, self._loop.call_later(left, getattr(self, f"_trip_{kind}_limit")))
            return
        original(self)

    return trip


def apply() -> None:
    monitor = aioxmpp.utils.AlivenessMonitor
    monitor.notify_received = _notify_received
    monitor._trip_soft_limit = _lazy_trip("soft", _orig_trip_soft)
    monitor._trip_hard_limit = _lazy_trip("hard", _orig_trip_hard)
