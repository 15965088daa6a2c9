"""LISTEN/NOTIFY wake-ups on PostgreSQL: a hint that survives losing its connection.

The notifications here are sent from a separate connection (as another process would), so that a
waiter can only be woken through PostgreSQL, never by the backend's in-process shortcut. The listening
connection is killed the way an operator or a failover would: ``pg_terminate_backend``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from relay.storage.params import ClaimParams
from relay.storage.postgres import PostgresStorage
from relay.types import JobKind, NewJob
from servers.postgres import postgres_server, postgres_url, terminate_backends

__all__ = ["postgres_server", "postgres_url"]

PROMPT = 5.0  # seconds within which a woken waiter returns (its own timeout is much longer)
RECONNECT = 10.0  # seconds within which the listener is back

POLL_INTERVAL = 0.01  # seconds between looks at a condition polled against a deadline


@pytest.fixture
async def storage(postgres_url: str) -> AsyncIterator[PostgresStorage]:
    store = PostgresStorage(postgres_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def notify_from_elsewhere(url: str, payload: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('relay_jobs', %s)", (payload,))


async def started(waiter: asyncio.Task[bool]) -> asyncio.Task[bool]:
    for _ in range(5):  # let the waiter reach its wait (no time passes)
        await asyncio.sleep(0)
    assert not waiter.done()
    return waiter


async def wait_for(condition: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL_INTERVAL)


async def test_a_notification_from_another_connection_wakes_the_waiter(
    storage: PostgresStorage, postgres_url: str
) -> None:
    mail = await started(asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=60)))
    other = await started(asyncio.create_task(storage.wait_for_jobs(["other"], timeout=60)))
    await asyncio.to_thread(notify_from_elsewhere, postgres_url, '["mail"]')
    assert await asyncio.wait_for(mail, PROMPT) is True
    for _ in range(5):  # one notification wakes all its waiters at once: "other" would be done by now
        await asyncio.sleep(0)
    assert not other.done()
    other.cancel()


async def test_an_insert_by_another_process_wakes_the_waiter(
    storage: PostgresStorage, postgres_url: str
) -> None:
    producer = PostgresStorage(postgres_url)  # another instance: its own loop, pool and listener
    await producer.open()
    try:
        waiter = await started(asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=60)))
        await producer.job_insert_many([NewJob(kind=JobKind.SHELL, payload={}, queue="mail")])
        assert await asyncio.wait_for(waiter, PROMPT) is True
    finally:
        await producer.close()


async def test_listening_resumes_after_its_backend_is_terminated(
    storage: PostgresStorage, postgres_url: str
) -> None:
    assert storage.listen_connections == 1
    waiting = await started(asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=60)))

    assert await asyncio.to_thread(terminate_backends, postgres_url, "relay-listener") == 1
    await wait_for(lambda: storage.listen_connections == 2, "the listener to reconnect", RECONNECT)
    # Whatever was notified while it was deaf is lost: on reconnecting it wakes every waiter to poll.
    assert await asyncio.wait_for(waiting, PROMPT) is True

    # And notifications flow again.
    waiter = await started(asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=60)))
    await asyncio.to_thread(notify_from_elsewhere, postgres_url, '["mail"]')
    assert await asyncio.wait_for(waiter, PROMPT) is True


async def test_storage_keeps_working_while_the_listener_is_down(
    storage: PostgresStorage, postgres_url: str
) -> None:
    """Notifications are only a hint: claims and inserts do not depend on the LISTEN connection."""
    await asyncio.to_thread(terminate_backends, postgres_url, "relay-listener")
    [inserted] = await storage.job_insert_many([NewJob(kind=JobKind.SHELL, payload={}, queue="q")])
    [claimed] = await storage.job_claim(ClaimParams(["q"], "w", 10))
    assert claimed.id == inserted.job.id
    await wait_for(lambda: storage.listen_connections == 2, "the listener to reconnect", RECONNECT)


async def test_a_payload_it_does_not_understand_wakes_everyone(
    storage: PostgresStorage, postgres_url: str
) -> None:
    """'*' (sent when the queue list would not fit in a NOTIFY) and anything unreadable wake all."""
    for payload in ("*", "not json"):
        waiter = await started(asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=60)))
        await asyncio.to_thread(notify_from_elsewhere, postgres_url, payload)
        assert await asyncio.wait_for(waiter, PROMPT) is True
