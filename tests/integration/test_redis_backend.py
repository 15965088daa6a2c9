"""What the conformance suite cannot see of the Redis backend: its key layout, durability report, log
cap, options, use from several threads and event loops, retries, and wake-ups between instances.

Restarts of the server are in test_redis_restart.py; the shared behaviour of every backend is in
tests/conformance.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from relay.clock import ManualClock
from relay.errors import ConfigurationError, StorageUnavailableError
from relay.storage.params import ClaimParams, FinishItem, ListParams, LogAppend, LogParams, PurgeParams
from relay.storage.redis import RedisStorage
from relay.storage.redis.codec import pack_new_job
from relay.storage.redis.durability import assess
from relay.storage.redis.keys import LAYOUT, TEMPLATES, Keys
from relay.storage.redis.options import parse_options, redacted
from relay.types import JobKind, JobState, NewJob, Outcome, new_job_id
from servers.redis import RedisTestServer, free_port, redis_server, redis_test_url, with_query

__all__ = ["redis_server"]  # the session fixture, imported for pytest

WAKE_TIMEOUT = 5.0  # seconds a woken waiter may take to return
ALWAYS = {"appendonly": "yes", "appendfsync": "always"}

POLL_INTERVAL = 0.01  # seconds between looks at a condition polled against a deadline


class Env:
    """The ``BackendEnv`` shape ``redis_test_url`` reads."""

    def __init__(self, server: RedisTestServer) -> None:
        self.server = server


@pytest.fixture
def url(redis_server: RedisTestServer) -> str:
    return redis_test_url(Env(redis_server))


@pytest.fixture
async def storage(url: str) -> AsyncIterator[RedisStorage]:
    store = RedisStorage(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition()`` until true; fail after WAKE_TIMEOUT seconds."""
    deadline = time.monotonic() + WAKE_TIMEOUT
    while True:
        if await condition():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL_INTERVAL)


def job(**fields: Any) -> NewJob:
    return NewJob(kind=JobKind.SHELL, payload={"command": "true"}, **fields)


# -- durability --------------------------------------------------------------------------------------


async def test_open_reads_and_logs_what_the_settings_can_lose(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.storage.redis")
    store = RedisStorage(url)
    assert store.durability_report()["durable"] is False  # not read yet
    await store.open()
    try:
        report = store.durability_report()
        assert report["settings"]["appendonly"] == "yes"  # how the test server runs
        assert report["durable"] is True
        assert store.capabilities.durable is True
        assert "everysec" in report["summary"]
        assert any(
            report["summary"] in r.getMessage() for r in caplog.records if r.name == "relay.storage.redis"
        )
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("settings", "durable", "words"),
    [
        (ALWAYS, True, "no acknowledged job is lost"),
        ({"appendonly": "yes", "appendfsync": "everysec"}, True, "~1 s"),
        ({"appendonly": "yes", "appendfsync": "no"}, True, "~30 s"),
        ({"appendonly": "no", "save": "3600 1 300 100"}, False, "since the last snapshot"),
        ({"appendonly": "no", "save": ""}, False, "loses every job"),
        ({**ALWAYS, "maxmemory": "1000000", "maxmemory-policy": "allkeys-lru"}, False, "evict jobs"),
        ({**ALWAYS, "maxmemory": "1000000", "maxmemory-policy": "volatile-lru"}, True, "no acknowledged"),
        ({**ALWAYS, "maxmemory": "0", "maxmemory-policy": "allkeys-lru"}, True, "no acknowledged"),
    ],
    ids=["always", "everysec", "fsync-no", "rdb-only", "nothing", "allkeys-lru", "volatile-lru", "no-limit"],
)
def test_assessment_of_persistence_settings(settings: dict[str, str], durable: bool, words: str) -> None:
    report = assess(settings)
    assert report.durable is durable
    assert words in report.summary


# -- key layout --------------------------------------------------------------------------------------


def _template_pattern(prefix: str) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(t).replace("%s", "[^:]+") for t in TEMPLATES.values())
    return re.compile(rf"{re.escape(prefix)}:(?:{alternatives})")


