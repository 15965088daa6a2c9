"""job_insert_many and job_get (semantics.md rules 1 and 10)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from relay.app import storage_from_url
from relay.clock import ManualClock
from relay.errors import DuplicateJobError
from relay.storage.base import Storage
from relay.types import Backoff, BackoffKind, JobKind, JobState, UniqueWhile, new_job_id

from .helpers import T0, claim, complete, get, insert, insert_one, list_all, new_job, seconds


async def test_every_field_of_new_job_lands_in_job(storage: Storage, clock: ManualClock) -> None:
    clock.advance(5)
    now = clock.now()
    on_success = new_job(queue="after", payload={"command": "notify"}, delay=30.0, tags=("chain",))
    on_failure = new_job(kind=JobKind.TASK, payload={"task": "alerts.page", "args": [1], "kwargs": {}})
    spec = new_job(
        kind=JobKind.TASK,
        payload={"task": "billing.charge", "args": [42, "eur"], "kwargs": {"note": "café ☕", "n": None}},
        queue="billing",
        id="client-chosen-1",
        priority=7,
        run_at=now - seconds(3),
        max_retries=5,
        backoff=Backoff(BackoffKind.LINEAR, 2.5, 90.0),
        timeout=12.5,
        lease=45.0,
        idempotency_key="charge-42",
        on_success=on_success,
        on_failure=on_failure,
        tags=("billing", "nightly"),
        metadata={"owner": "ops", "nested": {"list": [1, 2.5, True, None]}},
        checkpoint={"step": 3},
        rate_key="customer-7",
        concurrency_key="account-7",
        ordering_key="ledger-7",
        unique_for=600.0,
        unique_while=UniqueWhile.ACTIVE,
    )
    [result] = await storage.job_insert_many([spec])
    assert result.created is True
    job = result.job

    assert job.id == "client-chosen-1"
    assert job.queue == "billing"
    assert job.kind is JobKind.TASK
    assert job.payload == spec.payload
    assert job.state is JobState.PENDING
    assert job.priority == 7
    assert job.attempt == 0
    assert job.max_retries == 5
    assert job.backoff == Backoff(BackoffKind.LINEAR, 2.5, 90.0)
    assert job.timeout == 12.5
    assert job.lease == 45.0
    assert job.run_at == now - seconds(3)
    assert job.created_at == now
    assert job.updated_at == now
    assert job.idempotency_key == "charge-42"
    assert job.on_success == on_success
    assert job.on_failure == on_failure
    assert job.tags == ("billing", "nightly")
    assert job.metadata == {"owner": "ops", "nested": {"list": [1, 2.5, True, None]}}
    assert job.checkpoint == {"step": 3}
    assert (job.started_at, job.finished_at) == (None, None)
    assert (job.lease_token, job.lease_expires_at) == (None, None)
    assert (job.worker_id, job.cancel_requested, job.progress, job.result) == (None, False, None, None)
    assert job.errors == ()
    assert job.parent_id is None
    assert (job.rate_key, job.concurrency_key, job.ordering_key) == ("customer-7", "account-7", "ledger-7")
    assert job.held is False  # the first job of its ordering key
    assert job.unique_until == now + seconds(600)
    assert job.unique_while is UniqueWhile.ACTIVE
    assert await storage.job_get(job.id) == job


async def test_defaults(storage: Storage, clock: ManualClock) -> None:
    job = await insert_one(storage)
    assert job.id  # a fresh id was chosen
    assert job.queue == "default"
    assert job.kind is JobKind.SHELL
    assert job.state is JobState.PENDING
    assert job.priority == 0
    assert job.attempt == 0
    assert job.max_retries == 3
    assert job.backoff == Backoff()
    assert job.timeout is None
    assert job.lease == 30.0
    assert job.run_at == clock.now()
    assert job.idempotency_key is None
    assert (job.on_success, job.on_failure) == (None, None)
    assert job.tags == ()
    assert job.metadata == {}
    assert job.checkpoint is None
    assert (job.rate_key, job.concurrency_key, job.ordering_key, job.held) == (None, None, None, False)
    assert (job.unique_until, job.unique_while) == (None, UniqueWhile.STORED)
    assert await storage.job_get(job.id) == job


async def test_times_are_aware_utc(storage: Storage, clock: ManualClock) -> None:
    job = await insert_one(storage, delay=5.0)
    clock.advance(5)
    [claimed] = await claim(storage)
    assert await complete(storage, claimed) is JobState.COMPLETED
    stored = await get(storage, job.id)
    times = {
        "run_at": stored.run_at,
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
        "started_at": stored.started_at,
        "finished_at": stored.finished_at,
    }
    for name, value in times.items():
        assert value is not None, name
        assert value.utcoffset() == timedelta(0), f"{name} is not an aware UTC datetime: {value!r}"


async def test_stored_job_is_isolated_from_the_callers_objects(storage: Storage) -> None:
    payload = {"command": "echo", "args": ["a"]}
    metadata = {"owner": {"team": "ops"}}
    job = await insert_one(storage, payload=payload, metadata=metadata)
    payload["args"].append("changed")
    metadata["owner"]["team"] = "changed"
    job.payload["command"] = "changed"
    stored = await get(storage, job.id)
    assert stored.payload == {"command": "echo", "args": ["a"]}
    assert stored.metadata == {"owner": {"team": "ops"}}


async def test_each_job_gets_its_own_id(storage: Storage) -> None:
    jobs = await insert(storage, *(new_job() for _ in range(20)))
    assert len({job.id for job in jobs}) == 20


@pytest.mark.parametrize(
    ("start", "state", "offset"),
    [
        ({"run_at": T0 + seconds(60)}, JobState.SCHEDULED, 60.0),
        ({"delay": 90.0}, JobState.SCHEDULED, 90.0),
        ({"run_at": T0}, JobState.PENDING, 0.0),
        ({"delay": 0.0}, JobState.PENDING, 0.0),
        ({"run_at": T0 - seconds(600)}, JobState.PENDING, -600.0),
        ({"run_at": T0 + seconds(60), "delay": 500.0}, JobState.SCHEDULED, 60.0),  # run_at wins over delay
    ],
    ids=["future-run_at", "delay", "run_at-now", "no-delay", "past-run_at", "run_at-wins"],
)
async def test_scheduled_or_pending_by_start_time(
    storage: Storage, start: dict[str, object], state: JobState, offset: float
) -> None:
    job = await insert_one(storage, **start)
    assert job.state is state
    assert job.run_at == T0 + seconds(offset)
    assert (await get(storage, job.id)).state is state


async def test_batch_results_keep_the_order_of_the_batch(storage: Storage) -> None:
    specs = [new_job(id=f"job-{i}", queue=f"q{i % 3}") for i in range(10)]
    results = await storage.job_insert_many(specs)
    assert [r.job.id for r in results] == [f"job-{i}" for i in range(10)]
    assert [r.job.queue for r in results] == [f"q{i % 3}" for i in range(10)]


async def test_empty_batch(storage: Storage) -> None:
    assert await storage.job_insert_many([]) == []


async def test_get_of_unknown_id_is_none(storage: Storage) -> None:
    await insert_one(storage)
    assert await storage.job_get(new_job_id()) is None
    assert await storage.job_get("no-such-job") is None


async def test_same_idempotency_key_twice_gives_the_same_job(storage: Storage, clock: ManualClock) -> None:
    [first] = await storage.job_insert_many([new_job(idempotency_key="k1", payload={"n": 1})])
    clock.advance(10)
    [second] = await storage.job_insert_many([new_job(idempotency_key="k1", payload={"n": 2}, queue="other")])
    assert first.created is True
    assert second.created is False
    assert second.job == first.job  # the existing job, untouched: first payload, first queue
    assert [job.id for job in await list_all(storage)] == [first.job.id]


async def test_idempotency_key_of_a_finished_job_still_returns_it(storage: Storage) -> None:
    [first] = await storage.job_insert_many([new_job(idempotency_key="once")])
    [running] = await claim(storage)
    assert await complete(storage, running) is JobState.COMPLETED
    [again] = await storage.job_insert_many([new_job(idempotency_key="once")])
    assert again.created is False
    assert again.job.id == first.job.id
    assert again.job.state is JobState.COMPLETED
    assert len(await list_all(storage)) == 1


async def test_duplicate_idempotency_key_within_one_batch(storage: Storage) -> None:
    results = await storage.job_insert_many(
        [
            new_job(idempotency_key="dup", payload={"n": 1}),
            new_job(idempotency_key="other"),
            new_job(idempotency_key="dup", payload={"n": 2}),
        ]
    )
    assert [r.created for r in results] == [True, True, False]
    assert results[2].job.id == results[0].job.id
    assert results[2].job.payload == {"n": 1}
    assert len(await list_all(storage)) == 2


async def test_taken_client_id_raises_and_inserts_nothing_of_the_batch(storage: Storage) -> None:
    await insert_one(storage, id="taken", payload={"original": True})
    batch = [new_job(id="fresh-1"), new_job(idempotency_key="fresh-key"), new_job(id="taken"), new_job()]
    with pytest.raises(DuplicateJobError) as info:
        await storage.job_insert_many(batch)
    assert info.value.job_id == "taken"
    jobs = await list_all(storage)
    assert [job.id for job in jobs] == ["taken"]
    assert jobs[0].payload == {"original": True}
    assert await storage.job_get("fresh-1") is None
    # The batch's idempotency key was not used up either.
    [retry] = await storage.job_insert_many([new_job(idempotency_key="fresh-key")])
    assert retry.created is True


async def test_client_id_repeated_within_a_batch_raises_and_inserts_nothing(storage: Storage) -> None:
    with pytest.raises(DuplicateJobError) as info:
        await storage.job_insert_many([new_job(id="twice"), new_job(), new_job(id="twice")])
    assert info.value.job_id == "twice"
    assert await list_all(storage) == []


async def test_client_id_taken_by_a_finished_job_is_still_taken(storage: Storage, clock: ManualClock) -> None:
    job = await insert_one(storage, id="done-once")
    await storage.job_cancel(job.id)
    with pytest.raises(DuplicateJobError):
        await storage.job_insert_many([new_job(id="done-once")])
    assert (await get(storage, "done-once")).state is JobState.CANCELLED


async def test_acknowledged_job_survives_a_reopen(
    storage: Storage, storage_url: str, clock: ManualClock
) -> None:
    """Guarantee 1: an acknowledged job is never lost. Skipped for backends that are not durable."""
    if not storage.capabilities.durable:
        pytest.skip(f"{storage.capabilities.name}: capabilities.durable is False, nothing survives a reopen")
    first = storage_from_url(storage_url, clock=clock)
    await first.open()
    try:
        job = await insert_one(first, payload={"keep": "me"})
    finally:
        await first.close()
    second = storage_from_url(storage_url, clock=clock)
    await second.open()
    try:
        assert await second.job_get(job.id) == job
    finally:
        await second.close()
