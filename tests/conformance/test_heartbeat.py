"""job_heartbeat_many (semantics.md rule 3): leases extended, progress and checkpoints saved, fencing."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import HeartbeatItem
from relay.types import JobState

from .helpers import claim, claim_this, complete, fail, get, heartbeat, insert_one, seconds, token


async def test_heartbeat_extends_the_lease_by_the_jobs_own_lease(
    storage: Storage, clock: ManualClock
) -> None:
    job = await claim_this(storage, await insert_one(storage, lease=30.0))
    clock.advance(20)
    result = await heartbeat(storage, job)
    assert result.extended == {job.id}
    assert result.lost == frozenset()
    assert result.cancel_requested == frozenset()
    stored = await get(storage, job.id)
    assert stored.lease_expires_at == clock.now() + seconds(30)
    assert stored.state is JobState.RUNNING
    assert stored.lease_token == job.lease_token
    assert stored.attempt == 1


async def test_heartbeat_saves_progress_and_checkpoint(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage, checkpoint={"step": 0}))
    await heartbeat(storage, job, progress=0.25, checkpoint={"step": 1})
    stored = await get(storage, job.id)
    assert (stored.progress, stored.checkpoint) == (0.25, {"step": 1})

    await heartbeat(storage, job)  # None keeps both
    stored = await get(storage, job.id)
    assert (stored.progress, stored.checkpoint) == (0.25, {"step": 1})

    await heartbeat(storage, job, progress=0.5)
    stored = await get(storage, job.id)
    assert (stored.progress, stored.checkpoint) == (0.5, {"step": 1})

    await heartbeat(storage, job, checkpoint=None, save_checkpoint=True)  # clears the checkpoint
    stored = await get(storage, job.id)
    assert (stored.progress, stored.checkpoint) == (0.5, None)


async def test_new_job_checkpoint_is_handed_to_the_first_attempt(storage: Storage) -> None:
    job = await insert_one(storage, checkpoint={"cursor": "abc"})
    [claimed] = await claim(storage)
    assert claimed.id == job.id
    assert claimed.checkpoint == {"cursor": "abc"}


async def test_saved_checkpoint_is_handed_to_the_next_attempt(storage: Storage, clock: ManualClock) -> None:
    job = await insert_one(storage, checkpoint={"page": 0})
    first = await claim_this(storage, job)
    await heartbeat(storage, first, checkpoint={"page": 7})
    assert await fail(storage, first, clock, retry_delay=0.0) is JobState.FAILED
    second = await claim_this(storage, job)
    assert second.attempt == 2
    assert second.checkpoint == {"page": 7}


async def test_heartbeat_with_a_wrong_token_is_lost_and_changes_nothing(
    storage: Storage, clock: ManualClock
) -> None:
    job = await claim_this(storage, await insert_one(storage))
    clock.advance(10)
    before = await get(storage, job.id)
    result = await storage.job_heartbeat_many([HeartbeatItem(job.id, "not-the-token", progress=0.9)])
    assert result.lost == {job.id}
    assert result.extended == frozenset()
    assert await get(storage, job.id) == before


async def test_heartbeat_of_a_missing_or_finished_job_is_lost(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage))
    assert await complete(storage, job) is JobState.COMPLETED
    before = await get(storage, job.id)
    result = await storage.job_heartbeat_many(
        [HeartbeatItem(job.id, token(job), progress=0.5), HeartbeatItem("no-such-job", "whatever")]
    )
    assert result.lost == {job.id, "no-such-job"}
    assert result.extended == frozenset()
    assert await get(storage, job.id) == before


async def test_heartbeat_many_sorts_each_item(storage: Storage, clock: ManualClock) -> None:
    a = await claim_this(storage, await insert_one(storage, id="a", lease=10.0))
    b = await claim_this(storage, await insert_one(storage, id="b", lease=60.0))
    c = await claim_this(storage, await insert_one(storage, id="c"))
    await storage.job_cancel(c.id)
    clock.advance(5)
    result = await storage.job_heartbeat_many(
        [
            HeartbeatItem(a.id, token(a), progress=0.1),
            HeartbeatItem(b.id, "stale"),
            HeartbeatItem(c.id, token(c)),
        ]
    )
    assert result.extended == {"a", "c"}
    assert result.lost == {"b"}
    assert result.cancel_requested == {"c"}
    assert (await get(storage, "a")).lease_expires_at == clock.now() + seconds(10)
    assert (await get(storage, "b")).lease_expires_at == b.lease_expires_at
    assert (await get(storage, "b")).progress is None


async def test_heartbeat_tells_the_worker_about_a_cancel_request(
    storage: Storage, clock: ManualClock
) -> None:
    job = await claim_this(storage, await insert_one(storage))
    assert (await heartbeat(storage, job)).cancel_requested == frozenset()
    cancelled = await storage.job_cancel(job.id)
    assert cancelled.state is JobState.RUNNING
    assert cancelled.cancel_requested is True
    result = await heartbeat(storage, job)
    assert result.extended == {job.id}
    assert result.cancel_requested == {job.id}