async def _keys_of(url: str) -> list[str]:
    options = parse_options(url)
    client = aioredis.Redis.from_url(options.url, decode_responses=True)
    try:
        return [k async for k in client.scan_iter(match=Keys(options.prefix).pattern(), count=1000)]
    finally:
        await client.aclose()


async def test_every_key_is_under_the_prefix_and_named_by_a_template(storage: RedisStorage, url: str) -> None:
    [a, b] = [r.job for r in await storage.job_insert_many([job(queue="q1"), job(queue="q2", delay=60.0)])]
    [running] = await storage.job_claim(ClaimParams(["q1"], "w", 1))
    await storage.job_log_append([LogAppend(a.id, 1, "stdout", "hello")])
    await storage.job_finish_many([FinishItem(a.id, running.lease_token or "", Outcome.COMPLETED)])
    await storage.queue_pause("q3")
    keys = await _keys_of(url)
    pattern = _template_pattern(parse_options(url).prefix)
    assert keys
    assert all(pattern.fullmatch(k) for k in keys), keys
    assert f"{parse_options(url).prefix}:job:{b.id}" in keys
    other = with_query(url.split("?")[0], prefix=f"other-{new_job_id()}")
    assert await _keys_of(other) == []


async def _command_calls(url: str, names: tuple[str, ...]) -> int:
    client = aioredis.Redis.from_url(parse_options(url).url)
    try:
        stats: dict[str, Any] = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


async def test_listing_and_counting_never_scan_the_keyspace(storage: RedisStorage, url: str) -> None:
    await storage.job_insert_many([job(queue=f"q{n % 3}", tags=("x",)) for n in range(30)])
    before = await _command_calls(url, ("scan", "keys"))
    await storage.job_list(ListParams(limit=5, states=[JobState.PENDING], text="x"))
    await storage.job_list(ListParams(limit=5, queues=["q1"]))
    assert sum(sum(q.counts.values()) for q in await storage.queue_list()) == 30
    assert await _command_calls(url, ("scan", "keys")) == before


async def test_purge_of_a_big_queue_works_in_chunks(storage: RedisStorage) -> None:
    """More jobs than one purge script deletes (1,000): the chunks add up, and nothing else goes."""
    await storage.job_insert_many([job(queue="big") for _ in range(2500)])
    await storage.job_insert_many([job(queue="kept")])
    assert await storage.job_purge(PurgeParams(states=(JobState.PENDING,), queue="big")) == 2500
    assert [(q.name, sum(q.counts.values())) for q in await storage.queue_list()] == [("big", 0), ("kept", 1)]


async def test_a_store_of_another_layout_version_is_refused_at_open(url: str) -> None:
    options = parse_options(url)
    client = aioredis.Redis.from_url(options.url)
    try:
        await client.set(Keys(options.prefix).seq, 7)  # jobs written before the layout marker
        with pytest.raises(ConfigurationError, match="another version of Relay"):
            await RedisStorage(url).open()
        await client.set(Keys(options.prefix).layout, LAYOUT)
        store = RedisStorage(url)
        await store.open()
        await store.close()
    finally:
        await client.aclose()


