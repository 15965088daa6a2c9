"""job_finish_many (semantics.md rule 4): completed, failed (retry or dead), cancelled, released; fencing."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import FinishItem
from relay.types import Backoff, BackoffKind, JobState, Outcome

from .helpers import (
    assert_time,
    attempt_error,
    claim,
    claim_this,
    complete,
    fail,
    finish,
    get,
    insert_one,
    list_all,
    retry_delay_for,
    seconds,
    token,
)


async def test_complete_stores_the_result(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage))
    clock.advance(3)
    assert await complete(storage, job, {"rows": 12, "files": ["a", "b"]}) is JobState.COMPLETED
    stored = await get(storage, job.id)
    assert stored.state is JobState.COMPLETED
    assert stored.result == {"rows": 12, "files": ["a", "b"]}
    assert stored.finished_at == clock.now()
    assert stored.updated_at == clock.now()
    assert (stored.lease_token, stored.lease_expires_at) == (None, None)
    assert stored.attempt == 1
    assert stored.errors == ()


async def test_outcome_is_accepted_once(storage: Storage, clock: ManualClock) -> None:
    """Guarantee 2: exactly one accepted outcome; a second finish with the same token changes nothing."""
    job = await claim_this(storage, await insert_one(storage))
    assert await complete(storage, job, "first") is JobState.COMPLETED
    after_first = await get(storage, job.id)
    clock.advance(1)
    assert await complete(storage, job, "second") is None
    assert await fail(storage, job, clock) is None
    assert await get(storage, job.id) == after_first


async def test_fail_schedules_the_retry_by_the_backoff(storage: Storage, clock: ManualClock) -> None:
    backoff = Backoff(BackoffKind.EXPONENTIAL, base=2.0, max=600.0)
    job = await claim_this(storage, await insert_one(storage, backoff=backoff, max_retries=3))
    clock.advance(4)
    delay = retry_delay_for(backoff, job.attempt)
    error = attempt_error(job, clock)
    assert await finish(storage, job, Outcome.FAILED, error=error, retry_delay=delay) is JobState.FAILED
    stored = await get(storage, job.id)
    assert stored.state is JobState.FAILED
    assert_time(storage, stored.run_at, clock.now() + seconds(delay))
    assert stored.errors == (error,)
    assert stored.finished_at is None
    assert (stored.lease_token, stored.lease_expires_at) == (None, None)
    assert stored.updated_at == clock.now()


async def test_failed_job_is_not_claimable_before_its_retry_and_is_after(
    storage: Storage, clock: ManualClock
) -> None:
    job = await claim_this(storage, await insert_one(storage))
    assert await fail(storage, job, clock, retry_delay=30.0) is JobState.FAILED
    clock.advance(29)
    assert await claim(storage) == []
    clock.advance(1)
    [again] = await claim(storage)
    assert again.id == job.id
    assert again.attempt == 2


async def test_errors_accumulate_in_attempt_order(storage: Storage, clock: ManualClock) -> None:
    job = await insert_one(storage, max_retries=2)
    errors = []
    for attempt, expected in ((1, JobState.FAILED), (2, JobState.FAILED), (3, JobState.DEAD)):
        running = await claim_this(storage, job)
        assert running.attempt == attempt
        errors.append(attempt_error(running, clock, f"failure {attempt}"))
        assert await finish(storage, running, Outcome.FAILED, error=errors[-1]) is expected
        clock.advance(1)
    stored = await get(storage, job.id)
    assert stored.errors == tuple(errors)
    assert [e.attempt for e in stored.errors] == [1, 2, 3]


async def test_fail_without_attempts_left_is_dead(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage, max_retries=0))
    clock.advance(2)
    assert await fail(storage, job, clock, retry_delay=10.0) is JobState.DEAD
    stored = await get(storage, job.id)
    assert stored.state is JobState.DEAD
    assert stored.finished_at == clock.now()
    assert [e.message for e in stored.errors] == ["boom"]
    clock.advance(3600)
    assert await claim(storage) == []


async def test_not_retryable_goes_straight_to_dead(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage, max_retries=5))
    assert await fail(storage, job, clock, retryable=False) is JobState.DEAD
    stored = await get(storage, job.id)
    assert stored.state is JobState.DEAD
    assert stored.attempt == 1
    assert stored.finished_at == clock.now()


async def test_fail_without_an_error_records_none(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage))
    assert await finish(storage, job, Outcome.FAILED, retry_delay=1.0) is JobState.FAILED
    assert (await get(storage, job.id)).errors == ()


async def test_cancelled_outcome(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage))
    await storage.job_cancel(job.id)
    clock.advance(1)
    error = attempt_error(job, clock, "cancelled by operator")
    assert await finish(storage, job, Outcome.CANCELLED, error=error) is JobState.CANCELLED
    stored = await get(storage, job.id)
    assert stored.state is JobState.CANCELLED
    assert stored.finished_at == clock.now()
    assert stored.errors == (error,)
    assert (stored.lease_token, stored.lease_expires_at) == (None, None)


async def test_release_gives_the_attempt_back(storage: Storage, clock: ManualClock) -> None:
    job = await insert_one(storage)
    running = await claim_this(storage, job)
    clock.advance(5)
    assert await finish(storage, running, Outcome.RELEASED) is JobState.PENDING
    stored = await get(storage, job.id)
    assert stored.state is JobState.PENDING
    assert stored.attempt == 0
    assert stored.run_at == job.run_at
    assert stored.errors == ()
    assert (stored.lease_token, stored.lease_expires_at) == (None, None)
    assert stored.finished_at is None
    again = await claim_this(storage, job, worker_id="worker-2")
    assert again.attempt == 1


async def test_finish_many_results_in_item_order_with_fencing_per_item(
    storage: Storage, clock: ManualClock
) -> None:
    jobs = [await claim_this(storage, await insert_one(storage, id=f"j{i}", max_retries=0)) for i in range(4)]
    before_stale = await get(storage, "j2")
    results = await storage.job_finish_many(
        [
            FinishItem("j3", token(jobs[3]), Outcome.FAILED, error=attempt_error(jobs[3], clock)),
            FinishItem("j0", token(jobs[0]), Outcome.COMPLETED, result=0),
            FinishItem("j2", "stale-token", Outcome.COMPLETED),
            FinishItem("missing", "whatever", Outcome.COMPLETED),
            FinishItem("j1", token(jobs[1]), Outcome.RELEASED),
        ]
    )
    assert [(r.job_id, r.state) for r in results] == [
        ("j3", JobState.DEAD),
        ("j0", JobState.COMPLETED),
        ("j2", None),
        ("missing", None),
        ("j1", JobState.PENDING),
    ]
    assert results[2].lease_lost
    assert await get(storage, "j2") == before_stale
    assert await storage.job_get("missing") is None
    assert len(await list_all(storage)) == 4
