"""The running set wakes the heartbeat thread only for a job due before the thread means to wake:
waking it for each of thousands of claims a second would cost more than the jobs."""

from __future__ import annotations

from datetime import UTC, datetime

from relay.runtime.attempt import Attempt
from relay.runtime.context import JobContext
from relay.runtime.heartbeat import RunningSet
from relay.types import Backoff, Job, JobKind, JobState, new_job_id


def attempt(lease: float) -> Attempt:
    now = datetime.now(UTC)
    job = Job(
        id=new_job_id(),
        queue="default",
        kind=JobKind.TASK,
        payload={"task": "t"},
        state=JobState.RUNNING,
        priority=0,
        attempt=1,
        max_retries=0,
        backoff=Backoff(),
        timeout=None,
        lease=lease,
        run_at=now,
        created_at=now,
        updated_at=now,
        lease_token="token",
    )
    return Attempt(job, JobContext(job))


def test_a_job_due_after_the_planned_wake_leaves_the_thread_asleep() -> None:
    running = RunningSet()
    first = attempt(lease=30)  # beats every 10 s
    running.add(first)
    running.added.clear()
    wake_at = running.plan_wake(first.started + 5)
    assert wake_at == first.started + 5

    running.add(attempt(lease=60))  # due in 20 s: later than the planned wake
    assert not running.added.is_set()


def test_a_job_due_before_the_planned_wake_wakes_the_thread() -> None:
    running = RunningSet()
    long = attempt(lease=300)
    running.add(long)
    running.plan_wake(long.started + 100)

    short = attempt(lease=0.3)  # beats every 0.1 s: long before the planned wake
    running.add(short)
    assert running.added.is_set()
    assert running.plan_wake(short.started + 100) == short.next_beat


def test_an_idle_thread_planned_for_its_worker_beat_is_woken_by_the_first_job() -> None:
    running = RunningSet()
    job = attempt(lease=3)  # beats every second
    assert running.plan_wake(job.started + 5) == job.started + 5  # nothing runs: the worker beat
    running.add(job)
    assert running.added.is_set()
