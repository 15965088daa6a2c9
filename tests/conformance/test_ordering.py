"""Ordering keys: jobs of one queue and ``ordering_key`` run one at a time, in enqueue order, retries
included (relay.storage.base: at most one blocking job of a key is not held)."""

from __future__ import annotations

import asyncio

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import PruneParams, PurgeParams, RequeueParams
from relay.types import JobState, OrderingDead, Outcome

from .helpers import (
    claim,
    claim_ids,
    complete,
    fail,
    finish,
    get,
    insert,
    insert_one,
    new_job,
    seconds,
    set_limits,
    yield_to_loop,
)
from .test_notifier import PROMPT


async def held(storage: Storage, *job_ids: str) -> list[bool]:
    return [(await get(storage, job_id)).held for job_id in job_ids]


async def test_jobs_of_one_key_run_one_at_a_time_in_order(storage: Storage) -> None:
    await insert(
        storage,
        new_job(id="a1", ordering_key="a"),
        new_job(id="a2", ordering_key="a", priority=10),  # priority does not jump the key's order
        new_job(id="b1", ordering_key="b"),
        new_job(id="free"),
    )
    assert await held(storage, "a1", "a2", "b1", "free") == [False, True, False, False]
    [a1, b1, free] = await claim(storage, limit=10)
    assert [a1.id, b1.id, free.id] == ["a1", "b1", "free"]
    assert await claim(storage, limit=10) == []
    await complete(storage, a1)
    assert await held(storage, "a2") == [False]
    assert await claim_ids(storage, limit=10) == ["a2"]


async def test_a_key_inserted_one_job_at_a_time_keeps_its_order(storage: Storage) -> None:
    for n in range(4):
        await insert_one(storage, id=f"k{n}", ordering_key="k")
    for n in range(4):
        [job] = await claim(storage, limit=10)
        assert job.id == f"k{n}"
        await complete(storage, job)
    assert await claim(storage) == []


async def test_a_failed_job_blocks_its_key_until_it_completes(storage: Storage, clock: ManualClock) -> None:
    await insert(storage, new_job(id="a1", ordering_key="a"), new_job(id="a2", ordering_key="a"))
    [first] = await claim(storage)
    await fail(storage, first, clock, retry_delay=10.0)
    assert await claim(storage) == []  # a2 waits for a1's retry
    clock.advance(10)
    [retry] = await claim(storage)
    assert retry.id == "a1"
    assert retry.attempt == 2
    await complete(storage, retry)
    assert await claim_ids(storage) == ["a2"]


async def test_a_dead_job_lets_its_key_go_on_by_default(storage: Storage, clock: ManualClock) -> None:
    await insert(
        storage, new_job(id="a1", ordering_key="a", max_retries=0), new_job(id="a2", ordering_key="a")
    )
    [first] = await claim(storage)
    assert await fail(storage, first, clock) is JobState.DEAD
    assert await claim_ids(storage) == ["a2"]


async def test_a_dead_job_holds_its_key_when_the_queue_says_block(
    storage: Storage, clock: ManualClock
) -> None:
    await set_limits(storage, ordering_dead=OrderingDead.BLOCK)
    await insert(
        storage,
        new_job(id="a1", ordering_key="a", max_retries=0),
        new_job(id="a2", ordering_key="a"),
        new_job(id="b1", ordering_key="b"),
    )
    [first, b1] = await claim(storage, limit=10)
    assert await fail(storage, first, clock) is JobState.DEAD
    assert await claim(storage) == []  # a2 waits while a1 is in the dead-letter queue
    await complete(storage, b1)
    await storage.job_requeue(RequeueParams(job_id="a1"))
    [again] = await claim(storage, limit=10)
    assert again.id == "a1"  # the requeued job runs first, its key still held for it
    await complete(storage, again)
    assert await claim_ids(storage) == ["a2"]


