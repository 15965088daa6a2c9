"""What the conformance suite cannot see of flow control on Redis: where held jobs and running
concurrency keys are kept (and that no way out of running leaks a slot), the walk bound of a limited
claim, the cost of the claim and finish of a queue without limits (in commands), the precision of
stored token buckets, wake-ups between instances, and calls sent again after a lost reply.

The rules themselves are tested once for every backend in tests/conformance.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from relay.clock import ManualClock
from relay.storage.flow_control import Bucket, tokens_now
from relay.storage.params import ClaimParams, FinishItem, ScheduleFire, ScheduleParams
from relay.storage.redis import RedisStorage
from relay.storage.redis.codec import pack_new_job, to_us
from relay.storage.redis.options import parse_options
from relay.storage.redis.schedules import FireCall
from relay.storage.redis.scripts import SOURCES
from relay.types import CatchUp, Job, OrderingDead, Outcome, QueueLimits, RateLimit, new_job_id

from .test_redis_backend import (
    WAKE_TIMEOUT,
    _has_subscriber,
    _keys_of,
    _template_pattern,
    job,
    redis_server,
    until,
    url,
)

__all__ = ["redis_server", "url"]  # fixtures, imported for pytest

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
MAX_PASSED = int(re.search(r"local MAX_PASSED = (\d+)", SOURCES["claim"]).group(1))  # type: ignore[union-attr]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def store(url: str, clock: ManualClock) -> AsyncIterator[RedisStorage]:
    s = RedisStorage(url, clock=clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class Raw:
    """A plain client on the store's database, and its key names, to look at what the scripts keep."""

    def __init__(self, url: str) -> None:
        options = parse_options(url)
        self.client = aioredis.Redis.from_url(options.url, decode_responses=True)
        self.prefix = options.prefix

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def pair(self, name: str, queue: str, key: str) -> str:
        return self.key(name, str(len(queue)), queue, key)

    async def calls(self) -> dict[str, int]:
        stats: dict[str, Any] = await self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.fixture
async def raw(url: str) -> AsyncIterator[Raw]:
    r = Raw(url)
    try:
        yield r
    finally:
        await r.client.aclose()


async def claim(store: RedisStorage, queue: str = "q", limit: int = 10, worker: str = "w") -> list[Job]:
    return await store.job_claim(ClaimParams([queue], worker, limit))


async def finish(store: RedisStorage, j: Job, outcome: Outcome = Outcome.COMPLETED, **fields: Any) -> None:
    [result] = await store.job_finish_many([FinishItem(j.id, j.lease_token or "", outcome, **fields)])
    assert result.state is not None


# -- where things are kept -------------------------------------------------------------------------


async def test_flow_control_keys_are_named_by_templates(store: RedisStorage, url: str) -> None:
    await store.queue_limits_set("q", QueueLimits(rate=RateLimit(1.0, 2), key_rate=RateLimit(1.0, 1)))
    await store.job_insert_many(
        [job(queue="q", ordering_key="o", rate_key="r", concurrency_key="c") for _ in range(2)]
    )
    await claim(store)
    await store.schedule_upsert(ScheduleParams("s", "* * * * *", "UTC", job(), CatchUp.ONCE, T0))
    keys = await _keys_of(url)
    pattern = _template_pattern(parse_options(url).prefix)
    assert all(pattern.fullmatch(k) for k in keys), keys
    names = {k.split(":")[1] for k in keys}
    assert {"limits", "buckets", "conc", "heads", "held", "schedule", "schedules", "schedules-due"} <= names


async def test_held_jobs_wait_outside_the_ready_sets(store: RedisStorage, raw: Raw) -> None:
    results = await store.job_insert_many([job(queue="q", ordering_key="k:1") for _ in range(3)])
    first, second, third = (r.job for r in results)
    assert [first.held, second.held, third.held] == [False, True, True]
    ready, held = raw.key("ready", "shell", "q"), raw.pair("held", "q", "k:1")
    assert await raw.client.zcard(ready) == 1
    assert await raw.client.zrange(held, 0, -1) == [second.id, third.id]
    assert await raw.client.hgetall(raw.key("heads", "q")) == {"k:1": first.id}
    assert await raw.client.zcard(raw.key("idx", "pending", "q")) == 3  # held jobs count as pending
    [running] = await claim(store)
    await finish(store, running)
    assert await raw.client.zrange(held, 0, -1) == [third.id]
    assert await raw.client.hgetall(raw.key("heads", "q")) == {"k:1": second.id}
    [running] = await claim(store)
    await finish(store, running)
    [running] = await claim(store)
    await finish(store, running)
    assert await raw.client.exists(held, raw.key("heads", "q")) == 0  # the key is done: nothing left


