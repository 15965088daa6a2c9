"""Atomicity under concurrency: claims and idempotent inserts racing each other (semantics.md rules 1, 2).

A backend with the ``multi_process`` capability (SQLite, later PostgreSQL and Redis) is raced by real
child processes (``_child.py``) that open its URL with the system clock. A backend without it (memory)
is raced by threads of this process, each running its own event loop against the one instance. Either
way every participant waits at a start line, so that they really overlap. Every backend is also raced
by concurrent asyncio tasks sharing the test's own instance.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.types import JobState

from . import _child
from .helpers import insert, list_all, new_job, seconds

CHILD_SCRIPT = Path(_child.__file__)
START_TIMEOUT = 30.0  # seconds for every participant to open the storage
RUN_TIMEOUT = 60.0  # seconds for the work itself


async def run_concurrently(
    storage: Storage, shared_url: str | None, role: str, n: int, **args: Any
) -> list[dict[str, Any]]:
    """Run ``n`` participants of ``role``: processes on ``shared_url``, or threads when it is None."""
    if shared_url is None:
        return await asyncio.to_thread(run_in_threads, storage, role, n, args)
    return await run_in_processes(shared_url, role, n, args)


def run_in_threads(storage: Storage, role: str, n: int, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Each thread runs its own event loop against the one (not multi-process) instance."""
    start = threading.Barrier(n)
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    errors: list[BaseException] = []

    def participant(index: int) -> None:
        try:
            start.wait(timeout=START_TIMEOUT)
            results[index] = asyncio.run(_child.WORK[role](storage, index, **args))
        except BaseException as exc:  # handed to the test below
            errors.append(exc)

    threads = [threading.Thread(target=participant, args=(i,), name=f"{role}-{i}") for i in range(n)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up sooner
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=RUN_TIMEOUT)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads), "a participant thread did not finish in time"
    if errors:
        raise errors[0]
    return results


async def run_in_processes(url: str, role: str, n: int, args: dict[str, Any]) -> list[dict[str, Any]]:
    procs: list[asyncio.subprocess.Process] = []
    try:
        for index in range(n):
            command = [str(CHILD_SCRIPT), role, url, str(index), json.dumps(args)]
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    *command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        async with asyncio.timeout(START_TIMEOUT):
            for proc in procs:
                await expect_ready(proc)
        for proc in procs:  # the start line
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        async with asyncio.timeout(RUN_TIMEOUT):
            outputs = await asyncio.gather(*(proc.communicate() for proc in procs))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"child {proc.pid} failed:\n{err.decode()}"
        results.append(json.loads(out.decode().splitlines()[-1]))
    return results


async def expect_ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if line.strip() != b"ready":
        _, err = await proc.communicate()
        raise AssertionError(f"child {proc.pid} did not start ({line!r}):\n{err.decode()}")


async def test_concurrent_inserts_with_one_idempotency_key_make_one_job(
    storage: Storage, shared_url: str | None
) -> None:
    """8 participants insert under the same key at once: exactly one job, which all of them get back.

    Processes for multi-process backends; threads (one event loop each) for the memory backend. To give
    the race many chances, they repeat it over 200 keys, each key in its own insert.
    """
    keys = [f"key-{n}" for n in range(200)]
    results = await run_concurrently(storage, shared_url, "insert", 8, keys=keys, queue="idem")
    stored = {job.idempotency_key: job for job in await list_all(storage, queues=["idem"])}
    assert sorted(stored) == sorted(keys), "not exactly one job per key"
    for key in keys:
        outcomes = [r[key] for r in results]
        assert sum(o["created"] for o in outcomes) == 1, f"{key}: created {outcomes}"
        [creator] = [o for o in outcomes if o["created"]]
        assert {o["id"] for o in outcomes} == {stored[key].id}
        assert all(o["payload"] == creator["payload"] == stored[key].payload for o in outcomes)


async def test_concurrent_claimers_claim_each_job_exactly_once(
    storage: Storage, shared_url: str | None, clock: ManualClock
) -> None:
    """4 participants claim 2,000 jobs in batches of 10 to 50 and complete them, until none is left.

    Processes for multi-process backends; threads (one event loop each) for the memory backend. The
    children use the system clock, so the jobs are inserted as due a minute ago by the real clock.
    """
    clock.set(datetime.now(UTC) - seconds(60))
    jobs = await insert(storage, *(new_job(queue="bulk", payload={"n": n}) for n in range(2000)))
    results = await run_concurrently(storage, shared_url, "claim", 4, queue="bulk")

    claims = Counter(job_id for r in results for job_id in r["claimed"])
    assert sum(claims.values()) == 2000, "a job was claimed more than once"
    assert set(claims) == {job.id for job in jobs}, "a job was never claimed"
    claimer = {job_id: r["worker_id"] for r in results for job_id in r["claimed"]}
    stored = await list_all(storage, queues=["bulk"])
    assert len(stored) == 2000
    for job in stored:
        assert job.state is JobState.COMPLETED
        assert job.attempt == 1
        assert job.worker_id == claimer[job.id]
        assert job.result == {"by": claimer[job.id]}
    [queue] = await storage.queue_list()
    assert queue.counts[JobState.COMPLETED] == 2000
    assert sum(queue.counts.values()) == 2000


async def test_concurrent_tasks_claim_each_job_exactly_once(storage: Storage) -> None:
    """8 asyncio tasks share the test's own instance: 400 jobs, each claimed exactly once."""
    jobs = await insert(storage, *(new_job(queue="bulk") for _ in range(400)))
    results = await asyncio.gather(*(_child.claim_until_empty(storage, i, queue="bulk") for i in range(8)))
    claims = Counter(job_id for r in results for job_id in r["claimed"])
    assert sum(claims.values()) == 400
    assert set(claims) == {job.id for job in jobs}


async def test_concurrent_tasks_insert_one_job_per_idempotency_key(storage: Storage) -> None:
    """8 asyncio tasks share the test's own instance and insert under the same keys: one job per key."""
    keys = [f"key-{n}" for n in range(20)]
    results = await asyncio.gather(
        *(_child.insert_with_keys(storage, i, keys=keys, queue="idem") for i in range(8))
    )
    for key in keys:
        assert sum(r[key]["created"] for r in results) == 1
        assert len({r[key]["id"] for r in results}) == 1
    assert len(await list_all(storage, queues=["idem"])) == 20
