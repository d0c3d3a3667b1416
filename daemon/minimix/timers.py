"""The app's clock: apscheduler jobs that only post events (:class:`Jobs`), and the core's
timers, multiplexed onto one of them (:class:`Timers`).

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

from apscheduler.schedulers.asyncio import AsyncIOScheduler

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


class Jobs:
    """apscheduler for the app: every job posts its event to the app's queue, nothing more
    (the app's one task handles it).  Jobs are named; adding a name again replaces it."""

    def __init__(self, loop: Any, post: Callable[[object], None]) -> None:
        self._post = post
        self._scheduler = AsyncIOScheduler(event_loop=loop, timezone=dt.UTC)
        self.timers = Timers(self._scheduler, self._post_async)

    async def _post_async(self, event: object) -> None:
        # apscheduler runs plain functions in a thread pool; coroutines run in the loop.
        self._post(event)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        self._scheduler.shutdown(wait=False)

    def every(self, job_id: str, seconds: float, event: object, *, jitter: float | None = None,
              now: bool = False) -> None:
        """Post `event` every `seconds` (± `jitter`), the first time now if `now`."""
        extra = {"next_run_time": dt.datetime.now(dt.UTC)} if now else {}
        self._scheduler.add_job(self._post_async, "interval", seconds=seconds, jitter=jitter, args=[event],
                                id=job_id, replace_existing=True, **extra)

    def once(self, job_id: str, delay: float, event: object) -> None:
        """Post `event` once, `delay` seconds from now (however late the loop gets to it)."""
        self._scheduler.add_job(self._post_async, "date", args=[event], id=job_id, replace_existing=True,
                                run_date=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay),
                                misfire_grace_time=None)

    def __contains__(self, job_id: str) -> bool:
        return self._scheduler.get_job(job_id) is not None

    def cancel(self, job_id: str) -> None:
        if self._scheduler.get_job(job_id) is not None:
            self._scheduler.remove_job(job_id)