async def test_purging_the_dead_job_that_holds_a_key_releases_it(
    storage: Storage, clock: ManualClock
) -> None:
    await set_limits(storage, ordering_dead=OrderingDead.BLOCK)
    await insert(
        storage, new_job(id="a1", ordering_key="a", max_retries=0), new_job(id="a2", ordering_key="a")
    )
    [first] = await claim(storage)
    await fail(storage, first, clock)
    assert await storage.job_purge(PurgeParams()) == 1
    assert await claim_ids(storage) == ["a2"]


async def test_pruning_the_dead_job_that_holds_a_key_releases_it(
    storage: Storage, clock: ManualClock
) -> None:
    await set_limits(storage, ordering_dead=OrderingDead.BLOCK)
    await insert(
        storage, new_job(id="a1", ordering_key="a", max_retries=0), new_job(id="a2", ordering_key="a")
    )
    [first] = await claim(storage)
    await fail(storage, first, clock)
    clock.advance(60)
    assert await storage.job_prune(PruneParams(finished_before=clock.now())) == 1
    assert await claim_ids(storage) == ["a2"]


async def test_cancelling_the_waiting_head_releases_the_next(storage: Storage, clock: ManualClock) -> None:
    await insert(
        storage,
        new_job(id="a1", ordering_key="a", delay=3600.0),
        new_job(id="a2", ordering_key="a"),
        new_job(id="a3", ordering_key="a"),
    )
    assert await claim(storage) == []  # a delayed first job keeps the later ones waiting
    await storage.job_cancel("a1")
    assert await held(storage, "a2", "a3") == [False, True]
    assert await claim_ids(storage, limit=10) == ["a2"]


async def test_cancelling_a_held_job_takes_it_out_of_line_only(storage: Storage) -> None:
    await insert(
        storage,
        new_job(id="a1", ordering_key="a"),
        new_job(id="a2", ordering_key="a"),
        new_job(id="a3", ordering_key="a"),
    )
    await storage.job_cancel("a2")
    assert await held(storage, "a2", "a3") == [False, True]
    [first] = await claim(storage, limit=10)
    assert first.id == "a1"
    await complete(storage, first)
    assert await claim_ids(storage, limit=10) == ["a3"]


async def test_a_cancelled_running_head_releases_the_next(storage: Storage) -> None:
    await insert(storage, new_job(id="a1", ordering_key="a"), new_job(id="a2", ordering_key="a"))
    [first] = await claim(storage)
    await storage.job_cancel("a1")  # running: only flagged
    assert await claim(storage) == []
    await finish(storage, first, Outcome.CANCELLED)
    assert await claim_ids(storage) == ["a2"]


async def test_a_reaped_head_keeps_its_key_until_it_ends(storage: Storage, clock: ManualClock) -> None:
    await insert(storage, new_job(id="a1", ordering_key="a", max_retries=1, lease=10.0))
    await insert_one(storage, id="a2", ordering_key="a")
    [_first] = await claim(storage)
    clock.advance(11)
    await storage.job_reap_expired()  # back to pending, still first in its key
    [again] = await claim(storage, limit=10)
    assert again.id == "a1"
    clock.advance(11)
    reaped = await storage.job_reap_expired()  # out of attempts: dead, and the key goes on
    assert reaped.dead == ("a1",)
    assert await claim_ids(storage, limit=10) == ["a2"]


async def test_a_released_head_stays_first(storage: Storage) -> None:
    await insert(storage, new_job(id="a1", ordering_key="a"), new_job(id="a2", ordering_key="a"))
    [first] = await claim(storage)
    await finish(storage, first, Outcome.RELEASED)
    assert await claim_ids(storage, limit=10) == ["a1"]


async def test_a_requeued_cancelled_job_waits_behind_the_current_one(storage: Storage) -> None:
    await insert(
        storage, new_job(id="a1", ordering_key="a", delay=3600.0), new_job(id="a2", ordering_key="a")
    )
    await storage.job_cancel("a1")
    [second] = await claim(storage)
    assert second.id == "a2"
    await storage.job_requeue(RequeueParams(job_id="a1", states=(JobState.CANCELLED,)))
    assert await held(storage, "a1") == [True]
    assert await claim(storage) == []
    await complete(storage, second)
    assert await claim_ids(storage) == ["a1"]