async def test_a_big_insert_returns_each_job_as_stored(url: str) -> None:
    """From 100 jobs an insert builds its results while Redis runs the script, from what it sent:
    they must be the jobs job_get reads, whatever their options, and an idempotency key already used
    (before, or earlier in the batch) returns the job that holds it."""
    clock = ManualClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    store = RedisStorage(url, clock=clock)
    await store.open()
    try:
        [held] = [r.job for r in await store.job_insert_many([job(idempotency_key="held")])]
        clock.advance(1)
        run_ats = [None, clock.now() - timedelta(seconds=5), clock.now() + timedelta(seconds=5)]
        specs = [
            job(
                queue=f"q{n % 3}",
                priority=n % 4 - 1,
                delay=[0.0, 30.0, 0.5][n % 3],
                run_at=run_ats[n % 5 % 3],
                idempotency_key=["held", f"k{n // 6}", None][n % 3],  # k0 for 1 and 4, k1 for 7 and 10...
                tags=("a", f"t{n}") if n % 2 else (),
                metadata={"n": n} if n % 4 == 0 else {},
                checkpoint={"step": n} if n % 7 == 0 else None,
                timeout=10.0 if n % 6 == 0 else None,
                on_success=job(queue="after") if n % 9 == 0 else None,
            )
            for n in range(150)
        ]
        results = await store.job_insert_many(specs)
        assert len(results) == 150
        for result in results:
            assert result.job == await store.job_get(result.job.id)
        assert all(r.job.id == held.id and not r.created for r in results[::3])
        assert all(r.created for r in results[1::6])
        pairs = zip(results[4::6], results[1::6], strict=True)  # the second job with a key gets the first
        assert all(not r.created and r.job.id == first.job.id for r, first in pairs)
        states = {r.job.state for r in results if r.created}
        assert states == {JobState.PENDING, JobState.SCHEDULED}
    finally:
        await store.close()


# -- claims ------------------------------------------------------------------------------------------


async def test_a_claim_skips_a_pending_job_due_later_and_leaves_it_claimable(url: str) -> None:
    """A pending job whose run_at is ahead of the clock (the clock went back) is passed over, not
    removed, though it comes first in its ready set: the claimed jobs after it are removed one by one."""
    clock = ManualClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    store = RedisStorage(url, clock=clock)
    await store.open()
    try:
        [ahead] = [r.job for r in await store.job_insert_many([job(queue="q", priority=5)])]
        clock.advance(-10)
        due = [r.job for r in await store.job_insert_many([job(queue="q") for _ in range(3)])]
        claimed = await store.job_claim(ClaimParams(["q"], "w", 10))
        assert [j.id for j in claimed] == [j.id for j in due]
        assert await store.job_claim(ClaimParams(["q"], "w", 10)) == []
        clock.advance(10)
        assert [j.id for j in await store.job_claim(ClaimParams(["q"], "w", 10))] == [ahead.id]
    finally:
        await store.close()


async def test_a_claim_merges_queues_and_kinds_in_claim_order(storage: RedisStorage) -> None:
    specs = [
        job(queue="a", priority=1),
        NewJob(kind=JobKind.TASK, payload={"task": "t"}, queue="b", priority=3),
        job(queue="b", priority=1),
        job(queue="a", priority=3),
        job(queue="b"),
    ]
    ids = [r.job.id for r in await storage.job_insert_many(specs)]
    params = ClaimParams(["a", "b"], "w", 4, (JobKind.SHELL, JobKind.TASK))
    claimed = await storage.job_claim(params)
    assert [j.id for j in claimed] == [ids[1], ids[3], ids[0], ids[2]]
    assert [j.id for j in await storage.job_claim(params)] == [ids[4]]
    counts = {q.name: q.counts for q in await storage.queue_list()}
    assert (counts["a"][JobState.RUNNING], counts["b"][JobState.RUNNING]) == (2, 3)
    assert sum(counts["a"].values()) + sum(counts["b"].values()) == 5


# -- logs --------------------------------------------------------------------------------------------


async def test_log_lines_are_capped_per_job_oldest_first(url: str) -> None:
    store = RedisStorage(url, log_max_lines=3)
    await store.open()
    try:
        [result] = await store.job_insert_many([job()])
        await store.job_log_append([LogAppend(result.job.id, 1, "stdout", f"line {n}") for n in range(5)])
        lines = await store.job_logs(LogParams(result.job.id))
        assert [line.text for line in lines] == ["line 2", "line 3", "line 4"]
        assert [line.seq for line in lines] == [3, 4, 5]  # seqs go on: --follow never repeats a line
        after = await store.job_logs(LogParams(result.job.id, after_seq=1))
        assert [line.seq for line in after] == [3, 4, 5]
    finally:
        await store.close()


# -- options -----------------------------------------------------------------------------------------


