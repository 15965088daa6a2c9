"""The work of one concurrent participant in test_concurrency.py: a child process, or a thread.

As a child process: ``python _child.py ROLE URL INDEX ARGS_JSON``. It opens the storage URL with the
system clock (as a real worker would), prints ``ready``, waits for one line on stdin (the start signal,
so that every child starts at the same moment), does its work, and prints its result as one JSON line.

Backends without the ``multi_process`` capability run the same coroutines in threads of the test
process instead (see ``test_concurrency.run_in_threads``).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from relay.app import storage_from_url
from relay.storage.base import Storage
from relay.storage.params import ClaimParams, FinishItem, ScheduleFire
from relay.types import JobKind, JobState, NewJob, Outcome

Work = Callable[..., Awaitable[dict[str, Any]]]


async def insert_with_keys(storage: Storage, index: int, *, keys: list[str], queue: str) -> dict[str, Any]:
    """Insert one job per key, in order, under keys every participant shares; one insert per call."""
    created: dict[str, Any] = {}
    for key in keys:
        job = NewJob(kind=JobKind.SHELL, payload={"inserter": index}, queue=queue, idempotency_key=key)
        [result] = await storage.job_insert_many([job])
        created[key] = {"id": result.job.id, "created": result.created, "payload": result.job.payload}
    return created


async def claim_until_empty(storage: Storage, index: int, *, queue: str) -> dict[str, Any]:
    """Claim in batches of 10 to 50 and complete each batch, until a claim comes back empty."""
    worker_id = f"claimer-{index}"
    rng = random.Random(index)
    claimed: list[str] = []
    while True:
        params = ClaimParams(queues=[queue], worker_id=worker_id, limit=rng.randint(10, 50))
        jobs = await storage.job_claim(params)
        if not jobs:
            return {"worker_id": worker_id, "claimed": claimed}
        claimed.extend(job.id for job in jobs)
        items = [
            FinishItem(job.id, job.lease_token or "", Outcome.COMPLETED, result={"by": worker_id})
            for job in jobs
        ]
        results = await storage.job_finish_many(items)
        refused = [r.job_id for r in results if r.state is not JobState.COMPLETED]
        if refused:
            raise RuntimeError(f"{worker_id}: completion refused for jobs it had just claimed: {refused}")


async def claim_once(
    storage: Storage, index: int, *, queue: str, limit: int, rounds: int = 1
) -> dict[str, Any]:
    """Claim ``rounds`` times (finishing nothing), as workers racing for a limited queue would."""
    worker_id = f"claimer-{index}"
    claimed: list[str] = []
    for _ in range(rounds):
        jobs = await storage.job_claim(ClaimParams(queues=[queue], worker_id=worker_id, limit=limit))
        claimed.extend(job.id for job in jobs)
    return {"worker_id": worker_id, "claimed": claimed}


async def fire_schedule(storage: Storage, index: int, *, name: str, ticks: list[str]) -> dict[str, Any]:
    """Fire the schedule's next tick again and again, as every node running the cron scheduler does,
    until it has moved past the last of ``ticks`` (ISO times a minute apart)."""
    last = datetime.fromisoformat(ticks[-1])
    fired: list[str] = []
    while True:
        current = await storage.schedule_get(name)
        assert current is not None
        assert current.next_run_at is not None
        tick = current.next_run_at
        if tick > last:
            return {"fired": fired}
        job = NewJob(kind=JobKind.SHELL, payload={"tick": tick.isoformat()}, idempotency_key=f"{name}@{tick}")
        fire = ScheduleFire(name, tick, tick, tick + timedelta(minutes=1), job)
        if (await storage.schedule_fire(fire)).fired:
            fired.append(tick.isoformat())


async def drain_run(storage: Storage, index: int, *, queue: str, run_id: str) -> dict[str, Any]:
    """Claim and complete the steps of a workflow run until the run is no longer running."""
    worker_id = f"drainer-{index}"
    claimed: list[str] = []
    while True:
        jobs = await storage.job_claim(ClaimParams(queues=[queue], worker_id=worker_id, limit=3))
        if jobs:
            claimed.extend(job.id for job in jobs)
            items = [FinishItem(job.id, job.lease_token or "", Outcome.COMPLETED) for job in jobs]
            await storage.job_finish_many(items)
            continue
        run = await storage.workflow_get(run_id)
        assert run is not None
        if run.state.value != "running":
            return {"worker_id": worker_id, "claimed": claimed}
        await storage.wait_for_jobs([queue], 0.05)  # a released step wakes it; else it looks again


WORK: dict[str, Work] = {
    "insert": insert_with_keys,
    "claim": claim_until_empty,
    "claim_once": claim_once,
    "fire": fire_schedule,
    "drain_run": drain_run,
}


async def run_child(role: str, url: str, index: int, args: dict[str, Any]) -> dict[str, Any]:
    storage = storage_from_url(url)  # the system clock, as in a real worker process
    await storage.open()
    try:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the start signal
        return await WORK[role](storage, index, **args)
    finally:
        await storage.close()


def main() -> None:
    role, url, index, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    result = asyncio.run(run_child(role, url, index, args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
