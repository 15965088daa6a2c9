"""The hot table stays small under churn on PostgreSQL, and the claim reads only what it needs.

Churn: rounds of jobs enqueued, claimed, completed and pruned after a retention, time moved by a
ManualClock. The table then holds about a retention's worth of finished jobs, whatever the number of
rounds. The plans show the claim walking its partial indexes, which hold waiting jobs only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest

from relay.clock import ManualClock
from relay.storage.params import ClaimParams, FinishItem, ListParams, LogAppend, LogParams, PruneParams
from relay.storage.postgres import PostgresStorage
from relay.storage.postgres.rows import json_array
from relay.storage.postgres.sql import Q
from relay.types import JobKind, NewJob, Outcome
from servers.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

BATCH = 300  # jobs per round
ROUNDS = 6
RETENTION = timedelta(hours=1)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def storage(postgres_url: str, clock: ManualClock) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(postgres_url, clock=clock)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM relay.{table}").fetchone()  # test code: fixed names
    return int(row[0]) if row else 0


async def one_round(storage: PostgresStorage) -> None:
    await storage.job_insert_many([NewJob(kind=JobKind.SHELL, payload={"n": n}) for n in range(BATCH)])
    while jobs := await storage.job_claim(ClaimParams(["default"], "w", 100)):
        await storage.job_log_append([LogAppend(j.id, j.attempt, "stdout", "line") for j in jobs])
        await storage.job_finish_many(
            [FinishItem(j.id, j.lease_token or "", Outcome.COMPLETED) for j in jobs]
        )


async def test_pruning_keeps_the_table_at_one_retention_of_jobs(
    storage: PostgresStorage, clock: ManualClock, postgres_url: str
) -> None:
    for _ in range(ROUNDS):
        await one_round(storage)
        clock.advance(RETENTION.total_seconds() / 2)
        pruned = await storage.job_prune(PruneParams(finished_before=clock.now() - RETENTION))
        assert pruned in (0, BATCH)
        assert rows(postgres_url, "jobs") <= 3 * BATCH, "finished jobs pile up"
    assert rows(postgres_url, "jobs") == rows(postgres_url, "job_logs")  # logs go with their jobs


async def test_prune_limit_and_states(
    storage: PostgresStorage, clock: ManualClock, postgres_url: str
) -> None:
    await one_round(storage)
    clock.advance(7200)
    before = clock.now()
    assert await storage.job_prune(PruneParams(finished_before=before, limit=100)) == 100
    assert await storage.job_prune(PruneParams(finished_before=before, states=())) == 0
    assert await storage.job_prune(PruneParams(finished_before=before)) == BATCH - 100
    assert rows(postgres_url, "jobs") == 0
    assert rows(postgres_url, "job_logs") == 0


async def test_pruned_jobs_logs_are_gone(storage: PostgresStorage, clock: ManualClock) -> None:
    await one_round(storage)
    [job] = (await storage.job_list(ListParams(limit=1))).jobs
    assert await storage.job_logs(LogParams(job.id))
    clock.advance(7200)
    await storage.job_prune(PruneParams(finished_before=clock.now()))
    assert await storage.job_logs(LogParams(job.id)) == []


def plan(url: str, query: str, params: dict[str, object]) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE relay.jobs")
        return "\n".join(r[0] for r in conn.execute(f"EXPLAIN {query}", params).fetchall())  # type: ignore[arg-type]


async def test_the_claim_reads_waiting_jobs_through_its_partial_indexes(
    storage: PostgresStorage, clock: ManualClock, postgres_url: str
) -> None:
    """With many finished and many delayed jobs, the claim plan touches neither: it walks jobs_pending
    (pending jobs of each queue in claim order) and the due end of jobs_due."""
    await storage.job_insert_many([NewJob(kind=JobKind.SHELL, payload={}) for _ in range(2000)])
    await storage.job_insert_many([NewJob(kind=JobKind.SHELL, payload={}, delay=3600) for _ in range(2000)])
    for _ in range(10):
        await one_round(storage)
    params = {
        "now": clock.now(),
        "queues": json_array(["default"]),
        "kinds": json_array(["shell"]),
        "limit": 10,
        "worker_id": "w",
    }
    text = plan(postgres_url, Q["job_claim"], params)
    assert "jobs_pending" in text, text
    assert "jobs_due" in text, text
    assert "Seq Scan on jobs" not in text, text
