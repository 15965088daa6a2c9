"""Transactional enqueue: insert jobs with the caller's own psycopg connection, in the caller's transaction.

The jobs become visible when the caller commits, and vanish if it rolls back, together with the rows it
wrote beside them: no job for an order that was never saved, no order saved without its job. The NOTIFY
that wakes workers is sent in that same transaction, so PostgreSQL delivers it only at commit.

The insert runs inside a SAVEPOINT: if it fails (a taken client id), only the savepoint is rolled back
and the caller's transaction stays usable. On a connection in autocommit mode with no transaction open
there is no caller transaction to join, so the jobs are inserted in a transaction of their own.

Flow control applies as everywhere (the same statements, :mod:`.inserts`): lapsed idempotency keys are
taken over inside the caller's transaction, and a job with an ordering key is held or released under its
key's lock, which stays taken until the caller commits or rolls back (other inserts and outcomes of that
key wait for it meanwhile: keep such transactions short).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg.pq import TransactionStatus

from relay.errors import ConfigurationError
from relay.storage.params import InsertResult
from relay.storage.postgres.inserts import (
    IdTaken,
    InsertBatch,
    duplicate_async,
    duplicate_sync,
    insert_async,
    insert_sync,
)
from relay.storage.postgres.sql import Q
from relay.types import NewJob


def _refuse_ordering_keys(isolation: str | None, jobs: Sequence[NewJob]) -> None:
    """Jobs with an ordering key need the caller's transaction at READ COMMITTED: whether a job is held
    is read after a lock on its key, and only READ COMMITTED reads with a snapshot taken after it (at
    REPEATABLE READ, a job another producer just committed for the key would not be seen, and two jobs
    of the key would run at once)."""
    if isolation not in (None, "read committed"):
        raise ConfigurationError(
            f"jobs with an ordering_key need a READ COMMITTED transaction, and this one is {isolation}: "
            "enqueue them in a READ COMMITTED transaction, or on Relay's own connections"
        )


def _needs_check(jobs: Sequence[NewJob]) -> bool:
    # Also in a transaction of our own on the caller's connection: it takes the connection's default.
    return any(job.ordering_key is not None for job in jobs)


def _own_transaction(conn: Connection[Any] | AsyncConnection[Any]) -> bool:
    """Whether no caller transaction is open or will open: autocommit, and idle."""
    return conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE


def insert_with_connection(
    conn: Connection[Any], jobs: Sequence[NewJob], now: datetime | None
) -> list[InsertResult]:
    if not jobs:
        return []
    if _needs_check(jobs):
        row = conn.execute(Q["transaction_isolation"]).fetchone()
        _refuse_ordering_keys(None if row is None else row[0], jobs)
    batch = InsertBatch.of(jobs)
    if _own_transaction(conn):
        try:
            with conn.transaction():
                return insert_sync(conn, now, batch, in_transaction=True)
        except IdTaken:
            raise duplicate_sync(conn, batch) from None
    # Not autocommit: psycopg opens the caller's transaction (if not open yet) before the SAVEPOINT.
    conn.execute(Q["savepoint"])
    try:
        results = insert_sync(conn, now, batch, in_transaction=True)
    except IdTaken:
        conn.execute(Q["savepoint_rollback"])
        raise duplicate_sync(conn, batch) from None
    except BaseException:
        conn.execute(Q["savepoint_rollback"])
        raise
    conn.execute(Q["savepoint_release"])
    return results


async def insert_with_connection_async(
    conn: AsyncConnection[Any], jobs: Sequence[NewJob], now: datetime | None
) -> list[InsertResult]:
    if not jobs:
        return []
    if _needs_check(jobs):
        row = await (await conn.execute(Q["transaction_isolation"])).fetchone()
        _refuse_ordering_keys(None if row is None else row[0], jobs)
    batch = InsertBatch.of(jobs)
    if _own_transaction(conn):
        try:
            async with conn.transaction():
                return await insert_async(conn, now, batch, in_transaction=True)
        except IdTaken:
            raise await duplicate_async(conn, batch) from None
    await conn.execute(Q["savepoint"])
    try:
        results = await insert_async(conn, now, batch, in_transaction=True)
    except IdTaken:
        await conn.execute(Q["savepoint_rollback"])
        raise await duplicate_async(conn, batch) from None
    except BaseException:
        await conn.execute(Q["savepoint_rollback"])
        raise
    await conn.execute(Q["savepoint_release"])
    return results
