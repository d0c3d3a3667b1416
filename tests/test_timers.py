"""The timer multiplexer: one apscheduler job, always at the earliest live deadline; and the
app's named jobs."""

import asyncio
import time

from minimix.timers import JOB_ID, Jobs, Timers


class FakeScheduler:
    def __init__(self):
        self.jobs = {}
        self.calls = 0

    def add_job(self, func, trigger, *, run_date, args, id, replace_existing, misfire_grace_time):
        self.calls += 1
        self.jobs[id] = run_date.timestamp()


async def post(event):
    pass


def test_one_job_at_the_earliest_deadline_and_lazy_disarm():
    sched = FakeScheduler()
    timers = Timers(sched, post)
    for n in range(1000):
        timers.arm(f"join:{n}", 100.0 + n, f"e{n}")
    assert sched.calls == 1 and sched.jobs[JOB_ID] == 100.0  # later deadlines: no wake-up
    timers.arm("ping:x", 50.0, "early")
    assert sched.jobs[JOB_ID] == 50.0
    timers.disarm("ping:x")
    timers.disarm("join:0")
    timers.arm("join:1", 500.0, "moved")  # re-armed later: the old entry is stale
    assert timers.due(100.5) == []  # 50 disarmed, 100 disarmed, 101 moved
    assert sched.jobs[JOB_ID] == 102.0  # the next live deadline
    assert timers.due(103.0) == ["e2", "e3"]
    assert len(timers) == 997
    rest = timers.due(10_000.0)
    assert rest.index("moved") == rest.index("e400") + 1  # 500.0: e400 was armed first
    assert rest[-1] == "e999"
    assert len(timers) == 0


def test_rearm_replaces_the_deadline():
    sched = FakeScheduler()
    timers = Timers(sched, post)
    timers.arm("k", 10.0, "first")
    timers.arm("k", 5.0, "second")
    assert timers.due(6.0) == ["second"]
    assert timers.due(20.0) == []


def test_jobs_post_their_events_and_are_cancelled_by_name():
    async def main() -> list[object]:
        posted: list[object] = []
        jobs = Jobs(asyncio.get_running_loop(), posted.append)
        jobs.start()
        try:
            jobs.once("once", 0.0, "once")
            jobs.every("tick", 0.02, "tick", now=True)
            assert "tick" in jobs
            deadline = time.monotonic() + 20
            while not ("once" in posted and posted.count("tick") >= 2):
                assert time.monotonic() < deadline, posted
                await asyncio.sleep(0.01)
            jobs.cancel("tick")
            jobs.cancel("tick")  # a job already gone: nothing to do
            assert "tick" not in jobs and "once" not in jobs  # a date job is gone once it ran
        finally:
            jobs.shutdown()
        return posted

    posted = asyncio.run(main())
    assert posted.count("once") == 1
