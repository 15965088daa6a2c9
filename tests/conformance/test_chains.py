"""on_success / on_failure: enqueued with the outcome, in one transaction (semantics.md rules 4, 6)."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.types import JobKind, JobState, Outcome

from .helpers import claim_this, complete, fail, finish, get, insert_one, list_all, new_job, seconds


async def test_on_success_is_enqueued_once_with_the_completion(storage: Storage, clock: ManualClock) -> None:
    on_success = new_job(
        queue="notify",
        kind=JobKind.TASK,
        payload={"task": "mail.send", "args": ["done"], "kwargs": {}},
        priority=4,
        tags=("chained",),
        on_success=new_job(queue="notify", payload={"command": "third"}),
    )
    job = await claim_this(
        storage, await insert_one(storage, on_success=on_success, on_failure=new_job(queue="x"))
    )
    assert await list_all(storage, queues=["notify"]) == []
    clock.advance(3)
    assert await complete(storage, job) is JobState.COMPLETED
    [chained] = await list_all(storage, queues=["notify"])
    assert chained.parent_id == job.id
    assert chained.state is JobState.PENDING
    assert chained.run_at == clock.now()
    assert chained.created_at == clock.now()
    assert chained.kind is JobKind.TASK
    assert chained.payload == on_success.payload
    assert chained.priority == 4
    assert chained.tags == ("chained",)
    assert chained.on_success == on_success.on_success  # the chain goes on
    assert chained.attempt == 0
    assert await list_all(storage, queues=["x"]) == []  # on_failure is not enqueued on success
    assert len(await list_all(storage)) == 2


async def test_chain_with_a_delay_is_scheduled(storage: Storage, clock: ManualClock) -> None:
    job = await claim_this(storage, await insert_one(storage, on_success=new_job(queue="later", delay=120.0)))
    clock.advance(10)
    assert await complete(storage, job) is JobState.COMPLETED
    [chained] = await list_all(storage, queues=["later"])
    assert chained.state is JobState.SCHEDULED
    assert chained.run_at == clock.now() + seconds(120)


async def test_on_failure_is_enqueued_when_the_job_goes_dead(storage: Storage, clock: ManualClock) -> None:
    chains = {"on_failure": new_job(queue="alerts"), "on_success": new_job(queue="notify")}
    job = await insert_one(storage, max_retries=1, **chains)
    first = await claim_this(storage, job)
    assert await fail(storage, first, clock) is JobState.FAILED
    assert await list_all(storage, queues=["alerts"]) == []  # a retry is not the end
    second = await claim_this(storage, job)
    assert await fail(storage, second, clock) is JobState.DEAD
    [chained] = await list_all(storage, queues=["alerts"])
    assert chained.parent_id == job.id
    assert chained.state is JobState.PENDING
    assert await list_all(storage, queues=["notify"]) == []


async def test_on_failure_is_enqueued_for_a_job_that_is_not_retryable(
    storage: Storage, clock: ManualClock
) -> None:
    job = await claim_this(storage, await insert_one(storage, on_failure=new_job(queue="alerts")))
    assert await fail(storage, job, clock, retryable=False) is JobState.DEAD
    assert [c.parent_id for c in await list_all(storage, queues=["alerts"])] == [job.id]


async def test_no_chain_after_cancel_or_release(storage: Storage, clock: ManualClock) -> None:
    chains = {"on_failure": new_job(queue="next"), "on_success": new_job(queue="next")}
    job = await insert_one(storage, **chains)
    running = await claim_this(storage, job)
    assert await finish(storage, running, Outcome.RELEASED) is JobState.PENDING
    running = await claim_this(storage, job)
    assert await finish(storage, running, Outcome.CANCELLED) is JobState.CANCELLED
    assert await list_all(storage, queues=["next"]) == []


async def test_chain_respects_its_idempotency_key(storage: Storage, clock: ManualClock) -> None:
    existing = await insert_one(storage, queue="next", idempotency_key="report-2026")
    job = await claim_this(
        storage, await insert_one(storage, on_success=new_job(queue="next", idempotency_key="report-2026"))
    )
    assert await complete(storage, job) is JobState.COMPLETED
    assert [j.id for j in await list_all(storage, queues=["next"])] == [existing.id]


async def test_chains_of_two_parents_are_each_enqueued_once(storage: Storage, clock: ManualClock) -> None:
    a = await claim_this(storage, await insert_one(storage, id="a", on_success=new_job(queue="next")))
    b = await claim_this(storage, await insert_one(storage, id="b", on_success=new_job(queue="next")))
    assert await complete(storage, b) is JobState.COMPLETED
    assert await complete(storage, a) is JobState.COMPLETED
    assert await complete(storage, a) is None  # a repeated completion does not chain twice
    chained = await list_all(storage, queues=["next"])
    assert sorted(c.parent_id or "" for c in chained) == ["a", "b"]
    assert (await get(storage, "a")).state is JobState.COMPLETED
