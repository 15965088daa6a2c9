"""Rate limits (ClaimParams, QueueLimits.rate / key_rate): token buckets kept in storage, drawn from
by the claim itself. Time moves only with the test's clock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.types import RateLimit

from .helpers import (
    approx_seconds,
    claim,
    claim_ids,
    claim_limited,
    complete,
    insert,
    new_job,
    set_limits,
)
from .test_concurrency import run_concurrently


async def test_a_full_bucket_gives_its_burst_then_one_job_per_token(
    storage: Storage, clock: ManualClock
) -> None:
    await set_limits(storage, rate=RateLimit(rate=2.0, burst=3))
    await insert(storage, *(new_job(id=f"job-{n}") for n in range(10)))

    first = await claim_limited(storage, limit=10)
    assert [job.id for job in first] == ["job-0", "job-1", "job-2"]  # the burst, in claim order
    assert approx_seconds(first.retry_after, 0.5)  # one token every half second

    empty = await claim_limited(storage, limit=10)
    assert list(empty) == []
    assert approx_seconds(empty.retry_after, 0.5)  # nothing refilled: the clock has not moved

    clock.advance(0.5)
    assert await claim_ids(storage, limit=10) == ["job-3"]
    clock.advance(1.0)
    assert await claim_ids(storage, limit=10) == ["job-4", "job-5"]
    clock.advance(3600)  # a long idle refills the bucket to its burst, never beyond
    assert await claim_ids(storage, limit=10) == ["job-6", "job-7", "job-8"]


async def test_retry_after_counts_the_fraction_of_a_token_already_there(
    storage: Storage, clock: ManualClock
) -> None:
    await set_limits(storage, rate=RateLimit(rate=1.0, burst=1))
    await insert(storage, new_job(id="a"), new_job(id="b"))
    assert await claim_ids(storage) == ["a"]
    clock.advance(0.25)
    result = await claim_limited(storage)
    assert list(result) == []
    assert approx_seconds(result.retry_after, 0.75)


async def test_no_retry_after_when_no_job_was_held_back(storage: Storage) -> None:
    await set_limits(storage, rate=RateLimit(rate=1.0, burst=1))
    nothing = await claim_limited(storage)
    assert list(nothing) == []
    assert nothing.retry_after is None
    await insert(storage, new_job(id="only"))
    taken = await claim_limited(storage)
    assert [job.id for job in taken] == ["only"]
    assert taken.retry_after is None
    free = await claim_limited(storage, queues=["unlimited"])
    assert free.retry_after is None


async def test_a_claim_smaller_than_the_tokens_leaves_the_rest(storage: Storage, clock: ManualClock) -> None:
    await set_limits(storage, rate=RateLimit(rate=0.001, burst=5))
    await insert(storage, *(new_job() for _ in range(10)))
    assert len(await claim(storage, limit=2)) == 2
    assert len(await claim(storage, limit=2)) == 2
    assert len(await claim(storage, limit=2)) == 1
    assert await claim(storage, limit=2) == []


async def test_each_rate_key_has_its_own_bucket(storage: Storage, clock: ManualClock) -> None:
    await set_limits(storage, key_rate=RateLimit(rate=1.0, burst=1))
    await insert(
        storage,
        new_job(id="a1", rate_key="a"),
        new_job(id="a2", rate_key="a"),
        new_job(id="a3", rate_key="a"),
        new_job(id="b1", rate_key="b"),
        new_job(id="free", payload={"command": "no key"}),
    )
    first = await claim_limited(storage, limit=10)
    assert [job.id for job in first] == ["a1", "b1", "free"]  # a2, a3 passed over; a job without a key
    assert approx_seconds(first.retry_after, 1.0)
    clock.advance(1.0)
    assert await claim_ids(storage, limit=10) == ["a2"]
    clock.advance(1.0)
    assert await claim_ids(storage, limit=10) == ["a3"]


async def test_one_keys_burst_does_not_starve_the_other_keys(storage: Storage, clock: ManualClock) -> None:
    """One customer enqueues 200 jobs first; the others' jobs behind them still run at once."""
    await set_limits(storage, key_rate=RateLimit(rate=1 / 60, burst=2))
    await insert(storage, *(new_job(id=f"big-{n:03}", rate_key="big") for n in range(200)))
    await insert(storage, *(new_job(id=f"small-{n}", rate_key=f"small-{n}") for n in range(5)))
    assert await claim_ids(storage, limit=5) == ["big-000", "big-001", "small-0", "small-1", "small-2"]
    assert await claim_ids(storage, limit=5) == ["small-3", "small-4"]
    result = await claim_limited(storage, limit=5)
    assert list(result) == []
    assert approx_seconds(result.retry_after, 60.0)
    clock.advance(60)
    assert await claim_ids(storage, limit=5) == ["big-002"]


async def test_queue_rate_and_key_rate_both_apply(storage: Storage, clock: ManualClock) -> None:
    await set_limits(storage, rate=RateLimit(rate=1.0, burst=3), key_rate=RateLimit(rate=1.0, burst=1))
    await insert(
        storage,
        new_job(id="a1", rate_key="a"),
        new_job(id="a2", rate_key="a"),
        new_job(id="b1", rate_key="b"),
        new_job(id="c1", rate_key="c"),
        new_job(id="d1", rate_key="d"),
    )
    # a2 waits for its key; d1 for the queue (3 tokens: a1, b1, c1). A refused key took no queue token.
    assert await claim_ids(storage, limit=10) == ["a1", "b1", "c1"]
    clock.advance(1.0)
    assert await claim_ids(storage, limit=10) == ["a2"]
    clock.advance(1.0)
    assert await claim_ids(storage, limit=10) == ["d1"]