async def test_keys_are_per_queue(storage: Storage) -> None:
    await insert(
        storage,
        new_job(id="mail", queue="mail", ordering_key="k"),
        new_job(id="sms", queue="sms", ordering_key="k"),
    )
    assert sorted(await claim_ids(storage, queues=["mail", "sms"], limit=10)) == ["mail", "sms"]


async def test_a_chained_job_with_a_key_waits_its_turn(storage: Storage) -> None:
    chained = new_job(id="a-chained", ordering_key="a")
    await insert(
        storage, new_job(id="parent", on_success=chained), new_job(id="a1", ordering_key="a", delay=60.0)
    )
    [parent] = await claim(storage)
    await complete(storage, parent)
    assert await held(storage, "a-chained") == [True]  # a1 came first, though not due yet


async def test_releasing_a_held_job_wakes_its_queue(storage: Storage) -> None:
    await insert(storage, new_job(queue="q", ordering_key="a"), new_job(queue="q", ordering_key="a"))
    [first] = await claim(storage, queues=["q"])
    waiter = asyncio.create_task(storage.wait_for_jobs(["q"], timeout=30.0))
    await yield_to_loop()
    assert not waiter.done()
    await complete(storage, first)
    assert await asyncio.wait_for(waiter, timeout=PROMPT) is True


async def test_held_jobs_count_as_pending(storage: Storage) -> None:
    await insert(storage, *(new_job(ordering_key="a", delay=0.0) for _ in range(3)))
    [info] = await storage.queue_list()
    assert info.counts[JobState.PENDING] == 3


async def test_a_dead_job_keeps_its_key_held_after_the_queue_switches_to_continue(
    storage: Storage, clock: ManualClock
) -> None:
    await set_limits(storage, ordering_dead=OrderingDead.BLOCK)
    await insert(
        storage, new_job(id="a1", ordering_key="a", max_retries=0), new_job(id="a2", ordering_key="a")
    )
    [first] = await claim(storage)
    await fail(storage, first, clock)
    await set_limits(storage)  # continue, for jobs that die from now on
    await insert_one(storage, id="a3", ordering_key="a")
    assert await held(storage, "a2", "a3") == [True, True]  # a1 died under block: it still holds
    assert await claim(storage, limit=10) == []
    await storage.job_purge(PurgeParams())
    assert await claim_ids(storage, limit=10) == ["a2"]


async def test_a_job_dead_under_continue_holds_nothing_after_the_queue_switches_to_block(
    storage: Storage, clock: ManualClock
) -> None:
    await insert(storage, new_job(id="a1", ordering_key="a", max_retries=0))
    [first] = await claim(storage)
    await fail(storage, first, clock)
    await set_limits(storage, ordering_dead=OrderingDead.BLOCK)
    await insert_one(storage, id="a2", ordering_key="a")
    assert await held(storage, "a2") == [False]
    assert await claim_ids(storage) == ["a2"]


async def test_a_held_job_keeps_its_state_until_it_is_released(storage: Storage, clock: ManualClock) -> None:
    await insert(storage, new_job(id="a1", ordering_key="a"), new_job(id="a2", ordering_key="a", delay=10.0))
    [first] = await claim(storage)
    clock.advance(20)
    await storage.job_promote_due()
    assert (await get(storage, "a2")).state is JobState.SCHEDULED  # held: passed over by promotion
    await complete(storage, first)
    [second] = await claim(storage)
    assert second.id == "a2"


async def test_held_jobs_are_not_the_oldest_pending(storage: Storage, clock: ManualClock) -> None:
    now = clock.now()
    await insert(
        storage,
        new_job(id="a1", queue="q", ordering_key="a", run_at=now - seconds(100)),
        new_job(id="a2", queue="q", ordering_key="a", run_at=now - seconds(90)),
        new_job(id="b1", queue="q", run_at=now - seconds(10)),
    )
    await claim(storage, queues=["q"], limit=1)  # a1 runs; a2 waits behind it
    [info] = await storage.queue_list()
    assert info.oldest_pending_at == now - seconds(10)
