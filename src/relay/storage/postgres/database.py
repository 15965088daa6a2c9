"""The connection pool on the backend's loop, and how an operation runs on it.

Concurrency model: :class:`Database` owns a :class:`LoopThread`; the psycopg ``AsyncConnectionPool`` is
opened on that loop and every operation (a coroutine function taking a connection and the injected time)
is hopped there by :meth:`Database.run`. The pool's connections are in autocommit mode: a one-statement
operation (claim, finish, heartbeat...) is its own transaction and costs one round trip; the few
multi-statement operations open an explicit transaction.

Errors: PostgreSQL's "try again" errors (deadlock, serialization failure) are retried here, since their
transaction was rolled back. A lost or refused connection becomes :class:`StorageUnavailableError`;
after one, the pool's idle connections are checked (after a server restart they are all dead) and an
operation marked ``idempotent`` is tried once more. Others (insert, claim, finish) are not retried blindly:
their first try may have committed before the connection died; the caller's own retry is safe, because
the outcome is fenced by lease token and a lost claim comes back through the reaper.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolClosed

from relay.clock import Clock
from relay.errors import StorageUnavailableError
from relay.storage.loop_thread import LoopThread
from relay.storage.postgres import migrate
from relay.storage.postgres.options import PostgresOptions
from relay.storage.postgres.rows import TABLE_COLUMNS, use_orjson
from relay.storage.postgres.sql import Q

T = TypeVar("T")
Conn = AsyncConnection[Any]

#: An operation: runs on the backend's loop with a pooled connection, at the injected time (None: the
#: database's own clock).
Work = Callable[[Conn, datetime | None], Awaitable[T]]

log = logging.getLogger("relay.storage.postgres")

_ROLLED_BACK = (errors.DeadlockDetected, errors.SerializationFailure)
_MAX_ROLLBACK_RETRIES = 5
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, PoolClosed)


def connection_kwargs(options: PostgresOptions, application_name: str) -> dict[str, Any]:
    """What every connection of this backend is opened with: autocommit, times in UTC, READ COMMITTED
    whatever the database's default (the claim of a limited queue and the release of an ordering key
    lock first and read after, which needs a fresh snapshot per statement), and a name that says what
    it is for in ``pg_stat_activity`` (unless the URL names it already)."""
    options_text = r"-c TimeZone=UTC -c default_transaction_isolation=read\ committed"
    kwargs: dict[str, Any] = {"autocommit": True, "options": options_text}
    if "application_name" not in options.conninfo:
        kwargs["application_name"] = application_name
    return kwargs


class Database:
    def __init__(self, options: PostgresOptions, clock: Clock | None) -> None:
        self.options = options
        self.clock = clock
        self.loop = LoopThread("relay-postgres", "the PostgreSQL storage")
        self._pool: AsyncConnectionPool[Conn] | None = None  # touched on the loop only

    def now(self) -> datetime | None:
        """The injected clock's time, or None: then SQL uses the database server's ``now()``."""
        return None if self.clock is None else self.clock.now()

    # -- lifecycle (on the loop) ----------------------------------------------------------------

    async def open_pool(self, *, migrate_schema: bool) -> None:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.options.conninfo,
            min_size=1,
            max_size=self.options.pool_size,
            kwargs=connection_kwargs(self.options, "relay"),
            configure=self._configure,
            timeout=self.options.pool_timeout,
            name="relay",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self.options.pool_timeout)
        except CONNECTION_ERRORS as exc:
            await pool.close()
            raise unavailable(exc, "cannot connect to PostgreSQL") from exc
        self._pool = pool
        if not migrate_schema:
            return
        try:
            await self.migrate_on_loop()
            await self._check_columns()
        except BaseException:
            await self.close_pool()
            raise

    async def _configure(self, conn: Conn) -> None:
        use_orjson(conn)
        conn.prepare_threshold = self.options.prepare_threshold

    async def close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def migrate_once(self) -> list[str]:
        """Start this (unopened) database's loop, migrate on a pool opened just for it, stop."""
        self.loop.start()
        try:
            return await self.loop.call(self._migrate_with_pool())
        finally:
            self.loop.stop()

    async def _migrate_with_pool(self) -> list[str]:
        await self.open_pool(migrate_schema=False)
        try:
            return await self.migrate_on_loop()
        finally:
            await self.close_pool()

    async def migrate_on_loop(self) -> list[str]:
        return await self.execute(lambda conn, now: migrate.apply_pending(conn, now), idempotent=True)

    async def _check_columns(self) -> None:
        """Rows are read by position: refuse a database whose jobs columns are not in that order."""

        async def columns(conn: Conn, now: datetime | None) -> tuple[str, ...]:
            cur = await conn.execute(Q["jobs_columns"])
            return tuple(name for (name,) in await cur.fetchall())

        found = await self.execute(columns, idempotent=True)
        if found != TABLE_COLUMNS:
            raise StorageUnavailableError(f"unexpected relay.jobs table in PostgreSQL: columns {found}")

    # -- running work ---------------------------------------------------------------------------

    async def run(self, work: Work[T], *, idempotent: bool = False) -> T:
        """Run ``work`` on the backend's loop with a pooled connection (from any caller loop)."""
        return await self.loop.call(self.execute(work, idempotent=idempotent))

    async def execute(self, work: Work[T], *, idempotent: bool = False) -> T:
        """On the loop: ``work`` with retries of rolled-back transactions and, if ``idempotent``, one
        retry after a lost connection."""
        rollbacks = 0
        reconnected = False
        while True:
            try:
                return await self._once(work)
            except _ROLLED_BACK:
                rollbacks += 1
                if rollbacks > _MAX_ROLLBACK_RETRIES:
                    raise
                await asyncio.sleep(random.uniform(0.001, 0.01) * rollbacks)  # jitter breaks the tie
            except CONNECTION_ERRORS as exc:
                await self._check_pool()
                if not idempotent or reconnected:
                    raise unavailable(exc, "PostgreSQL is unavailable") from exc
                reconnected = True

    async def _once(self, work: Work[T]) -> T:
        pool = self._pool
        if pool is None:
            raise StorageUnavailableError("the PostgreSQL storage is not open")
        async with pool.connection() as conn:
            return await work(conn, self.now())

    async def _check_pool(self) -> None:
        """Drop dead idle connections (after a server restart every one of them is)."""
        pool = self._pool
        if pool is None:
            return
        try:
            await pool.check()
        except Exception:  # the check is best effort: the next operation finds out anyway
            log.debug("checking the PostgreSQL pool failed", exc_info=True)

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's counters (``pool_size``, ``pool_available``, ``requests_waiting``...)."""
        return {} if self._pool is None else self._pool.get_stats()


def unavailable(exc: BaseException, what: str) -> StorageUnavailableError:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageUnavailableError(f"{what}: {message}")