async def test_limits_of_one_queue_leave_the_others_alone(storage: Storage) -> None:
    await set_limits(storage, "slow", rate=RateLimit(rate=0.001, burst=1))
    await insert(storage, *(new_job(queue="slow", id=f"slow-{n}") for n in range(3)))
    await insert(storage, *(new_job(queue="fast", id=f"fast-{n}") for n in range(3)))
    claimed = await claim_ids(storage, queues=["slow", "fast"], limit=10)
    assert sorted(claimed) == ["fast-0", "fast-1", "fast-2", "slow-0"]


async def test_keys_mean_nothing_in_a_queue_without_limits(storage: Storage) -> None:
    await insert(storage, *(new_job(rate_key="k", concurrency_key="k") for _ in range(4)))
    assert len(await claim(storage, limit=10)) == 4


async def test_limits_changed_at_run_time_apply_at_the_next_claim(
    storage: Storage, clock: ManualClock
) -> None:
    await set_limits(storage, rate=RateLimit(rate=0.001, burst=1))
    await insert(storage, *(new_job() for _ in range(6)))
    assert len(await claim(storage)) == 1
    await set_limits(storage)  # no limits at all
    assert len(await claim(storage, limit=3)) == 3
    await set_limits(storage, rate=RateLimit(rate=0.001, burst=1))
    assert len(await claim(storage)) == 0  # the bucket kept its state: still empty


async def test_a_smaller_burst_cuts_what_a_bucket_holds(storage: Storage) -> None:
    await set_limits(storage, rate=RateLimit(rate=0.001, burst=10))
    await insert(storage, *(new_job() for _ in range(10)))
    assert len(await claim(storage, limit=1)) == 1  # the bucket is stored now, with 9 tokens
    await set_limits(storage, rate=RateLimit(rate=0.001, burst=2))
    assert len(await claim(storage, limit=10)) == 2


async def test_full_buckets_are_pruned(storage: Storage, clock: ManualClock) -> None:
    await set_limits(storage, key_rate=RateLimit(rate=1.0, burst=2))
    await insert(storage, *(new_job(rate_key="k") for _ in range(6)))
    assert len(await claim(storage)) == 2
    assert await storage.rate_buckets_prune() == 0  # empty: pruning it would hand out a new burst
    clock.advance(1.5)
    assert await storage.rate_buckets_prune() == 0  # 1.5 tokens: not full yet
    clock.advance(0.5)
    assert await storage.rate_buckets_prune() == 1
    assert await storage.rate_buckets_prune() == 0
    assert len(await claim(storage)) == 2  # a pruned bucket is a full one


async def test_buckets_of_removed_limits_are_pruned(storage: Storage) -> None:
    await set_limits(storage, rate=RateLimit(rate=0.001, burst=1), key_rate=RateLimit(rate=0.001, burst=1))
    await insert(storage, new_job(rate_key="k"), new_job(rate_key="k"))
    assert len(await claim(storage)) == 1
    await set_limits(storage)
    assert await storage.rate_buckets_prune() == 2


async def test_queue_list_shows_limits_and_tokens(storage: Storage, clock: ManualClock) -> None:
    await set_limits(storage, "mail", rate=RateLimit(rate=2.0, burst=4), concurrency=3)
    await insert(storage, *(new_job(queue="mail") for _ in range(3)))
    [before] = await storage.queue_list()
    assert before.limits.rate == RateLimit(rate=2.0, burst=4)
    assert before.limits.concurrency == 3
    assert before.tokens == 4.0  # never drawn from: full
    assert len(await claim(storage, queues=["mail"])) == 3
    clock.advance(0.25)
    [after] = await storage.queue_list()
    assert after.tokens is not None
    assert abs(after.tokens - 1.5) < 1e-6


async def test_concurrent_claimers_together_never_exceed_the_burst(
    storage: Storage, shared_url: str | None, clock: ManualClock
) -> None:
    """4 participants (processes where the backend allows) claim at once from a queue with a bucket of
    5 that refills once an hour: 5 jobs claimed in all, whoever took them."""
    clock.set(datetime.now(UTC))  # the children claim by the system clock
    await set_limits(storage, "rated", rate=RateLimit(rate=1 / 3600, burst=5))
    await insert(storage, *(new_job(queue="rated") for _ in range(40)))
    results = await run_concurrently(storage, shared_url, "claim_once", 4, queue="rated", limit=10, rounds=3)
    claims = Counter(job_id for r in results for job_id in r["claimed"])
    assert sum(claims.values()) == 5
    assert all(count == 1 for count in claims.values())


async def test_rate_limited_jobs_still_complete_as_usual(storage: Storage) -> None:
    await set_limits(storage, rate=RateLimit(rate=0.001, burst=1))
    [job] = await insert(storage, new_job())
    [claimed] = await claim(storage)
    assert claimed.id == job.id
    assert await complete(storage, claimed) is not None


async def test_a_bucket_only_looked_at_refills_from_its_last_draw(
    storage: Storage, clock: ManualClock
) -> None:
    """A claim that finds a bucket empty does not store it: after a change of the rate, it refills from
    its last draw at the new rate, the same on every backend."""
    await set_limits(storage, rate=RateLimit(rate=0.5, burst=1))
    await insert(storage, new_job(id="first"), new_job(id="second"))
    assert await claim_ids(storage) == ["first"]  # drawn: 0 tokens at T0
    clock.advance(1)
    assert list(await claim_limited(storage)) == []  # 0.5 tokens: refused, and not written back
    await set_limits(storage, rate=RateLimit(rate=0.25, burst=1))
    [info] = await storage.queue_list()
    assert info.tokens is not None
    assert abs(info.tokens - 0.25) < 1e-6
    refused = await claim_limited(storage)
    assert approx_seconds(refused.retry_after, 3.0)
