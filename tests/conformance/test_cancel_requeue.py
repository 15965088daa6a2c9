"""job_cancel and job_requeue (semantics.md rules 12 and 13)."""

from __future__ import annotations

import pytest

from relay.clock import ManualClock
from relay.errors import InvalidTransitionError, JobNotFoundError
from relay.storage.base import Storage
from relay.storage.params import RequeueParams
from relay.types import JobState, Outcome

from .helpers import (
    claim,
    claim_this,
    fail,
    finish,
    get,
    heartbeat,
    insert_one,
    job_in_state,
    list_all,
    new_job,
)


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.SCHEDULED, JobState.FAILED], ids=str)
async def test_cancel_of_a_waiting_job(storage: Storage, clock: ManualClock, state: JobState) -> None:
    job = await job_in_state(storage, clock, state)
    clock.advance(5)
    cancelled = await storage.job_cancel(job.id)
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at == clock.now()
    assert await get(storage, job.id) == cancelled
    clock.advance(7200)  # past any run_at
    assert await claim(storage) == []


async def test_cancel_of_a_running_job_is_learned_at_heartbeat(storage: Storage, clock: ManualClock) -> None:
    on_failure = new_job(queue="alerts")
    job = await claim_this(storage, await insert_one(storage, on_failure=on_failure, on_success=on_failure))
    flagged = await storage.job_cancel(job.id)
    assert flagged.state is JobState.RUNNING
    assert flagged.cancel_requested is True
    assert flagged.finished_at is None
    assert flagged.lease_token == job.lease_token
    assert (await heartbeat(storage, job)).cancel_requested == {job.id}
    clock.advance(1)
    assert await finish(storage, job, Outcome.CANCELLED) is JobState.CANCELLED
    stored = await get(storage, job.id)
    assert stored.state is JobState.CANCELLED
    assert stored.finished_at == clock.now()
    assert await list_all(storage, queues=["alerts"]) == []  # no chain after a cancel


async def test_a_job_asked_to_cancel_that_fails_ends_cancelled_not_retried(
    storage: Storage, clock: ManualClock
) -> None:
    # The worker may not have learned of the request yet (it does at its next heartbeat): storage
    # itself does not retry a job an operator asked to cancel, nor run its on_failure job.
    job = await claim_this(
        storage, await insert_one(storage, max_retries=5, on_failure=new_job(queue="alerts"))
    )
    await storage.job_cancel(job.id)
    clock.advance(1)
    assert await fail(storage, job, clock, message="failed on its way out") is JobState.CANCELLED
    stored = await get(storage, job.id)
    assert (stored.state, stored.finished_at, stored.attempt) == (JobState.CANCELLED, clock.now(), 1)
    assert [e.message for e in stored.errors] == ["failed on its way out"]
    assert await list_all(storage, queues=["alerts"]) == []
    clock.advance(7200)
    assert await claim(storage) == []


async def test_a_job_asked_to_cancel_that_is_released_ends_cancelled(
    storage: Storage, clock: ManualClock
) -> None:
    job = await claim_this(storage, await insert_one(storage))
    await storage.job_cancel(job.id)
    clock.advance(1)
    assert await finish(storage, job, Outcome.RELEASED) is JobState.CANCELLED
    stored = await get(storage, job.id)
    assert (stored.state, stored.finished_at, stored.errors) == (JobState.CANCELLED, clock.now(), ())
    assert await claim(storage) == []


@pytest.mark.parametrize("state", [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED], ids=str)
async def test_cancel_of_a_final_job_is_an_invalid_transition(
    storage: Storage, clock: ManualClock, state: JobState
) -> None:
    job = await job_in_state(storage, clock, state)
    with pytest.raises(InvalidTransitionError) as info:
        await storage.job_cancel(job.id)
    assert (info.value.job_id, info.value.state, info.value.action) == (job.id, state.value, "cancel")
    assert await get(storage, job.id) == job


async def test_cancel_of_an_unknown_job(storage: Storage) -> None:
    with pytest.raises(JobNotFoundError) as info:
        await storage.job_cancel("no-such-job")
    assert info.value.job_id == "no-such-job"