async def test_no_way_out_of_running_leaks_a_concurrency_slot(
    store: RedisStorage, raw: Raw, clock: ManualClock
) -> None:
    """Every job with a concurrency key is in its key's set while it runs, and in none after, whatever
    way it left running (in a queue without limits too: a limit set later counts them)."""
    await store.queue_limits_set("q", QueueLimits(key_concurrency=10))
    ways = [Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED, Outcome.RELEASED, "dead", "reaped"]
    results = await store.job_insert_many(
        [job(queue=queue, concurrency_key="acct", max_retries=1, lease=5.0) for queue in ("q", "free")] * 6
    )
    running = await claim(store, "q", 20) + await claim(store, "free", 20)
    assert len(running) == len(results) == 12
    for queue in ("q", "free"):
        assert await raw.client.scard(raw.pair("conc", queue, "acct")) == 6
    by_queue = {q: [j for j in running if j.queue == q] for q in ("q", "free")}
    for jobs in by_queue.values():
        for j, way in zip(jobs, ways, strict=True):
            if way == "dead":
                await finish(store, j, Outcome.FAILED, retryable=False)
            elif way == "reaped":
                continue
            else:
                await finish(store, j, way)  # type: ignore[arg-type]
    clock.advance(6)
    assert len((await store.job_reap_expired()).requeued) == 2
    for queue in ("q", "free"):
        assert await raw.client.exists(raw.pair("conc", queue, "acct")) == 0


# -- the claim's cost and bound ------------------------------------------------------------------------


async def test_a_queue_without_limits_claims_and_finishes_as_before(store: RedisStorage, raw: Raw) -> None:
    """The hot path of a queue without limits: one HMGET of P:limits per claim, one HGET of it per
    queue per finish, and no other flow-control command (no bucket, no set of running keys)."""
    await store.queue_limits_set("other", QueueLimits(concurrency=1))  # limits elsewhere change nothing
    await store.job_insert_many([job(queue="q") for _ in range(10)])
    before = await raw.calls()
    running = await claim(store, limit=10)
    after_claim = await raw.calls()
    await store.job_finish_many([FinishItem(j.id, j.lease_token or "", Outcome.COMPLETED) for j in running])
    after_finish = await raw.calls()

    def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {name: n - a.get(name, 0) for name, n in b.items() if n != a.get(name, 0)}

    claimed, finished = diff(before, after_claim), diff(after_claim, after_finish)
    assert claimed.get("hmget") == 10 + 1
    assert finished.get("hmget") == 10
    assert finished.get("hget") == 1
    flow = {"sadd", "srem", "scard", "zcard", "hgetall"}
    assert not flow & (claimed.keys() | finished.keys()), (claimed, finished)


@pytest.mark.parametrize("passed", [MAX_PASSED - 1, MAX_PASSED])
async def test_a_limited_claim_passes_over_a_bounded_number_of_jobs(store: RedisStorage, passed: int) -> None:
    """Behind MAX_PASSED jobs of a full concurrency key, a claim comes back short (a script holds the
    whole server); behind one fewer, it finds the job of another key."""
    await store.queue_limits_set("q", QueueLimits(key_concurrency=1))
    await store.job_insert_many([job(queue="q", concurrency_key="big")])
    assert len(await claim(store, limit=1)) == 1  # "big" is full from now on
    await store.job_insert_many([job(queue="q", concurrency_key="big") for _ in range(passed)])
    [other] = [r.job for r in await store.job_insert_many([job(queue="q", concurrency_key="other")])]
    claimed = [j.id for j in await claim(store, limit=1)]
    assert claimed == ([other.id] if passed < MAX_PASSED else [])


