"""A Redis server restarted (or killed) under a live Redis storage, in one process.

Each test runs its own ``redis-server`` (AOF on, ``appendfsync always``) in ``tmp_path`` and restarts it
on the same port and directory: acknowledged data survives, operations in flight wait for the server
and then complete, and the wake-up subscription comes back by itself. The same with real worker
processes is tests/e2e/test_redis_restart.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from relay.storage.params import ClaimParams, FinishItem, HeartbeatItem
from relay.storage.redis import RedisStorage
from relay.storage.redis.keys import Keys
from relay.types import JobKind, JobState, NewJob, Outcome
from servers.redis import RedisProcess, start_redis

DEADLINE = 20.0  # seconds any awaited condition may take
PREFIX = "restart"

POLL_INTERVAL = 0.02  # seconds between looks at a condition polled against a deadline


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    try:
        process = start_redis(tmp_path, appendfsync="always")
    except RuntimeError as exc:
        pytest.skip(f"no Redis server for the test: {exc}")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def storage(server: RedisProcess) -> AsyncIterator[RedisStorage]:
    store = RedisStorage(f"{server.url}?prefix={PREFIX}", retry_deadline=DEADLINE)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def job(**fields: Any) -> NewJob:
    return NewJob(kind=JobKind.SHELL, payload={"command": "true"}, **fields)


async def until(condition: Callable[[], Any], what: str) -> None:
    """Poll ``condition()`` (sync, or returning an awaitable) until truthy; fail after DEADLINE s."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"timed out after {DEADLINE}s waiting for {what}"
        await asyncio.sleep(POLL_INTERVAL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_nothing_acknowledged_is_lost_and_calls_wait_for_the_server(
    server: RedisProcess, storage: RedisStorage, sig: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="relay.storage.redis")
    inserted = [r.job for r in await storage.job_insert_many([job() for _ in range(50)])]
    running = await storage.job_claim(ClaimParams(["default"], "w1", 10))

    server.stop(sig)  # SIGKILL: a crash; appendfsync always has every acknowledged write on disk
    during = asyncio.create_task(storage.job_insert_many([job(id="during-the-outage")]))
    await until(lambda: "unreachable during insert" in caplog.text, "the insert to notice the outage")
    assert not during.done()
    server.start()

    [late] = await asyncio.wait_for(during, DEADLINE)
    assert late.created
    for before in inserted:
        stored = await storage.job_get(before.id)
        assert stored is not None
        assert stored.id == before.id
    beat = await storage.job_heartbeat_many([HeartbeatItem(j.id, j.lease_token or "") for j in running])
    assert beat.extended == {j.id for j in running}
    done = await storage.job_finish_many(
        [FinishItem(j.id, j.lease_token or "", Outcome.COMPLETED) for j in running]
    )
    assert {r.state for r in done} == {JobState.COMPLETED}
    queue = (await storage.queue_list())[0]
    assert queue.counts[JobState.PENDING] == 41
    assert queue.counts[JobState.COMPLETED] == 10


async def _subscribers(server: RedisProcess) -> int:
    client = aioredis.Redis.from_url(server.url)
    try:
        counts = await client.pubsub_numsub(Keys(PREFIX).wake)
    except aioredis.ConnectionError:
        return 0
    finally:
        await client.aclose()
    return int(counts[0][1]) if counts else 0


async def test_the_wakeup_subscription_comes_back_after_a_restart(
    server: RedisProcess, storage: RedisStorage
) -> None:
    producer = RedisStorage(f"{server.url}?prefix={PREFIX}", retry_deadline=DEADLINE)
    await producer.open()
    try:
        await storage.wait_for_jobs(["mail"], 0.01)  # starts the subscription
        await until(lambda: _subscribers(server), "the first subscription")
        server.stop()
        server.start()
        await until(lambda: _subscribers(server), "the subscription after the restart")
        waiter = asyncio.create_task(storage.wait_for_jobs(["mail"], 30.0))
        await asyncio.sleep(0)  # yield once: the waiter registers before the insert can wake anyone
        await producer.job_insert_many([job(queue="mail")])
        assert await asyncio.wait_for(waiter, DEADLINE) is True
    finally:
        await producer.close()
