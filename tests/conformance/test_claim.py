"""job_claim (semantics.md rule 2): what is claimed, in which order, and how a claimed job is stored."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.types import JobKind, JobState

from .helpers import T0, claim, claim_ids, claim_this, fail, get, insert, insert_one, new_job, seconds, token


async def test_claim_order_priority_then_run_at_then_insertion(storage: Storage, clock: ManualClock) -> None:
    clock.advance(1000)
    now = clock.now()
    jobs = await insert(
        storage,
        new_job(id="low-old", priority=0, run_at=now - seconds(10)),
        new_job(id="high-late", priority=5, run_at=now - seconds(1)),
        new_job(id="high-early", priority=5, run_at=now - seconds(5)),
        new_job(id="low-old-second", priority=0, run_at=now - seconds(10)),
        new_job(id="negative-oldest", priority=-1, run_at=now - seconds(100)),
        new_job(id="high-future", priority=9, run_at=now + seconds(1)),
    )
    assert len(jobs) == 6
    claimed = await claim_ids(storage, limit=10)
    assert claimed == ["high-early", "high-late", "low-old", "low-old-second", "negative-oldest"]


async def test_claim_one_at_a_time_follows_the_same_order(storage: Storage, clock: ManualClock) -> None:
    now = clock.now()
    await insert(storage, new_job(id="b", run_at=now - seconds(1)), new_job(id="a", run_at=now - seconds(2)))
    await insert_one(storage, id="c", priority=1)
    order = [await claim_ids(storage, limit=1) for _ in range(4)]
    assert order == [["c"], ["a"], ["b"], []]


async def test_equal_priority_and_run_at_are_claimed_in_insertion_order(storage: Storage) -> None:
    """Insertion order, not id order: client ids are chosen so that sorting by id would differ."""
    names = [f"{letter}-job" for letter in "qwertyuiopasdfghjklz"]
    await insert(storage, *(new_job(id=name) for name in names[:10]))  # one batch
    for name in names[10:]:  # then one insert at a time
        await insert_one(storage, id=name)
    assert await claim_ids(storage, limit=7) == names[:7]
    assert await claim_ids(storage, limit=100) == names[7:]


async def test_limit_is_respected(storage: Storage) -> None:
    await insert(storage, *(new_job() for _ in range(5)))
    assert await claim(storage, limit=0) == []
    assert await claim(storage, limit=-3) == []
    assert len(await claim(storage, limit=2)) == 2
    assert len(await claim(storage, limit=2)) == 2
    assert len(await claim(storage, limit=2)) == 1
    assert await claim(storage, limit=2) == []


async def test_external_jobs_are_never_claimed_with_the_default_kinds(storage: Storage) -> None:
    await insert_one(storage, id="ext", kind=JobKind.EXTERNAL, payload={"opaque": True}, priority=10)
    await insert_one(storage, id="shell", kind=JobKind.SHELL)
    await insert_one(storage, id="task", kind=JobKind.TASK, payload={"task": "t", "args": [], "kwargs": {}})
    assert await claim_ids(storage, limit=10) == ["shell", "task"]
    assert (await get(storage, "ext")).state is JobState.PENDING
    assert await claim_ids(storage, kinds=[JobKind.EXTERNAL]) == ["ext"]


async def test_kinds_filter(storage: Storage) -> None:
    await insert_one(storage, id="shell", kind=JobKind.SHELL)
    await insert_one(storage, id="task", kind=JobKind.TASK, payload={"task": "t", "args": [], "kwargs": {}})
    assert await claim_ids(storage, kinds=[JobKind.TASK]) == ["task"]
    assert await claim_ids(storage, kinds=[JobKind.TASK]) == []
    assert await claim_ids(storage, kinds=[JobKind.SHELL, JobKind.EXTERNAL]) == ["shell"]


async def test_queues_filter(storage: Storage) -> None:
    await insert(storage, *(new_job(id=f"{q}-job", queue=q) for q in ("q1", "q2", "q3")))
    assert await claim_ids(storage, queues=["nowhere"]) == []
    assert sorted(await claim_ids(storage, queues=["q1", "q3"])) == ["q1-job", "q3-job"]
    assert await claim_ids(storage, queues=["q1", "q3"]) == []
    assert await claim_ids(storage, queues=["q2"]) == ["q2-job"]


async def test_claimed_job_is_running_with_a_fresh_lease(storage: Storage, clock: ManualClock) -> None:
    job = await insert_one(storage, lease=45.0, priority=3)
    clock.advance(12)
    now = clock.now()
    [claimed] = await claim(storage, worker_id="host:1:abc")
    assert claimed.id == job.id
    assert claimed.state is JobState.RUNNING
    assert claimed.attempt == 1
    assert claimed.lease_token
    assert claimed.lease_expires_at == now + seconds(45)
    assert claimed.started_at == now
    assert claimed.updated_at == now
    assert claimed.worker_id == "host:1:abc"
    assert claimed.created_at == job.created_at
    assert claimed.run_at == job.run_at
    assert claimed.finished_at is None
    assert await storage.job_get(job.id) == claimed  # returned as now stored


async def test_a_running_job_is_not_claimed_again(storage: Storage) -> None:
    await insert_one(storage)
    assert len(await claim(storage, worker_id="w1")) == 1
    assert await claim(storage, worker_id="w2") == []


async def test_delayed_job_is_claimed_only_once_its_run_at_has_come(
    storage: Storage, clock: ManualClock
) -> None:
    job = await insert_one(storage, delay=60.0)
    assert job.state is JobState.SCHEDULED
    assert await claim(storage) == []
    clock.advance(59.5)
    assert await claim(storage) == []
    clock.advance(0.5)  # run_at == now: due
    [claimed] = await claim(storage)
    assert claimed.id == job.id
    assert claimed.attempt == 1


async def test_job_with_future_run_at_is_claimed_after_the_clock_passes_it(
    storage: Storage, clock: ManualClock
) -> None:
    job = await insert_one(storage, run_at=T0 + seconds(3600))
    clock.advance(3599)
    assert await claim(storage) == []
    clock.advance(2)
    assert await claim_ids(storage) == [job.id]


async def test_attempt_is_counted_at_claim_and_each_claim_gets_a_new_token(
    storage: Storage, clock: ManualClock
) -> None:
    job = await insert_one(storage, lease=20.0)
    assert job.attempt == 0
    first = await claim_this(storage, job)
    assert first.attempt == 1
    assert first.lease_expires_at == clock.now() + seconds(20)
    assert await fail(storage, first, clock, retry_delay=5.0) is JobState.FAILED
    assert (await get(storage, job.id)).attempt == 1
    clock.advance(5)
    second = await claim_this(storage, job, worker_id="worker-2")
    assert second.attempt == 2
    assert second.lease_expires_at == clock.now() + seconds(20)
    assert second.worker_id == "worker-2"
    assert token(second) != token(first)
