"""queue_list, queue_pause and queue_resume (semantics.md rules 1, 2, 16 and 17)."""

from __future__ import annotations

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.types import JobState, QueueInfo

from .helpers import claim, claim_ids, insert, insert_one, job_in_state, new_job, seconds


def by_name(queues: list[QueueInfo]) -> dict[str, QueueInfo]:
    return {q.name: q for q in queues}


async def test_a_paused_queue_is_not_claimed_until_resumed(storage: Storage) -> None:
    await insert(storage, new_job(id="mail-1", queue="mail"), new_job(id="sms-1", queue="sms"))
    await storage.queue_pause("mail")
    assert await claim_ids(storage, queues=["mail", "sms"]) == ["sms-1"]
    assert await claim(storage, queues=["mail"]) == []
    await storage.queue_resume("mail")
    assert await claim_ids(storage, queues=["mail", "sms"]) == ["mail-1"]


async def test_paused_flag_in_queue_list(storage: Storage) -> None:
    await insert_one(storage, queue="mail")
    await storage.queue_pause("mail")
    await storage.queue_pause("mail")  # pausing twice is harmless
    assert by_name(await storage.queue_list())["mail"].paused is True
    await storage.queue_resume("mail")
    assert by_name(await storage.queue_list())["mail"].paused is False


async def test_pausing_an_unknown_queue_makes_it_known(storage: Storage) -> None:
    await storage.queue_pause("future")
    [info] = await storage.queue_list()
    assert info.name == "future"
    assert info.paused is True
    assert info.counts == dict.fromkeys(JobState, 0)
    assert info.oldest_pending_at is None
    await insert_one(storage, id="early", queue="future")
    assert await claim(storage, queues=["future"]) == []  # paused before its first job arrived


async def test_resuming_an_unknown_queue_makes_it_known(storage: Storage) -> None:
    await storage.queue_resume("fresh")
    assert [(q.name, q.paused) for q in await storage.queue_list()] == [("fresh", False)]


async def test_inserting_makes_a_queue_known(storage: Storage) -> None:
    assert await storage.queue_list() == []
    await insert(storage, new_job(queue="zeta"), new_job(queue="alpha"), new_job(queue="mid", delay=60.0))
    queues = await storage.queue_list()
    assert [q.name for q in queues] == ["alpha", "mid", "zeta"]  # sorted by name
    assert all(not q.paused for q in queues)


async def test_counts_by_queue_and_state(storage: Storage, clock: ManualClock) -> None:
    # Built in an order where each claim takes the job just inserted (see job_in_state).
    for state in (JobState.COMPLETED, JobState.COMPLETED, JobState.FAILED, JobState.DEAD, JobState.RUNNING):
        await job_in_state(storage, clock, state, queue="work")
    for state in (
        JobState.PENDING,
        JobState.PENDING,
        JobState.PENDING,
        JobState.SCHEDULED,
        JobState.CANCELLED,
    ):
        await job_in_state(storage, clock, state, queue="work")
    await job_in_state(storage, clock, JobState.SCHEDULED, queue="later")

    queues = by_name(await storage.queue_list())
    assert set(queues) == {"work", "later"}
    assert queues["work"].counts == {
        JobState.PENDING: 3,
        JobState.SCHEDULED: 1,
        JobState.RUNNING: 1,
        JobState.COMPLETED: 2,
        JobState.FAILED: 1,
        JobState.DEAD: 1,
        JobState.CANCELLED: 1,
    }
    assert queues["later"].counts == {**dict.fromkeys(JobState, 0), JobState.SCHEDULED: 1}
    assert queues["later"].oldest_pending_at is None


async def test_oldest_pending_at(storage: Storage, clock: ManualClock) -> None:
    clock.advance(1000)
    now = clock.now()
    await insert(
        storage,
        new_job(queue="q", run_at=now - seconds(10)),
        new_job(queue="q", run_at=now - seconds(50)),
        new_job(queue="q", run_at=now - seconds(5)),
        new_job(queue="q", delay=100.0),  # scheduled: not pending
    )
    [info] = await storage.queue_list()
    assert info.oldest_pending_at == now - seconds(50)
    await claim(storage, queues=["q"], limit=1)  # takes the oldest
    [info] = await storage.queue_list()
    assert info.oldest_pending_at == now - seconds(10)
    await claim(storage, queues=["q"], limit=2)
    [info] = await storage.queue_list()
    assert info.oldest_pending_at is None
    assert info.counts[JobState.RUNNING] == 3


async def test_queue_limits_round_trip_and_clear(storage: Storage) -> None:
    from relay.types import NO_LIMITS, OrderingDead, QueueLimits, RateLimit

    limits = QueueLimits(
        rate=RateLimit(rate=100.0, burst=20),
        key_rate=RateLimit(rate=10 / 60, burst=10),
        concurrency=5,
        key_concurrency=1,
        ordering_dead=OrderingDead.BLOCK,
    )
    await storage.queue_limits_set("emails", limits)  # an unknown queue becomes known
    [info] = await storage.queue_list()
    assert info.name == "emails"
    assert info.paused is False
    assert info.limits == limits
    assert info.tokens == 20.0
    await storage.queue_pause("emails")
    assert by_name(await storage.queue_list())["emails"].limits == limits  # pausing keeps the limits
    await storage.queue_limits_set("emails", NO_LIMITS)
    cleared = by_name(await storage.queue_list())["emails"]
    assert cleared.limits == NO_LIMITS
    assert cleared.tokens is None
    assert cleared.paused is True
