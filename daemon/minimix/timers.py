"""The core's timers, multiplexed onto one apscheduler job.

The core arms and disarms thousands of timers (a join timeout and a self-ping per room); one
apscheduler job per timer costs a scheduler wake-up per change.  Here every deadline lives in
a heap and a single job is kept at the earliest one; when it fires it only posts
:class:`TimersDue`, and the app's loop collects the due events with :meth:`Timers.due`.
Disarming is lazy: an entry that was disarmed or re-armed is skipped when it comes up.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JOB_ID = "core-timers"


@dataclass(frozen=True, slots=True)
class TimersDue:
    pass


class Timers:
    def __init__(self, scheduler: Any, post: Callable[[object], Any]) -> None:
        self._scheduler = scheduler
        self._post = post  # a coroutine function: apscheduler runs those in the loop
        self._armed: dict[str, tuple[float, int]] = {}  # key → (deadline, token)
        self._events: dict[str, object] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._tokens = itertools.count()
        self._job_at: float | None = None

    def __len__(self) -> int:
        return len(self._armed)

    def arm(self, key: str, at: float, event: object) -> None:
        token = next(self._tokens)
        self._armed[key] = (at, token)
        self._events[key] = event
        heapq.heappush(self._heap, (at, token, key))
        if self._job_at is None or at < self._job_at:
            self._schedule(at)

    def disarm(self, key: str) -> None:
        if self._armed.pop(key, None) is not None:
            del self._events[key]

    def due(self, now: float) -> list[object]:
        """The events whose deadline has come, in deadline order; re-arms the job."""
        self._job_at = None
        events = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, token, key = heapq.heappop(heap)
            if self._armed.get(key) == (at, token):
                del self._armed[key]
                events.append(self._events.pop(key))
        while heap and self._armed.get(heap[0][2]) != heap[0][:2]:
            heapq.heappop(heap)  # drop stale entries so the job is set for a live one
        if heap:
            self._schedule(heap[0][0])
        return events

    def _schedule(self, at: float) -> None:
        self._job_at = at
        self._scheduler.add_job(
            self._post,
            "date",
            run_date=dt.datetime.fromtimestamp(at, dt.UTC),
            args=[TimersDue()],
            id=JOB_ID,
            replace_existing=True,
            misfire_grace_time=None,
        )
