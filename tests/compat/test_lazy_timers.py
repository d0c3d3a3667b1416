"""fastpath.timers: a read notes the time; stock aioxmpp cancels and arms both deadtime
timers on every read."""

import datetime as dt
from unittest import mock

import aioxmpp.utils
import pytest

from compat import streams  # noqa: F401  (applies the fast paths)
from minimix.xmpp.compat.fastpath import timers


class FakeLoop:
    def __init__(self):
        self.armed = []

    def call_later(self, delay, callback):
        handle = mock.Mock(delay=delay, callback=callback)
        self.armed.append(handle)
        return handle


def test_stock_reads_rearm_the_deadtime_timers():
    loop = FakeLoop()
    monitor = aioxmpp.utils.AlivenessMonitor(loop)
    monitor.deadtime_soft_limit = dt.timedelta(seconds=10)
    with mock.patch.object(aioxmpp.utils.AlivenessMonitor, "notify_received", timers._orig_notify_received):
        for _ in range(5):
            monitor.notify_received()
    assert len(loop.armed) == 6  # one timer armed (and one cancelled) per read


def test_reads_do_not_rearm_the_deadtime_timers():
    """A read notes the time; a timer that fires after data came arms itself again for the
    rest of its limit; with no data for the whole limit it trips, once."""
    loop, now = FakeLoop(), [1000.0]
    monitor = aioxmpp.utils.AlivenessMonitor(loop)
    tripped = []
    monitor.on_deadtime_soft_limit_tripped.connect(lambda: tripped.append(now[0]))
    with mock.patch.object(timers.time, "monotonic", lambda: now[0]), \
         mock.patch.object(aioxmpp.utils.time, "monotonic", lambda: now[0]):  # fmt: skip
        monitor.deadtime_soft_limit = dt.timedelta(seconds=10)
        assert len(loop.armed) == 1
        for i in range(1, 101):
            now[0] = 1000.0 + i / 10
            monitor.notify_received()  # the last at 1010
        assert len(loop.armed) == 1  # nothing cancelled, nothing armed
        now[0] = 1010.0
        loop.armed[-1].callback()  # armed at 1000 for 10 s: data came at 1010
        assert tripped == [] and loop.armed[-1].delay == pytest.approx(10.0)
        now[0] = 1020.5
        loop.armed[-1].callback()
        assert tripped == [1020.5]
        monitor.notify_received()  # a read after a trip arms the timer again
        assert len(loop.armed) == 3
