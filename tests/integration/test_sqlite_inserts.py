"""The SQLite bulk insert's two statement shapes (queries.sql: job_insert, job_insert_plain).

A job whose nullable columns are all NULL is written by the short statement, any other by the full one;
a batch that mixes them is written in runs. Whatever the shape, the batch keeps its order (seq, hence
claim order among equals) and the job returned is the job stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.clock import ManualClock
from relay.storage.params import ClaimParams, ListParams
from relay.storage.sqlite import SQLiteStorage
from relay.types import JobKind, JobState, NewJob

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(str(tmp_path / "relay.db"), clock=ManualClock(T0))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def plain(n: int) -> NewJob:
    # A tuple in the payload is stored as a JSON array: the job returned must hold the list too.
    return NewJob(kind=JobKind.TASK, payload={"task": "t", "args": (n,), "kwargs": {}}, queue="q")


def full(n: int) -> NewJob:
    """One nullable column set, a different one for each n: each takes the full statement."""
    base = NewJob(kind=JobKind.SHELL, payload={"command": "echo", "n": n}, queue="q")
    variants = [
        replace(base, timeout=5.0),
        replace(base, idempotency_key=f"key-{n}"),
        replace(base, on_success=NewJob(kind=JobKind.SHELL, payload={"command": "true"})),
        replace(base, on_failure=NewJob(kind=JobKind.SHELL, payload={"command": "false"})),
        replace(base, checkpoint={"step": n}),
    ]
    return variants[n % 5]


async def test_a_mixed_batch_keeps_its_order_and_returns_what_is_stored(storage: SQLiteStorage) -> None:
    # Runs of each shape, of several lengths, so that the batch is written in several statements.
    specs = [plain(0), full(1), full(2), plain(3), plain(4), plain(5), full(6), plain(7), full(8), full(9)]
    results = await storage.job_insert_many(specs)

    assert all(r.created for r in results)
    page = await storage.job_list(ListParams(limit=100))
    stored = list(reversed(page.jobs))  # job_list is newest first
    assert [j.id for j in stored] == [r.job.id for r in results]
    assert stored == [r.job for r in results]
    assert results[0].job.payload == {"task": "t", "args": [0], "kwargs": {}}

    claimed = await storage.job_claim(ClaimParams(["q"], "w", 100, list(JobKind)))
    assert [j.id for j in claimed] == [r.job.id for r in results]  # equal priority and run_at: seq


async def test_delayed_and_tagged_plain_jobs_read_back_equal(storage: SQLiteStorage) -> None:
    spec = NewJob(
        kind=JobKind.TASK,
        payload={"task": "t"},
        delay=30.0,
        tags=("a", "b"),
        metadata={"owner": "ops"},
        priority=3,
    )
    [result] = await storage.job_insert_many([spec])

    assert result.job.state is JobState.SCHEDULED
    assert result.job.run_at == T0 + timedelta(seconds=30)
    assert (result.job.tags, result.job.metadata) == (("a", "b"), {"owner": "ops"})
    assert await storage.job_get(result.job.id) == result.job