def test_relay_options_are_taken_out_of_the_url() -> None:
    options = parse_options(
        "redis://:pw@localhost:6379/2?prefix=jobs&log_max_lines=7&health_check_interval=5"
    )
    assert (options.prefix, options.log_max_lines) == ("jobs", 7)
    assert options.url == "redis://:pw@localhost:6379/2?health_check_interval=5"
    assert parse_options("redis://localhost", {"prefix": "x"}).prefix == "x"
    with pytest.raises(ConfigurationError):
        parse_options("redis://localhost", {"no_such_option": 1})
    with pytest.raises(ConfigurationError):
        parse_options("redis://localhost?log_max_lines=many")
    assert "pw" not in redacted("redis://user:pw@localhost:6379/0")


# -- threads, loops, failures ------------------------------------------------------------------------


async def test_one_instance_serves_several_threads_each_with_its_own_loop(storage: RedisStorage) -> None:
    await storage.job_insert_many([job(queue="shared") for _ in range(60)])
    claimed: list[list[str]] = [[] for _ in range(3)]

    def participant(index: int) -> None:
        async def work() -> None:
            while jobs := await storage.job_claim(ClaimParams(["shared"], f"w{index}", 7)):
                claimed[index].extend(j.id for j in jobs)

        asyncio.run(work())

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    await asyncio.to_thread(lambda: [t.join(30) for t in threads])
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == len(set(every)) == 60


async def test_an_unreachable_server_is_storage_unavailable_after_the_retry_deadline() -> None:
    store = RedisStorage(f"redis://127.0.0.1:{free_port()}/0", retry_deadline=0.3)
    with pytest.raises(StorageUnavailableError):
        await store.open()


async def test_a_closed_storage_is_storage_unavailable(url: str) -> None:
    store = RedisStorage(url)
    await store.open()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StorageUnavailableError):
        await store.job_get("x")


async def test_an_insert_sent_again_after_a_lost_reply_returns_its_own_jobs(storage: RedisStorage) -> None:
    """The retry policy may send an insert twice; its batch token makes the second call harmless."""
    packed = [
        pack_new_job(job(id="chosen"), "chosen"),
        pack_new_job(job(idempotency_key="k"), new_job_id()),
    ]
    first = await storage._insert(packed, "batch-1")
    again = await storage._insert(packed, "batch-1")
    assert [r.created for r in again] == [True, True]
    assert [r.job for r in again] == [r.job for r in first]
    assert [r.job for r in first] == [await storage.job_get(r.job.id) for r in first]
    other = await storage._insert(packed[1:], "batch-2")  # another call: the key returns the job
    assert [(r.created, r.job.id) for r in other] == [(False, first[1].job.id)]


# -- wake-ups ----------------------------------------------------------------------------------------


async def test_an_insert_wakes_a_waiter_of_another_instance(url: str) -> None:
    worker, producer = RedisStorage(url), RedisStorage(url)
    await worker.open()
    await producer.open()
    try:
        # The first wait starts the subscription; wait until it is live before relying on it.
        await worker.wait_for_jobs(["mail"], 0.01)
        await until(lambda: _has_subscriber(url), "the subscription")
        waiter = asyncio.create_task(worker.wait_for_jobs(["mail"], 30.0))
        # Yield once: the waiter registers in its first step. Without this, on a loaded machine the
        # insert's wake-up could reach the worker (on other threads) before the waiter existed, and a
        # wake-up nobody waits for is dropped (the poll covers it in a real worker).
        await asyncio.sleep(0)
        await producer.job_insert_many([job(queue="mail")])
        assert await asyncio.wait_for(waiter, WAKE_TIMEOUT) is True
        other = asyncio.create_task(worker.wait_for_jobs(["sms"], 0.2))
        await producer.job_insert_many([job(queue="mail")])
        assert await asyncio.wait_for(other, WAKE_TIMEOUT) is False
    finally:
        await worker.close()
        await producer.close()


async def _has_subscriber(url: str) -> bool:
    options = parse_options(url)
    client = aioredis.Redis.from_url(options.url)
    try:
        counts = await client.pubsub_numsub(Keys(options.prefix).wake)
    finally:
        await client.aclose()
    return bool(counts and counts[0][1] > 0)
