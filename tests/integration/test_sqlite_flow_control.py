"""Flow control on SQLite beyond the conformance suite: the plans its queries rely on, the statements
the hot path runs (none more for queues and jobs that do not use flow control), migration 0002 on a file
with jobs, the claim of limited queues (claim order across queues, its scan bound), and wake-ups that
reach other processes through the wake-up sockets.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.clock import ManualClock
from relay.storage.params import ClaimParams, FinishItem
from relay.storage.sqlite import SQLiteStorage
from relay.storage.sqlite.flow import SCAN_BOUND
from relay.storage.sqlite.migrate import MIGRATIONS, split_statements
from relay.storage.sqlite.sql import Q
from relay.types import Job, JobKind, JobState, NewJob, Outcome, QueueLimits, RateLimit

from .test_sqlite_wakeup import CHILD_TIMEOUT, PROMPT, listening

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(queue: str = "default", **fields: Any) -> NewJob:
    return NewJob(kind=JobKind.SHELL, payload={"command": "true"}, queue=queue, **fields)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "relay.db"


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(str(db_path), clock=ManualClock(T0))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def claim(storage: SQLiteStorage, queues: list[str], limit: int = 10) -> list[Job]:
    return await storage.job_claim(ClaimParams(queues=queues, worker_id="w", limit=limit))


async def complete(storage: SQLiteStorage, job: Job) -> None:
    assert job.lease_token is not None
    [result] = await storage.job_finish_many([FinishItem(job.id, job.lease_token, Outcome.COMPLETED)])
    assert result.state is JobState.COMPLETED


# -- query plans -----------------------------------------------------------------------------------


def plan(db_path: Path, query: str, params: dict[str, Any]) -> list[str]:
    conn = sqlite3.connect(db_path)
    conn.create_function("relay_new_lease_token", 0, lambda: "token")
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + Q[query], params)]
    finally:
        conn.close()


PARAMS = {
    "now": 0,
    "queue": "q",
    "queues": '["q"]',
    "kinds": '["shell"]',
    "limit": 10,
    "bound": 10,
    "pairs": '[["q", "k"]]',
    "worker_id": "w",
}


async def test_the_claim_of_a_limited_queue_walks_the_claim_index_in_order(
    storage: SQLiteStorage, db_path: Path
) -> None:
    steps = plan(db_path, "job_claim_walk", PARAMS)
    assert any("USING INDEX jobs_claim (queue=?)" in step for step in steps), steps
    assert not any("TEMP B-TREE" in step for step in steps), steps  # no sort: rows come in claim order
    fast = plan(db_path, "job_claim", PARAMS)
    assert any("USING INDEX jobs_claim (queue=?)" in step for step in fast), fast


@pytest.mark.parametrize("query", ["ordering_blocked", "ordering_release"])
async def test_ordering_keys_are_looked_up_in_their_index(
    storage: SQLiteStorage, db_path: Path, query: str
) -> None:
    steps = plan(db_path, query, PARAMS)
    uses = [step for step in steps if "jobs_ordering" in step]
    assert uses, steps
    assert all("(queue=? AND ordering_key=? AND held=?)" in step for step in uses), steps


async def test_running_jobs_are_counted_from_an_index_range(storage: SQLiteStorage, db_path: Path) -> None:
    steps = plan(db_path, "job_running_counts", PARAMS)
    assert any("USING INDEX jobs_queue_state (queue=? AND state=?)" in step for step in steps), steps


# -- the hot path runs no statement more -----------------------------------------------------------


@asynccontextmanager
async def statements(storage: SQLiteStorage) -> AsyncIterator[list[str]]:
    """The SQL the storage's connection runs meanwhile (BEGIN / COMMIT left out)."""
    seen: list[str] = []

    def record(sql: str) -> None:
        if sql.split()[0] not in ("BEGIN", "COMMIT"):
            seen.append(sql)

    # On the connection's own thread, the only one that may touch it; the callback runs there too.
    await storage._db.read(lambda conn, now: conn.set_trace_callback(record))
    try:
        yield seen
    finally:
        await storage._db.read(lambda conn, now: conn.set_trace_callback(None))


