"""Concurrency limits (QueueLimits.concurrency / key_concurrency): counted from the running jobs in
storage, so a slot is back the moment its job leaves ``running``, by whatever way."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.types import Job, Outcome

from .helpers import (
    claim,
    claim_ids,
    claim_limited,
    complete,
    fail,
    finish,
    insert,
    new_job,
    set_limits,
    yield_to_loop,
)
from .test_concurrency import run_concurrently
from .test_notifier import PROMPT


async def test_at_most_n_jobs_of_the_queue_run_at_once(storage: Storage) -> None:
    await set_limits(storage, concurrency=2)
    await insert(storage, *(new_job(id=f"job-{n}") for n in range(5)))
    first = await claim_limited(storage, limit=10)
    assert [job.id for job in first] == ["job-0", "job-1"]
    assert first.retry_after is None  # a slot frees when a job ends, not at a time
    assert await claim(storage) == []
    assert await complete(storage, first[0]) is not None
    assert await claim_ids(storage) == ["job-2"]


async def test_the_limit_counts_jobs_claimed_by_other_workers(storage: Storage) -> None:
    await set_limits(storage, concurrency=3)
    await insert(storage, *(new_job() for _ in range(6)))
    assert len(await claim(storage, limit=2, worker_id="w1")) == 2
    assert len(await claim(storage, limit=2, worker_id="w2")) == 1
    assert await claim(storage, limit=2, worker_id="w3") == []


async def _complete(storage: Storage, job: Job, clock: ManualClock) -> None:
    await complete(storage, job)


async def _fail_with_retry(storage: Storage, job: Job, clock: ManualClock) -> None:
    await fail(storage, job, clock, retry_delay=3600.0)


async def _fail_to_dead(storage: Storage, job: Job, clock: ManualClock) -> None:
    await fail(storage, job, clock, retryable=False)


async def _cancelled(storage: Storage, job: Job, clock: ManualClock) -> None:
    await storage.job_cancel(job.id)
    await finish(storage, job, Outcome.CANCELLED)


async def _released(storage: Storage, job: Job, clock: ManualClock) -> None:
    await finish(storage, job, Outcome.RELEASED)


async def _lease_expired(storage: Storage, job: Job, clock: ManualClock) -> None:
    clock.advance(job.lease + 1)
    await storage.job_reap_expired()


WAYS_OUT: dict[str, Callable[[Storage, Job, ManualClock], Awaitable[None]]] = {
    "completed": _complete,
    "failed": _fail_with_retry,
    "dead": _fail_to_dead,
    "cancelled": _cancelled,
    "released": _released,
    "reaped": _lease_expired,
}


@pytest.mark.parametrize("way_out", list(WAYS_OUT))
async def test_every_way_out_of_running_gives_the_slot_back(
    storage: Storage, clock: ManualClock, way_out: str
) -> None:
    await set_limits(storage, concurrency=1)
    await insert(
        storage, new_job(id="first", max_retries=0 if way_out == "dead" else 3), new_job(id="second")
    )
    [running] = await claim(storage)
    assert running.id == "first"
    assert await claim(storage) == []
    await WAYS_OUT[way_out](storage, running, clock)
    # A released job is pending again and still first in line (a reaped one is due from now: behind
    # "second"); either way exactly one slot is free.
    assert await claim_ids(storage, limit=10) == (["first"] if way_out == "released" else ["second"])


async def test_each_concurrency_key_has_its_own_slots(storage: Storage) -> None:
    await set_limits(storage, key_concurrency=1)
    await insert(
        storage,
        new_job(id="acct1-a", concurrency_key="acct-1"),
        new_job(id="acct1-b", concurrency_key="acct-1"),
        new_job(id="acct2-a", concurrency_key="acct-2"),
        new_job(id="no-key"),
        new_job(id="no-key-2"),
    )
    claimed = await claim(storage, limit=10)
    assert [job.id for job in claimed] == ["acct1-a", "acct2-a", "no-key", "no-key-2"]
    assert await claim(storage) == []
    assert await complete(storage, claimed[0]) is not None
    assert await claim_ids(storage) == ["acct1-b"]


async def test_queue_and_key_concurrency_together(storage: Storage) -> None:
    await set_limits(storage, concurrency=2, key_concurrency=1)
    await insert(
        storage,
        new_job(id="a1", concurrency_key="a"),
        new_job(id="a2", concurrency_key="a"),
        new_job(id="b1", concurrency_key="b"),
        new_job(id="c1", concurrency_key="c"),
    )
    assert await claim_ids(storage, limit=10) == ["a1", "b1"]


async def test_a_full_key_is_passed_over_for_the_next_job(storage: Storage) -> None:
    await set_limits(storage, key_concurrency=2)
    await insert(storage, *(new_job(id=f"big-{n:02}", concurrency_key="big") for n in range(30)))
    await insert(storage, new_job(id="other", concurrency_key="other"))
    assert await claim_ids(storage, limit=5) == ["big-00", "big-01", "other"]


async def test_concurrent_claimers_together_never_exceed_the_limit(
    storage: Storage, shared_url: str | None
) -> None:
    """4 participants (processes where the backend allows) claim at once, three times each, from a
    queue limited to 3 running jobs: 3 are claimed in all."""
    await set_limits(storage, "capped", concurrency=3)
    await insert(storage, *(new_job(queue="capped") for _ in range(40)))
    results = await run_concurrently(storage, shared_url, "claim_once", 4, queue="capped", limit=10, rounds=3)
    claims = Counter(job_id for r in results for job_id in r["claimed"])
    assert sum(claims.values()) == 3
    assert all(count == 1 for count in claims.values())


async def test_a_freed_slot_wakes_the_queues_workers(storage: Storage) -> None:
    await set_limits(storage, "capped", concurrency=1)
    await insert(storage, new_job(queue="capped"), new_job(queue="capped"))
    [running] = await claim(storage, queues=["capped"])
    waiter = asyncio.create_task(storage.wait_for_jobs(["capped"], timeout=30.0))
    await yield_to_loop()
    assert not waiter.done()
    await complete(storage, running)
    assert await asyncio.wait_for(waiter, timeout=PROMPT) is True
