"""job_reap_expired (semantics.md rule 6): expired leases go back to pending, to dead, or to cancelled."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import ReapResult
from relay.types import AttemptError, JobState

from .helpers import claim, claim_this, get, heartbeat, insert_one, list_all, new_job

NOTHING_REAPED = ReapResult()


def lease_expired(attempt: int, clock: ManualClock) -> AttemptError:
    """The error the reaper records (semantics.md rule 6)."""
    message = "lease expired: the worker stopped heartbeating"
    return AttemptError(attempt=attempt, type="LeaseExpired", message=message, at=clock.now())


async def test_not_reaped_before_the_lease_expires(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage, lease=30.0))
    clock.advance(30)  # lease_expires_at == now: not yet expired (strictly less is)
    assert await storage.job_reap_expired() == NOTHING_REAPED
    assert await get(storage, job.id) == job


async def test_expired_lease_with_attempts_left_goes_back_to_pending(
    storage: Storage, clock: ManualClock
) -> None:
    job = await claim_this(storage, await insert_one(storage, lease=30.0, max_retries=1))
    clock.advance(30.5)
    result = await storage.job_reap_expired()
    assert result.requeued == (job.id,)
    assert (result.dead, result.cancelled) == ((), ())
    stored = await get(storage, job.id)
    assert stored.state is JobState.PENDING
    assert stored.run_at == clock.now()
    assert (stored.lease_token, stored.lease_expires_at) == (None, None)
    assert stored.attempt == 1
    assert stored.errors == (lease_expired(1, clock),)
    assert stored.finished_at is None
    assert await storage.job_reap_expired() == NOTHING_REAPED
    again = await claim_this(storage, job, worker_id="worker-2")
    assert again.attempt == 2


async def test_expired_lease_without_attempts_left_goes_to_dead_with_on_failure(
    storage: Storage, clock: ManualClock
) -> None:
    on_failure = new_job(queue="alerts", payload={"command": "page-oncall"})
    job = await claim_this(storage, await insert_one(storage, max_retries=0, on_failure=on_failure))
    clock.advance(31)
    result = await storage.job_reap_expired()
    assert result.dead == (job.id,)
    assert (result.requeued, result.cancelled) == ((), ())
    stored = await get(storage, job.id)
    assert stored.state is JobState.DEAD
    assert stored.finished_at == clock.now()
    assert stored.errors == (lease_expired(1, clock),)
    [chained] = await list_all(storage, queues=["alerts"])
    assert chained.parent_id == job.id
    assert chained.payload == {"command": "page-oncall"}
    assert chained.state is JobState.PENDING
    assert chained.run_at == clock.now()


async def test_job_that_kills_its_worker_ends_dead_after_its_retries(
    storage: Storage, clock: ManualClock
) -> None:
    """Guarantee 4: the attempt is counted at claim, so repeated lease expiries use up the retries."""
    job = await insert_one(storage, max_retries=2, lease=10.0)
    for attempt in (1, 2, 3):
        running = await claim_this(storage, job)
        assert running.attempt == attempt
        clock.advance(11)
        await storage.job_reap_expired()
    stored = await get(storage, job.id)
    assert stored.state is JobState.DEAD
    assert [e.attempt for e in stored.errors] == [1, 2, 3]
    assert {e.type for e in stored.errors} == {"LeaseExpired"}


async def test_running_job_with_cancel_requested_is_reaped_to_cancelled(
    storage: Storage, clock: ManualClock
) -> None:
    job = await claim_this(storage, await insert_one(storage, on_failure=new_job(queue="alerts")))
    await storage.job_cancel(job.id)
    clock.advance(31)
    result = await storage.job_reap_expired()
    assert result.cancelled == (job.id,)
    assert (result.requeued, result.dead) == ((), ())
    stored = await get(storage, job.id)
    assert stored.state is JobState.CANCELLED
    assert stored.finished_at == clock.now()
    assert stored.errors == (lease_expired(1, clock),)
    assert await list_all(storage, queues=["alerts"]) == []


async def test_heartbeat_keeps_a_job_from_being_reaped(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage, lease=30.0))
    for _ in range(5):
        clock.advance(20)
        assert (await heartbeat(storage, job)).extended == {job.id}
        assert await storage.job_reap_expired() == NOTHING_REAPED
    assert (await get(storage, job.id)).state is JobState.RUNNING
    clock.advance(31)
    assert (await storage.job_reap_expired()).requeued == (job.id,)


async def test_reaper_only_touches_expired_running_jobs(storage: Storage, clock: ManualClock) -> None:
    short = await claim_this(storage, await insert_one(storage, id="short", lease=5.0))
    long = await claim_this(storage, await insert_one(storage, id="long", lease=60.0))
    await insert_one(storage, id="waiting")
    clock.advance(10)
    result = await storage.job_reap_expired()
    assert result.requeued == ("short",)
    assert await get(storage, "long") == long
    assert (await get(storage, "waiting")).errors == ()
    assert [e.type for e in (await get(storage, short.id)).errors] == ["LeaseExpired"]
    # The reaped job is due at the reap time, after "waiting" (due since T0).
    assert [job.id for job in await claim(storage, limit=5)] == ["waiting", "short"]