async def test_buckets_are_stored_exactly(store: RedisStorage, raw: Raw, clock: ManualClock) -> None:
    """Fractions of tokens survive storage bit for bit: the bucket after odd refills and draws is the
    one Python's token bucket maths (relay.storage.flow_control) computes."""
    limit = RateLimit(rate=1 / 3, burst=3)
    await store.queue_limits_set("q", QueueLimits(rate=limit))
    await store.job_insert_many([job(queue="q") for _ in range(20)])
    expected: Bucket | None = None
    for step in (0.0, 0.7, 1.3, 0.1, 2.9, 0.45):
        clock.advance(step)
        tokens = tokens_now(expected, limit, clock.now())
        taken = len(await claim(store, limit=1))
        assert taken == (1 if tokens >= 1 else 0)
        if taken:
            expected = Bucket(tokens - 1, clock.now())
        stored = await raw.client.hget(raw.key("buckets", "q"), "")
        assert stored is not None
        assert expected is not None
        text_tokens, at = stored.split()
        assert (float(text_tokens), int(at)) == (expected.tokens, to_us(expected.at))
        [info] = await store.queue_list()
        assert info.tokens == tokens_now(expected, limit, clock.now())


# -- wake-ups between instances -----------------------------------------------------------------------


async def test_a_freed_slot_and_a_released_job_wake_another_instance(url: str) -> None:
    worker, other = RedisStorage(url), RedisStorage(url)
    await worker.open()
    await other.open()
    try:
        await other.queue_limits_set("capped", QueueLimits(concurrency=1))
        await other.job_insert_many([job(queue="capped"), job(queue="capped")])
        await other.job_insert_many([job(queue="keyed", ordering_key="k") for _ in range(2)])
        [capped] = await other.job_claim(ClaimParams(["capped"], "w", 10))
        [keyed] = await other.job_claim(ClaimParams(["keyed"], "w", 10))
        await worker.wait_for_jobs(["capped", "keyed"], 0.01)
        await until(lambda: _has_subscriber(url), "the subscription")
        for running, queue in ((capped, "capped"), (keyed, "keyed")):
            waiter = asyncio.create_task(worker.wait_for_jobs([queue], 30.0))
            await asyncio.sleep(0)  # the waiter registers (see test_redis_backend)
            await finish(other, running)
            assert await asyncio.wait_for(waiter, WAKE_TIMEOUT) is True
    finally:
        await worker.close()
        await other.close()


# -- calls sent again after a lost reply --------------------------------------------------------------


async def test_an_insert_that_took_over_a_key_and_is_sent_again_returns_its_own_job(
    store: RedisStorage, clock: ManualClock
) -> None:
    [old] = [r.job for r in await store.job_insert_many([job(idempotency_key="k", unique_for=5.0)])]
    clock.advance(5)
    packed = [pack_new_job(job(idempotency_key="k"), new_job_id())]
    first = await store._insert(packed, "batch-1")
    again = await store._insert(packed, "batch-1")
    assert [(r.created, r.job.id) for r in again] == [(True, first[0].job.id)]
    assert (await store.job_get(old.id)).idempotency_key is None  # type: ignore[union-attr]
    assert (await store.job_get(first[0].job.id)).idempotency_key == "k"  # type: ignore[union-attr]


async def test_a_fire_sent_again_after_a_lost_reply_says_it_fired(store: RedisStorage) -> None:
    await store.schedule_upsert(ScheduleParams("s", "* * * * *", "UTC", job(), CatchUp.ONCE, T0))
    tick = job(idempotency_key=f"s@{T0.isoformat()}")
    call = FireCall(ScheduleFire("s", T0, T0, T0 + timedelta(minutes=1), tick))
    first = await store._run(call.run, what="test")
    again = await store._run(call.run, what="test")  # what the retry policy does after a lost reply
    assert first.fired
    assert again.fired
    assert first.job is not None
    assert again.job == await store.job_get(first.job.id)
    other = FireCall(ScheduleFire("s", T0, T0, T0 + timedelta(minutes=1), tick))
    assert (await store._run(other.run, what="test")).fired is False  # another call: the tick moved on


async def test_a_dead_head_under_block_keeps_its_key_after_the_setting_changes(
    store: RedisStorage, raw: Raw
) -> None:
    """ordering_dead applies to jobs that die afterwards: a job that died under block keeps its key
    held until it is requeued and ends, or is deleted, even once the queue says continue."""
    await store.queue_limits_set("q", QueueLimits(ordering_dead=OrderingDead.BLOCK))
    a1, a2 = (r.job for r in await store.job_insert_many([job(queue="q", ordering_key="a")] * 2))
    [running] = await claim(store)
    await finish(store, running, Outcome.FAILED, retryable=False)
    await store.queue_limits_set("q", QueueLimits())
    assert await claim(store) == []
    assert (await store.job_get(a2.id)).held is True  # type: ignore[union-attr]
    assert await raw.client.hget(raw.key("heads", "q"), "a") == a1.id
