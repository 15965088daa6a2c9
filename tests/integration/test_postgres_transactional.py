"""Transactional enqueue on PostgreSQL: jobs inserted with the caller's own connection, in its transaction.

Each test writes an application row (an ``orders`` table) and a job in one transaction, then commits
or rolls back, and looks from another connection (as a worker would) at what exists afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from relay.errors import DuplicateJobError
from relay.storage.params import ClaimParams
from relay.storage.postgres import PostgresStorage
from relay.types import JobKind, JobState, NewJob
from servers.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

PROMPT = 5.0  # seconds within which a woken waiter returns


def job(**fields: object) -> NewJob:
    return NewJob(kind=JobKind.SHELL, payload={"command": "echo"}, queue="orders", **fields)  # type: ignore[arg-type]


@pytest.fixture
def url(postgres_url: str) -> str:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id text PRIMARY KEY)")
    return postgres_url


@pytest.fixture
async def storage(url: str) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def seen_from_elsewhere(url: str) -> tuple[list[str], list[str]]:
    """The orders and the job ids another connection sees now."""
    with psycopg.connect(url, autocommit=True) as conn:
        orders = [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id")]
        jobs = [r[0] for r in conn.execute("SELECT id FROM relay.jobs ORDER BY seq")]
    return orders, jobs


async def test_sync_commit_makes_the_job_visible_with_the_row(storage: PostgresStorage, url: str) -> None:
    with psycopg.connect(url) as conn:  # not autocommit: psycopg opens a transaction
        conn.execute("INSERT INTO orders VALUES ('o-1')")
        [result] = storage.insert_with_connection(conn, [job(id="job-o-1")])
        assert result.created
        assert result.job.state is JobState.PENDING
        assert seen_from_elsewhere(url) == ([], []), "visible before the commit"
        assert await storage.job_get("job-o-1") is None
        conn.commit()
    assert seen_from_elsewhere(url) == (["o-1"], ["job-o-1"])
    stored = await storage.job_get("job-o-1")
    assert stored == result.job
    [claimed] = await storage.job_claim(ClaimParams(["orders"], "w", 10))
    assert claimed.id == "job-o-1"


async def test_sync_rollback_leaves_neither_the_row_nor_the_job(storage: PostgresStorage, url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO orders VALUES ('o-2')")
        storage.insert_with_connection(conn, [job(id="job-o-2"), job(idempotency_key="k-o-2")])
        conn.rollback()
    assert seen_from_elsewhere(url) == ([], [])
    assert await storage.queue_list() == []  # not even the queue became known
    # The idempotency key was not used up.
    [again] = await storage.job_insert_many([job(idempotency_key="k-o-2")])
    assert again.created


class RequestFailed(Exception):
    pass


def enqueue_then_fail(storage: PostgresStorage, conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO orders VALUES ('o-3')")
        storage.insert_with_connection(conn, [job(id="job-o-3")])
        raise RequestFailed("the request failed after the enqueue")


async def test_inside_a_transaction_block_and_on_an_exception(storage: PostgresStorage, url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(RequestFailed):
            enqueue_then_fail(storage, conn)
        assert seen_from_elsewhere(url) == ([], [])
        with conn.transaction():
            conn.execute("INSERT INTO orders VALUES ('o-4')")
            storage.insert_with_connection(conn, [job(id="job-o-4")])
    assert seen_from_elsewhere(url) == (["o-4"], ["job-o-4"])


async def test_async_commit_and_rollback(storage: PostgresStorage, url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url) as aconn:
        await aconn.execute("INSERT INTO orders VALUES ('o-5')")
        [kept] = await storage.insert_with_connection_async(aconn, [job(id="job-o-5")])
        await aconn.commit()
        await aconn.execute("INSERT INTO orders VALUES ('o-6')")
        await storage.insert_with_connection_async(aconn, [job(id="job-o-6")])
        await aconn.rollback()
    assert seen_from_elsewhere(url) == (["o-5"], ["job-o-5"])
    assert await storage.job_get("job-o-5") == kept.job


async def test_workers_are_woken_at_commit_not_before(storage: PostgresStorage, url: str) -> None:
    """PostgreSQL delivers notifications in commit order: once a probe notification committed after the
    insert has arrived, an early NOTIFY of the insert would have arrived too. No time window needed."""
    waiter = asyncio.create_task(storage.wait_for_jobs(["orders"], timeout=60))
    probe = asyncio.create_task(storage.wait_for_jobs(["probe"], timeout=60))
    await settle()
    with psycopg.connect(url) as conn:
        storage.insert_with_connection(conn, [job()])
        await asyncio.to_thread(notify_from_elsewhere, url, '["probe"]')
        assert await asyncio.wait_for(probe, PROMPT) is True
        await settle()
        assert not waiter.done(), "woken before the commit: the NOTIFY must wait for it"
        conn.commit()
    assert await asyncio.wait_for(waiter, PROMPT) is True


async def settle() -> None:
    for _ in range(5):  # let woken tasks run (no time passes)
        await asyncio.sleep(0)


def notify_from_elsewhere(url: str, payload: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('relay_jobs', %s)", (payload,))


async def test_a_taken_id_fails_the_enqueue_but_not_the_callers_transaction(
    storage: PostgresStorage, url: str
) -> None:
    await storage.job_insert_many([job(id="taken")])
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO orders VALUES ('o-7')")
        with pytest.raises(DuplicateJobError) as info:
            storage.insert_with_connection(conn, [job(id="fresh"), job(id="taken")])
        assert info.value.job_id == "taken"
        conn.execute("INSERT INTO orders VALUES ('o-8')")  # the transaction is still usable
        conn.commit()
    assert seen_from_elsewhere(url) == (["o-7", "o-8"], ["taken"])


async def test_an_existing_idempotency_key_returns_the_existing_job(
    storage: PostgresStorage, url: str
) -> None:
    [first] = await storage.job_insert_many([job(idempotency_key="once")])
    with psycopg.connect(url) as conn:
        [again] = storage.insert_with_connection(conn, [job(idempotency_key="once")])
        conn.commit()
    assert again.created is False
    assert again.job == first.job


async def test_autocommit_connection_without_a_transaction_commits_at_once(
    storage: PostgresStorage, url: str
) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        [result] = storage.insert_with_connection(conn, [job(id="at-once")])
        assert seen_from_elsewhere(url) == ([], ["at-once"])
    assert result.created


async def test_needs_no_open_storage(url: str) -> None:
    """Only the schema: a web process can enqueue with its own connections and no pool of Relay's."""
    storage = PostgresStorage(url)
    with psycopg.connect(url) as conn:
        [result] = storage.insert_with_connection(conn, [job(id="no-pool")])
        conn.commit()
    assert seen_from_elsewhere(url) == ([], ["no-pool"])
    assert result.job.id == "no-pool"
    assert storage.capabilities.transactional_enqueue is True


