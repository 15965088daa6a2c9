"""Unique windows for idempotency keys (job_insert_many): a key may hold for ``unique_for`` seconds, or
only while its job is active (``unique_while=active``); once it lapses, the next job takes it over."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.types import JobState, UniqueWhile

from .helpers import claim, complete, fail, get, insert, insert_one, list_all, new_job, seconds


async def enqueue(storage: Storage, key: str, **fields: object) -> tuple[str, bool]:
    [result] = await storage.job_insert_many([new_job(idempotency_key=key, **fields)])
    return result.job.id, result.created


async def test_a_key_holds_for_its_window_then_passes_to_the_next_job(
    storage: Storage, clock: ManualClock
) -> None:
    first, created = await enqueue(storage, "report", unique_for=60.0)
    assert created
    assert (await get(storage, first)).unique_until == clock.now() + seconds(60)
    clock.advance(59)
    assert await enqueue(storage, "report", unique_for=60.0) == (first, False)
    clock.advance(1)
    second, created = await enqueue(storage, "report", unique_for=60.0)
    assert created
    assert second != first
    assert (await get(storage, first)).idempotency_key is None  # the old job gave its key up
    assert (await get(storage, second)).idempotency_key == "report"
    assert await enqueue(storage, "report", unique_for=60.0) == (second, False)
    assert len(await list_all(storage)) == 2


async def test_a_key_unique_while_active_is_free_once_its_job_completed(
    storage: Storage, clock: ManualClock
) -> None:
    first, _ = await enqueue(storage, "sync", unique_while=UniqueWhile.ACTIVE)
    assert await enqueue(storage, "sync") == (first, False)  # pending
    [running] = await claim(storage)
    assert await enqueue(storage, "sync") == (first, False)  # running
    await complete(storage, running)
    second, created = await enqueue(storage, "sync", unique_while=UniqueWhile.ACTIVE)
    assert created
    assert second != first


async def test_a_failed_job_is_active_a_dead_one_is_not(storage: Storage, clock: ManualClock) -> None:
    first, _ = await enqueue(storage, "k", unique_while=UniqueWhile.ACTIVE, max_retries=1)
    [running] = await claim(storage)
    assert await fail(storage, running, clock, retry_delay=60.0) is JobState.FAILED
    assert await enqueue(storage, "k") == (first, False)
    clock.advance(60)
    [retry] = await claim(storage)
    assert await fail(storage, retry, clock) is JobState.DEAD
    _, created = await enqueue(storage, "k")
    assert created


async def test_a_cancelled_job_frees_an_active_key(storage: Storage) -> None:
    first, _ = await enqueue(storage, "k", unique_while=UniqueWhile.ACTIVE)
    await storage.job_cancel(first)
    _, created = await enqueue(storage, "k")
    assert created


async def test_window_and_active_together_end_at_whichever_comes_first(
    storage: Storage, clock: ManualClock
) -> None:
    _first, _ = await enqueue(storage, "k", unique_for=3600.0, unique_while=UniqueWhile.ACTIVE)
    clock.advance(3600)  # the window ends while the job still waits
    _, created = await enqueue(storage, "k")
    assert created


async def test_without_a_window_a_finished_job_keeps_its_key(storage: Storage) -> None:
    first, _ = await enqueue(storage, "forever")
    [running] = await claim(storage)
    await complete(storage, running)
    assert await enqueue(storage, "forever") == (first, False)


async def test_one_batch_with_a_lapsed_key_twice_makes_one_new_job(
    storage: Storage, clock: ManualClock
) -> None:
    first, _ = await enqueue(storage, "k", unique_for=10.0)
    clock.advance(10)
    results = await storage.job_insert_many(
        [new_job(idempotency_key="k", unique_for=10.0), new_job(idempotency_key="k", unique_for=10.0)]
    )
    assert [r.created for r in results] == [True, False]
    assert results[0].job.id == results[1].job.id != first


async def test_a_lapsed_key_is_not_taken_when_the_batch_fails(storage: Storage, clock: ManualClock) -> None:
    from relay.errors import DuplicateJobError

    first, _ = await enqueue(storage, "k", unique_for=10.0)
    await insert_one(storage, id="taken")
    clock.advance(10)
    try:
        await storage.job_insert_many([new_job(idempotency_key="k"), new_job(id="taken")])
    except DuplicateJobError:
        pass
    else:
        raise AssertionError("a taken id must fail the batch")
    assert (await get(storage, first)).idempotency_key == "k"


async def test_a_chained_job_takes_over_a_lapsed_key(storage: Storage, clock: ManualClock) -> None:
    old, _ = await enqueue(storage, "notify", unique_for=5.0)
    [parent] = await insert(storage, new_job(id="parent", on_success=new_job(idempotency_key="notify")))
    clock.advance(5)
    claimed = [job for job in await claim(storage, limit=10) if job.id == "parent"]
    await complete(storage, claimed[0])
    holders = [job for job in await list_all(storage) if job.idempotency_key == "notify"]
    assert len(holders) == 1
    assert holders[0].parent_id == parent.id
    assert (await get(storage, old)).idempotency_key is None
