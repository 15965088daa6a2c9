"""worker_heartbeat, worker_list and worker_remove (semantics.md rule 18)."""

from __future__ import annotations

from dataclasses import replace

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.types import WorkerInfo

from .helpers import seconds


def worker(worker_id: str, clock: ManualClock, **fields: object) -> WorkerInfo:
    info = WorkerInfo(
        id=worker_id,
        host="host-1",
        pid=4242,
        queues=("default", "mail"),
        concurrency=8,
        started_at=clock.now(),
        last_heartbeat_at=clock.now(),
        running=(),
    )
    return replace(info, **fields)


async def test_register_and_list(storage: Storage, clock: ManualClock) -> None:
    assert await storage.worker_list() == []
    b = worker("host-1:2:bbb", clock, running=("job-1", "job-2"))
    a = worker("host-1:1:aaa", clock, queues=("only",), concurrency=1)
    await storage.worker_heartbeat(b)
    await storage.worker_heartbeat(a)
    assert await storage.worker_list() == [a, b]  # sorted by id


async def test_heartbeat_upserts(storage: Storage, clock: ManualClock) -> None:
    first = worker("w", clock, running=("job-1",))
    await storage.worker_heartbeat(first)
    clock.advance(15)
    refreshed = replace(first, last_heartbeat_at=clock.now(), running=("job-2", "job-3"))
    await storage.worker_heartbeat(refreshed)
    assert await storage.worker_list() == [refreshed]
    assert refreshed.started_at == first.started_at
    assert refreshed.last_heartbeat_at == first.started_at + seconds(15)


async def test_remove(storage: Storage, clock: ManualClock) -> None:
    await storage.worker_heartbeat(worker("w1", clock))
    await storage.worker_heartbeat(worker("w2", clock))
    await storage.worker_remove("w1")
    assert [w.id for w in await storage.worker_list()] == ["w2"]
    await storage.worker_remove("w1")  # a missing id is no error
    await storage.worker_remove("never-registered")
    assert [w.id for w in await storage.worker_list()] == ["w2"]
