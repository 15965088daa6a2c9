"""The SQLite connection, its one thread, and transactions retried while the file is busy.

Concurrency model: a :class:`Database` owns one ``sqlite3`` connection and one worker thread (a
single-thread executor). The connection is created, used and closed on that thread only, so every
operation is serialised in this process and async callers on any event loop (or thread) simply await
``loop.run_in_executor``. Other processes on the same file are kept apart by SQLite: WAL lets readers
run beside the one writer, and every write transaction starts with ``BEGIN IMMEDIATE`` so it takes the
write lock up front (a deferred transaction that upgrades later fails with "database is locked"
whatever the busy timeout).

Busy handling, two layers: SQLite's own busy timeout waits for the lock inside one attempt; past it,
the whole transaction is rolled back and retried here with a short jittered backoff until
``retry_deadline``, then :class:`StorageUnavailableError` is raised. Any error rolls back, so nothing
half-applied remains, and "database is locked" never reaches a caller as anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from relay.clock import Clock
from relay.errors import StorageUnavailableError
from relay.storage.sql_rows import JOB_COLUMNS
from relay.storage.sqlite import migrate
from relay.storage.sqlite.sql import Q
from relay.types import new_lease_token

T = TypeVar("T")

#: A unit of work: runs on the connection's thread inside one transaction, at time ``now``.
Work = Callable[[sqlite3.Connection, datetime], T]

# Primary result codes (the low byte of an extended code).
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED: retry
# SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL: the file is unusable now.
_UNAVAILABLE_CODES = frozenset({8, 10, 13, 14, 15})
_MAX_BACKOFF = 0.05  # seconds between two retries, at most (before jitter)


def _code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF


def _icontains(haystack: str | None, needle: str | None) -> bool:
    """Case-insensitive substring test for job_list's text filter (SQLite's LIKE folds ASCII only)."""
    return haystack is not None and needle is not None and needle.casefold() in haystack.casefold()


class Database:
    """One SQLite file seen from this process: its connection, thread and retry policy."""

    def __init__(self, path: str, clock: Clock, *, busy_timeout: float, retry_deadline: float) -> None:
        self.path = path
        self._clock = clock
        # SQLite's own wait never outlasts the retry deadline by much.
        self._busy_timeout = min(busy_timeout, retry_deadline)
        self._retry_deadline = retry_deadline
        self._lock = threading.Lock()  # guards _executor across threads calling open/close
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched on the executor's thread only
        # Written on the executor's thread only; read anywhere (a contention metric, and what the
        # locking tests wait on to know that an operation is waiting for the lock).
        self.busy_retries = 0

    @property
    def is_open(self) -> bool:
        return self._executor is not None

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self, *, migrate_schema: bool = True) -> None:
        """Start the thread, connect, and apply pending migrations.

        Connecting and migrating are one job on the connection's thread, which runs jobs in order: an
        operation submitted meanwhile (by a concurrent ``open`` that returned at once) runs after them.
        """
        with self._lock:
            if self._executor is not None:
                return
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-sqlite")
            self._executor = executor
        try:
            await self._call(lambda: self._connect(migrate_schema))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        executor.shutdown(wait=True)  # the thread is idle by now: this returns at once

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        return await self._call(self._migrate)

    # -- running work ---------------------------------------------------------------------------

    async def write(self, work: Work[T]) -> T:
        """Run ``work`` in a ``BEGIN IMMEDIATE`` transaction, retried while the file is busy."""
        return await self._call(lambda: self._run(work, Q["begin_write"]))

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` in a read transaction: one consistent snapshot for all its queries."""
        return await self._call(lambda: self._run(work, Q["begin_read"]))

    async def _call(self, fn: Callable[[], T]) -> T:
        executor = self._executor
        if executor is None:
            raise StorageUnavailableError(f"the SQLite storage {self.path!r} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except RuntimeError as exc:  # closed by another task while this one was being submitted
            if self._executor is None:
                raise StorageUnavailableError(f"the SQLite storage {self.path!r} is closed") from exc
            raise

    # -- on the connection's thread -------------------------------------------------------------

    def _run(self, work: Work[T], begin: str) -> T:
        return self._retrying(lambda: self._transaction(work, begin))

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it is not refused by a busy file, or until the retry deadline."""
        deadline = time.monotonic() + self._retry_deadline
        backoff = 0.001
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if _code(exc) in _UNAVAILABLE_CODES:
                    raise StorageUnavailableError(
                        f"SQLite database {self.path!r} is unavailable: {exc}"
                    ) from exc
                if _code(exc) not in _BUSY_CODES:
                    raise
                self.busy_retries += 1
                if time.monotonic() >= deadline:
                    raise StorageUnavailableError(
                        f"SQLite database {self.path!r} stayed locked for {self._retry_deadline:g}s: {exc}"
                    ) from exc
            # Jitter keeps processes that collided from colliding again in step.
            time.sleep(min(backoff * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _transaction(self, work: Work[T], begin: str) -> T:
        conn = self._connection()
        try:
            conn.execute(begin)
            # Read after the lock is held: a wait for the lock must not age the time the work uses.
            result = work(conn, self._clock.now())
            conn.execute(Q["commit"])
            return result
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(Q["rollback"])
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageUnavailableError(f"the SQLite storage {self.path!r} is not connected")
        return self._conn

    def _connect(self, migrate_schema: bool) -> None:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, cached_statements=256
            )
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._conn = conn
        try:
            # Switching to WAL needs a lock another process opening the file may hold: retry it too.
            self._retrying(lambda: conn.execute(Q["pragma_wal"]).fetchall())
            conn.execute(Q["pragma_synchronous"])
            conn.create_function("relay_new_lease_token", 0, new_lease_token)
            conn.create_function("relay_icontains", 2, _icontains, deterministic=True)
            if migrate_schema:
                self._migrate()
        except BaseException:
            self._disconnect()
            raise

    def _migrate(self) -> list[str]:
        # A read first, so that opening an up-to-date file takes no write lock.
        pending = self._run(lambda conn, now: migrate.has_pending(conn), Q["begin_read"])
        names = self._run(migrate.apply_pending, Q["begin_write"]) if pending else []
        self._check_columns()
        return names

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _check_columns(self) -> None:
        """Rows are read by position: refuse a file whose ``jobs`` columns are not in that order."""
        columns = tuple(name for (name,) in self._connection().execute(Q["jobs_columns"]))
        if columns != JOB_COLUMNS:
            raise StorageUnavailableError(
                f"SQLite database {self.path!r} has an unexpected jobs table: columns {columns}"
            )
