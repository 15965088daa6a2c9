"""Builders and short assertions shared by the conformance tests.

Every helper talks to the backend only through the storage seam (``relay.storage.base.Storage``), so a
test reads as the sequence of operations it checks.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.clock import Clock
from relay.jobs.backoff import retry_delay as backoff_retry_delay
from relay.storage.base import Storage
from relay.storage.params import (
    BUILTIN_KINDS,
    ClaimedJobs,
    ClaimParams,
    FinishItem,
    HeartbeatItem,
    HeartbeatResult,
    ListParams,
)
from relay.types import AttemptError, Backoff, Job, JobKind, JobState, NewJob, Outcome, QueueLimits

#: Where every test's ManualClock starts.
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new_job(**overrides: Any) -> NewJob:
    """A small shell job; any NewJob field can be overridden."""
    fields: dict[str, Any] = {"kind": JobKind.SHELL, "payload": {"command": "echo", "args": ["hello"]}}
    fields.update(overrides)
    return NewJob(**fields)


async def insert(storage: Storage, *jobs: NewJob) -> list[Job]:
    """Insert ``jobs`` in one batch and return them as stored (asserting each was created)."""
    results = await storage.job_insert_many(list(jobs))
    assert [r.created for r in results] == [True] * len(jobs)
    return [r.job for r in results]


async def insert_one(storage: Storage, **overrides: Any) -> Job:
    [job] = await insert(storage, new_job(**overrides))
    return job


async def get(storage: Storage, job_id: str) -> Job:
    job = await storage.job_get(job_id)
    assert job is not None, f"job {job_id} is missing"
    return job


async def claim(
    storage: Storage,
    *,
    queues: Sequence[str] = ("default",),
    limit: int = 10,
    worker_id: str = "worker-1",
    kinds: Sequence[JobKind] = BUILTIN_KINDS,
) -> list[Job]:
    return await storage.job_claim(ClaimParams(queues=queues, worker_id=worker_id, limit=limit, kinds=kinds))


async def claim_ids(storage: Storage, **kwargs: Any) -> list[str]:
    return [job.id for job in await claim(storage, **kwargs)]


async def claim_this(storage: Storage, job: Job, worker_id: str = "worker-1") -> Job:
    """Claim ``job``, which must be the next due job of its queue."""
    claimed = await claim(storage, queues=[job.queue], limit=1, worker_id=worker_id)
    assert [j.id for j in claimed] == [job.id]
    return claimed[0]


def token(job: Job) -> str:
    assert job.lease_token, f"job {job.id} holds no lease token"
    return job.lease_token


def attempt_error(job: Job, clock: Clock, message: str = "boom") -> AttemptError:
    return AttemptError(
        attempt=job.attempt,
        type="RuntimeError",
        message=message,
        at=clock.now(),
        traceback="Traceback (most recent call last):\n  ...\nRuntimeError: " + message,
        exit_code=3,
        stderr_tail="last line of stderr",
    )


async def finish(storage: Storage, job: Job, outcome: Outcome, **fields: Any) -> JobState | None:
    """Finish one attempt with the lease token ``job`` holds; returns the state recorded (None: fenced)."""
    [result] = await storage.job_finish_many([FinishItem(job.id, token(job), outcome, **fields)])
    assert result.job_id == job.id
    return result.state


async def complete(storage: Storage, job: Job, result: Any = None) -> JobState | None:
    return await finish(storage, job, Outcome.COMPLETED, result=result)


async def fail(
    storage: Storage,
    job: Job,
    clock: Clock,
    *,
    retry_delay: float = 0.0,
    retryable: bool = True,
    message: str = "boom",
) -> JobState | None:
    return await finish(
        storage,
        job,
        Outcome.FAILED,
        error=attempt_error(job, clock, message),
        retry_delay=retry_delay,
        retryable=retryable,
    )


async def heartbeat(storage: Storage, job: Job, **fields: Any) -> HeartbeatResult:
    return await storage.job_heartbeat_many([HeartbeatItem(job.id, token(job), **fields)])


async def list_all(storage: Storage, *, page_size: int = 500, **filters: Any) -> list[Job]:
    """Every job matching ``filters``, newest first, paging with the cursor."""
    jobs: list[Job] = []
    cursor: str | None = None
    while True:
        page = await storage.job_list(ListParams(limit=page_size, cursor=cursor, **filters))
        jobs.extend(page.jobs)
        if page.next_cursor is None:
            return jobs
        cursor = page.next_cursor


async def job_in_state(storage: Storage, clock: Clock, state: JobState, **overrides: Any) -> Job:
    """A job brought into ``state`` through the seam's own operations.

    For the states reached through a claim (running, completed, failed, dead) the new job must be the
    next due job of its queue. A failed job's retry is an hour away; a scheduled job starts in an hour.
    """
    if state is JobState.SCHEDULED:
        overrides.setdefault("delay", 3600.0)
    job = await insert_one(storage, **overrides)
    if state in (JobState.PENDING, JobState.SCHEDULED):
        assert job.state is state
        return job
    if state is JobState.CANCELLED:
        return await storage.job_cancel(job.id)
    running = await claim_this(storage, job)
    if state is JobState.RUNNING:
        return running
    if state is JobState.COMPLETED:
        recorded = await complete(storage, running, {"ok": True})
    elif state is JobState.FAILED:
        recorded = await fail(storage, running, clock, retry_delay=3600.0)
    elif state is JobState.DEAD:
        recorded = await fail(storage, running, clock, retryable=False)
    else:
        raise AssertionError(f"no recipe for {state}")
    assert recorded is state
    return await get(storage, job.id)


def assert_time(storage: Storage, actual: datetime | None, expected: datetime) -> None:
    """``actual == expected`` within the backend's declared time precision."""
    precision = storage.capabilities.time_precision
    assert actual is not None, f"expected {expected.isoformat()}, got None"
    assert abs(actual - expected) <= precision, f"{actual.isoformat()} != {expected.isoformat()}"


def retry_delay_for(backoff: Backoff, attempt: int) -> float:
    """The retry delay the runtime asks for after ``attempt`` failed (seeded: repeatable)."""
    return backoff_retry_delay(backoff, attempt, random.Random(attempt))


async def yield_to_loop(times: int = 5) -> None:
    """Let other tasks run up to their next await (no time passes)."""
    for _ in range(times):
        await asyncio.sleep(0)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


async def set_limits(storage: Storage, queue: str = "default", **limits: Any) -> None:
    """Give ``queue`` these :class:`QueueLimits` (``rate=RateLimit(...)``, ``concurrency=...``)."""
    await storage.queue_limits_set(queue, QueueLimits(**limits))


async def claim_limited(storage: Storage, **kwargs: Any) -> ClaimedJobs:
    """A claim whose ``retry_after`` the test reads (``claim`` with the result as the seam returns it)."""
    queues = kwargs.pop("queues", ("default",))
    params = ClaimParams(
        queues=queues, worker_id=kwargs.pop("worker_id", "worker-1"), limit=kwargs.pop("limit", 10)
    )
    assert not kwargs, f"unknown arguments {kwargs}"
    return await storage.job_claim(params)


def approx_seconds(actual: float | None, expected: float, tolerance: float = 0.01) -> bool:
    return actual is not None and abs(actual - expected) <= tolerance