def named(seen: list[str]) -> list[str]:
    """The queries.sql names of ``seen``, each name once, in order. The trace shows a statement with
    its values bound in, so each is matched to the query whose text it shares the longest start with."""
    texts = {name: " ".join(sql.split()) for name, sql in Q.items()}
    names: list[str] = []
    for sql in seen:
        traced = " ".join(sql.split())
        name = max(texts, key=lambda n: _common_start(texts[n], traced))
        if name not in names:
            names.append(name)
    return names


def _common_start(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


async def test_jobs_and_queues_without_flow_control_run_the_statements_they_always_ran(
    storage: SQLiteStorage,
) -> None:
    async with statements(storage) as seen:
        await storage.job_insert_many([job() for _ in range(5)])
    assert named(seen) == ["job_insert_plain", "queue_register"]
    async with statements(storage) as seen:
        jobs = await claim(storage, ["default"])
    assert named(seen) == ["job_claim_promote", "job_claim"]  # no look at the queue's limits
    async with statements(storage) as seen:
        for claimed in jobs:
            await complete(storage, claimed)
    assert named(seen) == ["job_finish_fence", "job_finish"]  # no release of held jobs


async def test_a_batch_with_ordering_keys_looks_them_up_once(storage: SQLiteStorage) -> None:
    batch = [job(ordering_key=f"k{n % 7}") for n in range(50)]
    async with statements(storage) as seen:
        results = await storage.job_insert_many(batch)
    assert named(seen) == ["ordering_blocked", "job_insert_flow", "queue_register"]
    assert sum(not r.job.held for r in results) == 7  # the first of each key
    stored = [await storage.job_get(r.job.id) for r in results]
    assert [j.held for j in stored if j is not None] == [r.job.held for r in results]


# -- the claim of limited queues -------------------------------------------------------------------


async def test_a_claim_across_limited_and_unlimited_queues_keeps_claim_order_and_its_limit(
    storage: SQLiteStorage,
) -> None:
    await storage.queue_limits_set("slow", QueueLimits(concurrency=2))
    await storage.job_insert_many(
        [
            job("fast", id="fast-low", priority=0),
            job("slow", id="slow-high", priority=9),
            job("slow", id="slow-high-2", priority=9),
            job("slow", id="slow-high-3", priority=9),  # over the concurrency: passed over
            job("fast", id="fast-mid", priority=5),
            job("fast", id="fast-mid-2", priority=5),
        ]
    )
    claimed = await claim(storage, ["fast", "slow"], limit=4)
    assert [j.id for j in claimed] == ["slow-high", "slow-high-2", "fast-mid", "fast-mid-2"]
    assert [j.id for j in await claim(storage, ["slow", "fast"], limit=4)] == ["fast-low"]


async def test_the_walk_stops_after_its_bound_of_passed_over_jobs(storage: SQLiteStorage) -> None:
    """SCAN_BOUND jobs refused in one claim end it: a job behind them waits for a later claim."""
    for queue in ("q", "r"):
        await storage.queue_limits_set(queue, QueueLimits(key_concurrency=1))
    # q: one job taken, then SCAN_BOUND refused for their key: the job behind them is not reached.
    await storage.job_insert_many(
        [
            *(job("q", concurrency_key="busy") for _ in range(SCAN_BOUND + 1)),
            job("q", concurrency_key="other"),
        ]
    )
    assert [j.concurrency_key for j in await claim(storage, ["q"])] == ["busy"]
    assert await claim(storage, ["q"]) == []  # the "other" job is never offered
    # r: one refused job fewer, and the job behind them is reached.
    await storage.job_insert_many(
        [*(job("r", concurrency_key="busy") for _ in range(SCAN_BOUND)), job("r", concurrency_key="other")]
    )
    assert [j.concurrency_key for j in await claim(storage, ["r"])] == ["busy", "other"]


async def test_buckets_are_written_back_once_per_claim(storage: SQLiteStorage, db_path: Path) -> None:
    await storage.queue_limits_set("q", QueueLimits(rate=RateLimit(1.0, 3), key_rate=RateLimit(1.0, 1)))
    await storage.job_insert_many([job("q", rate_key=f"k{n % 2}") for n in range(6)])
    assert len(await claim(storage, ["q"])) == 2  # one per key
    conn = sqlite3.connect(db_path)
    try:
        rows = sorted(conn.execute("SELECT scope, key, tokens FROM rate_buckets WHERE queue = 'q'"))
    finally:
        conn.close()
    assert rows == [("key", "k0", 0.0), ("key", "k1", 0.0), ("queue", "", 1.0)]


# -- migration 0002 on a file that has jobs ----------------------------------------------------------


async def test_migration_0002_keeps_the_jobs_of_a_file_made_before_it(db_path: Path) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute(Q["migrations_table"])
        name, script = MIGRATIONS[0]
        for statement in split_statements(script):
            conn.execute(statement)
        conn.execute(Q["migration_record"], {"name": name, "now": 0})
        conn.execute(
            "INSERT INTO jobs (id, queue, kind, state, priority, attempt, max_retries, backoff_kind,"
            " backoff_base, backoff_max, lease, run_at, created_at, updated_at, cancel_requested,"
            " idempotency_key, payload, tags, metadata, errors)"
            " VALUES ('old', 'default', 'shell', 'pending', 0, 0, 3, 'exponential', 1.0, 3600.0, 30.0,"
            " 0, 0, 0, 0, 'key', '{}', '[]', '{}', '[]')"
        )
    finally:
        conn.close()
    storage = SQLiteStorage(str(db_path), clock=ManualClock(T0))
    await storage.open()
    try:
        old = await storage.job_get("old")
        assert old is not None
        assert (old.held, old.ordering_key, old.unique_until, old.unique_while.value) == (
            False,
            None,
            None,
            "stored",
        )
        [result] = await storage.job_insert_many([job(idempotency_key="key")])
        assert (result.created, result.job.id) == (False, "old")  # its key holds, as before
        assert [j.id for j in await claim(storage, ["default"])] == ["old"]  # in the new claim index
    finally:
        await storage.close()


# -- wake-ups reach other processes ------------------------------------------------------------------

# A second process: opens the file and runs one storage call, given as Python source over `storage`.
RUN_ONE = """
import asyncio, sys
from relay.storage.params import FinishItem
from relay.storage.sqlite import SQLiteStorage
from relay.types import Outcome, QueueLimits

async def main() -> None:
    storage = SQLiteStorage(sys.argv[1])
    await storage.open()
    await eval(sys.argv[2])
    await storage.close()

asyncio.run(main())
"""


async def in_other_process(db_path: Path, call: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN_ONE, str(db_path), call, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), CHILD_TIMEOUT)
    assert process.returncode == 0, stderr.decode()