@pytest.mark.parametrize("state", [JobState.DEAD, JobState.FAILED, JobState.CANCELLED], ids=str)
async def test_requeue_by_id(storage: Storage, clock: ManualClock, state: JobState) -> None:
    job = await job_in_state(storage, clock, state)
    clock.advance(60)
    [requeued] = await storage.job_requeue(RequeueParams(job_id=job.id))
    assert requeued.id == job.id
    assert requeued.state is JobState.PENDING
    assert requeued.run_at == clock.now()
    assert requeued.finished_at is None
    assert requeued.cancel_requested is False
    assert (requeued.lease_token, requeued.lease_expires_at) == (None, None)
    assert requeued.attempt == job.attempt
    assert requeued.errors == job.errors
    assert await get(storage, job.id) == requeued
    [claimed] = await claim(storage)
    assert (claimed.id, claimed.attempt) == (job.id, job.attempt + 1)


async def test_requeued_dead_job_gets_one_more_attempt(storage: Storage, clock: ManualClock) -> None:
    job = await job_in_state(storage, clock, JobState.DEAD, max_retries=0)
    await storage.job_requeue(RequeueParams(job_id=job.id))
    running = await claim_this(storage, job)
    assert running.attempt == 2
    assert await fail(storage, running, clock, message="again") is JobState.DEAD
    stored = await get(storage, job.id)
    assert [e.message for e in stored.errors] == ["boom", "again"]


async def test_requeue_clears_a_cancel_request(storage: Storage, clock: ManualClock) -> None:
    running = await claim_this(storage, await insert_one(storage))
    await storage.job_cancel(running.id)
    assert await finish(storage, running, Outcome.CANCELLED) is JobState.CANCELLED
    [requeued] = await storage.job_requeue(RequeueParams(job_id=running.id))
    assert requeued.cancel_requested is False
    assert requeued.state is JobState.PENDING


@pytest.mark.parametrize(
    "state", [JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING, JobState.COMPLETED], ids=str
)
async def test_requeue_of_a_job_not_requeueable(
    storage: Storage, clock: ManualClock, state: JobState
) -> None:
    job = await job_in_state(storage, clock, state)
    with pytest.raises(InvalidTransitionError) as info:
        await storage.job_requeue(RequeueParams(job_id=job.id))
    assert (info.value.job_id, info.value.state, info.value.action) == (job.id, state.value, "requeue")
    assert await get(storage, job.id) == job


async def test_requeue_of_an_unknown_job(storage: Storage) -> None:
    with pytest.raises(JobNotFoundError):
        await storage.job_requeue(RequeueParams(job_id="no-such-job"))


async def test_bulk_requeue_by_states_and_queue(storage: Storage, clock: ManualClock) -> None:
    dead_a = await job_in_state(storage, clock, JobState.DEAD, queue="a")
    dead_b = await job_in_state(storage, clock, JobState.DEAD, queue="b")
    failed_a = await job_in_state(storage, clock, JobState.FAILED, queue="a")
    cancelled_a = await job_in_state(storage, clock, JobState.CANCELLED, queue="a")
    completed_a = await job_in_state(storage, clock, JobState.COMPLETED, queue="a")

    requeued = await storage.job_requeue(RequeueParams(states=(JobState.DEAD,), queue="a"))
    assert [job.id for job in requeued] == [dead_a.id]
    assert (await get(storage, dead_b.id)).state is JobState.DEAD

    requeued = await storage.job_requeue(RequeueParams())  # default: the dead-letter queue, every queue
    assert [job.id for job in requeued] == [dead_b.id]

    requeued = await storage.job_requeue(RequeueParams(states=(JobState.FAILED, JobState.CANCELLED)))
    assert sorted(job.id for job in requeued) == sorted([failed_a.id, cancelled_a.id])
    assert all(job.state is JobState.PENDING for job in requeued)
    assert (await get(storage, completed_a.id)).state is JobState.COMPLETED
    assert await storage.job_requeue(RequeueParams(states=tuple(JobState.requeueable()))) == []


async def test_bulk_requeue_refuses_states_that_are_not_requeueable(
    storage: Storage, clock: ManualClock
) -> None:
    dead = await job_in_state(storage, clock, JobState.DEAD)
    with pytest.raises(ValueError):
        await storage.job_requeue(RequeueParams(states=(JobState.DEAD, JobState.PENDING)))
    assert await get(storage, dead.id) == dead
