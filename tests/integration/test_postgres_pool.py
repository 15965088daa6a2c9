"""The PostgreSQL backend's connections: bounded by ``pool_size``, shared by every thread and loop.

Relay calls one storage instance from several event loops at once (each worker's, the heartbeat
thread's, the sync producer's portal). The backend runs all of them on its own loop and pool, so the
connections it opens stay within ``pool_size`` however many callers there are; PostgreSQL's own view
(``pg_stat_activity``) is the judge.
"""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from relay.errors import ConfigurationError, StorageUnavailableError
from relay.storage.params import ClaimParams, FinishItem, LeaderParams
from relay.storage.postgres import PostgresStorage
from relay.storage.postgres.options import parse_options
from relay.types import JobKind, NewJob, Outcome
from servers.postgres import count_backends, postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

THREADS = 3  # caller threads, each with its own event loop
TASKS = 8  # concurrent tasks per loop
ROUNDS = 15  # insert + claim + finish rounds per task


async def churn(storage: PostgresStorage, name: str) -> int:
    """Insert, claim and finish jobs of one queue; returns how many were finished."""
    done = 0
    for _ in range(ROUNDS):
        await storage.job_insert_many([NewJob(kind=JobKind.SHELL, payload={}, queue=name) for _ in range(3)])
        jobs = await storage.job_claim(ClaimParams([name], name, 3))
        items = [FinishItem(j.id, j.lease_token or "", Outcome.COMPLETED) for j in jobs]
        done += sum(r.state is not None for r in await storage.job_finish_many(items))
    return done


def caller(storage: PostgresStorage, index: int, results: list[int]) -> None:
    async def main() -> int:
        counts = await asyncio.gather(*(churn(storage, f"q{index}-{t}") for t in range(TASKS)))
        return sum(counts)

    results[index] = asyncio.run(main())


def sample_connections(url: str, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        seen.append(count_backends(url, "relay"))
        stop.wait(0.005)


@pytest.mark.parametrize("pool_size", [1, 3])
async def test_connections_never_exceed_the_pool(postgres_url: str, pool_size: int) -> None:
    storage = PostgresStorage(f"{postgres_url}?pool_size={pool_size}")
    await storage.open()
    stop, seen = threading.Event(), [0]
    sampler = threading.Thread(target=sample_connections, args=(postgres_url, stop, seen))
    sampler.start()
    try:
        results = [0] * THREADS
        threads = [threading.Thread(target=caller, args=(storage, i, results)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            await asyncio.to_thread(t.join)
        stats = storage.pool_stats()
    finally:
        stop.set()
        sampler.join()
        await storage.close()
    assert results == [TASKS * ROUNDS * 3] * THREADS, "every job was claimed and finished once"
    assert 1 <= max(seen) <= pool_size, f"{max(seen)} pooled connections with pool_size={pool_size}"
    assert stats["pool_max"] == pool_size
    assert stats["pool_size"] <= pool_size
    assert stats["requests_waiting"] == 0


async def test_listener_and_leader_have_one_connection_each(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url, pool_size=2)
    await storage.open()
    try:
        await storage.leader_elect(LeaderParams("maintenance", "me", 10.0))
        counts = {name: count_backends(postgres_url, name) for name in ("relay-listener", "relay-leader")}
    finally:
        await storage.close()
    assert counts == {"relay-listener": 1, "relay-leader": 1}
    assert count_backends(postgres_url, "relay") == 0, "close() leaves no connection behind"


@pytest.mark.parametrize("bad", ["0", "-2", "many"])
def test_a_pool_size_below_one_is_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="pool_size"):
        PostgresStorage(f"postgresql://localhost/relay?pool_size={bad}")


def test_relay_parameters_are_not_passed_to_libpq() -> None:
    options = parse_options("postgresql://u@h/db?sslmode=disable&pool_size=4&pool_timeout=2.5", {})
    assert options.conninfo == "postgresql://u@h/db?sslmode=disable"
    assert (options.pool_size, options.pool_timeout) == (4, 2.5)
    assert parse_options("postgresql://u@h/db?pool_size=4", {"pool_size": 7}).pool_size == 7


async def test_close_fails_an_operation_in_flight_instead_of_hanging(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url)
    await storage.open()
    [inserted] = await storage.job_insert_many([NewJob(kind=JobKind.SHELL, payload={})])
    with psycopg.connect(postgres_url) as blocker:  # holds the job's row lock: the cancel below waits
        blocker.execute("SELECT 1 FROM relay.jobs WHERE id = %s FOR UPDATE", (inserted.job.id,))
        cancel = asyncio.create_task(storage.job_cancel(inserted.job.id))
        deadline = time.monotonic() + 10
        while count_waiting(postgres_url) == 0:
            assert time.monotonic() < deadline, "the cancel never started waiting"
            await asyncio.sleep(0.01)
        await storage.close()
        with pytest.raises(StorageUnavailableError):
            await asyncio.wait_for(cancel, 10)
        blocker.rollback()


def count_waiting(url: str) -> int:
    """Connections of this database waiting for a lock now."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0