def finish_call(running: Job) -> str:
    item = f"FinishItem({running.id!r}, {running.lease_token!r}, Outcome.COMPLETED)"
    return f"storage.job_finish_many([{item}])"


async def test_a_slot_freed_in_another_process_wakes_a_waiter_here(
    storage: SQLiteStorage, db_path: Path
) -> None:
    await storage.queue_limits_set("capped", QueueLimits(concurrency=1))
    await storage.job_insert_many([job("capped"), job("capped")])
    [running] = await claim(storage, ["capped"])
    waiter = await listening(storage, ["capped"])
    await in_other_process(db_path, finish_call(running))
    assert await asyncio.wait_for(waiter, PROMPT) is True


async def test_a_held_job_released_in_another_process_wakes_a_waiter_here(
    storage: SQLiteStorage, db_path: Path
) -> None:
    await storage.job_insert_many([job("q", ordering_key="a"), job("q", ordering_key="a")])
    [running] = await claim(storage, ["q"])
    waiter = await listening(storage, ["q"])
    await in_other_process(db_path, finish_call(running))
    assert await asyncio.wait_for(waiter, PROMPT) is True


async def test_limits_set_in_another_process_wake_a_waiter_here(
    storage: SQLiteStorage, db_path: Path
) -> None:
    waiter = await listening(storage, ["q"])
    await in_other_process(db_path, "storage.queue_limits_set('q', QueueLimits(concurrency=5))")
    assert await asyncio.wait_for(waiter, PROMPT) is True