def test_task_enqueue_with_connection_commits_and_rolls_back_with_the_caller(url: str) -> None:
    from relay import Relay

    relay = Relay(url)
    try:

        @relay.task(name="orders.confirm")
        def confirm(order_id: str) -> None: ...

        @relay.task(name="orders.sync")
        def sync(order_id: str, connection: str = "primary") -> None: ...

        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO orders VALUES ('o-1')")
            kept = confirm.enqueue("o-1", connection=conn)  # type: ignore[call-arg]
            typed = confirm.using(conn).options(priority=3).enqueue("o-1")
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO orders VALUES ('o-2')")
            gone = confirm.using(conn).enqueue("o-2")
            conn.rollback()
        # A task with a parameter named `connection` keeps it: it is an argument, not a transaction.
        own = sync.enqueue("o-3", connection="replica")
        orders, jobs = seen_from_elsewhere(url)
        assert orders == ["o-1"]
        assert kept.id in jobs
        assert typed.id in jobs
        assert gone.id not in jobs
        assert relay.get_job(own.id).payload["kwargs"] == {"connection": "replica"}
    finally:
        relay.close()


def test_transactional_enqueue_is_refused_where_storage_cannot_do_it(tmp_path: object) -> None:
    from relay import Relay
    from relay.errors import ConfigurationError

    relay = Relay(f"sqlite:///{tmp_path}/relay.db")
    try:

        @relay.task(name="orders.confirm")
        def confirm(order_id: str) -> None: ...

        with pytest.raises(ConfigurationError, match="cannot enqueue in your transaction"):
            confirm.using(object()).enqueue("o-1")
    finally:
        relay.close()


async def test_ordering_keys_are_refused_in_a_repeatable_read_transaction(
    storage: PostgresStorage, url: str
) -> None:
    """Whether a job is held is read after a lock on its key: only READ COMMITTED reads it fresh."""
    from relay.errors import ConfigurationError

    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute("INSERT INTO orders VALUES ('o-rr')")
        with pytest.raises(ConfigurationError, match="READ COMMITTED"):
            storage.insert_with_connection(conn, [job(ordering_key="acct-7")])
        [plain] = storage.insert_with_connection(conn, [job(id="no-key")])  # no key: nothing to read fresh
        assert plain.created
        conn.commit()
    with psycopg.connect(url) as conn:  # READ COMMITTED, the default
        [keyed] = storage.insert_with_connection(conn, [job(id="keyed", ordering_key="acct-7")])
        assert keyed.created
        conn.commit()
    assert seen_from_elsewhere(url)[1] == ["no-key", "keyed"]


async def test_relays_connections_are_read_committed_whatever_the_database_default(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        conn.execute(
            f"ALTER DATABASE \"{database[0]}\" SET default_transaction_isolation = 'repeatable read'"
        )
    store = PostgresStorage(url)
    await store.open()
    try:

        async def isolation(conn: psycopg.AsyncConnection, now: object) -> str:
            row = await (await conn.execute("SHOW transaction_isolation")).fetchone()
            assert row is not None
            return str(row[0])

        assert await store._db.run(isolation) == "read committed"
    finally:
        await store.close()
