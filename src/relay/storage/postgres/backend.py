"""The PostgreSQL backend (``postgresql://…``): many workers on many machines against one database.

Every public method hops to the backend's own event loop (:mod:`.loop`), where the connection pool, the
LISTEN connection and the leader connection live, and runs one small function of :mod:`.writes`,
:mod:`.maintenance`, :mod:`.admin` or :mod:`.schedules` there with a pooled connection. The SQL is in
``queries.sql``; those functions only bind parameters and map rows. Wake-ups are LISTEN/NOTIFY
(:mod:`.notifier`), leadership is a table term backed by an advisory lock (:mod:`.leader`), and
:meth:`PostgresStorage.insert_with_connection` enqueues inside a caller's own transaction
(:mod:`.transactional`). Flow control (limits, ordering keys, unique windows) lives in the SQL: see
``job_claim`` / ``relay.claim_limited``, ``relay.release_next`` and ``job_insert``. Workflow runs are
:mod:`.workflows`: a run's row, locked by every transaction that moves its steps on.

Connections per process: at most ``pool_size`` pooled ones, plus one LISTEN connection, plus one leader
connection once the process takes part in leader elections.

>>> storage = PostgresStorage("postgresql://relay@db/app?pool_size=20")  # doctest: +SKIP
>>> await storage.open()  # connects, and creates or migrates the schema  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from psycopg import AsyncConnection, Connection

from relay.clock import Clock
from relay.errors import StorageUnavailableError
from relay.storage.local_notifier import LocalNotifier
from relay.storage.params import (
    Capabilities,
    ClaimedJobs,
    ClaimParams,
    FinishItem,
    FinishResult,
    HeartbeatItem,
    HeartbeatResult,
    InsertResult,
    JobPage,
    LeaderParams,
    ListParams,
    LogAppend,
    LogParams,
    PruneParams,
    PurgeParams,
    ReapResult,
    RequeueParams,
    ScheduleDue,
    ScheduleFire,
    ScheduleFireResult,
    ScheduleParams,
    WorkflowListParams,
    WorkflowPage,
    WorkflowStart,
    WorkflowStarted,
)
from relay.storage.postgres import admin, maintenance, schedules, transactional, workflows, writes
from relay.storage.postgres.database import CONNECTION_ERRORS, Database, connection_kwargs, unavailable
from relay.storage.postgres.inserts import InsertBatch
from relay.storage.postgres.leader import LeaderLocks
from relay.storage.postgres.notifier import Listener, notify_payload
from relay.storage.postgres.options import parse_options
from relay.storage.postgres.sql import Q
from relay.types import (
    Job,
    JobState,
    LogLine,
    NewJob,
    QueueInfo,
    QueueLimits,
    Schedule,
    WorkerInfo,
    WorkflowRun,
)

T = TypeVar("T")

CAPABILITIES = Capabilities(
    name="postgres", listen_notify=True, transactional_enqueue=True, multi_process=True, durable=True
)
_LISTEN_READY_TIMEOUT = 5.0  # seconds open() waits for LISTEN before relying on polling alone


class PostgresStorage:
    """The whole :class:`relay.storage.base.Storage` seam on one PostgreSQL database.

    ``options`` override the URL's query parameters: ``pool_size``, ``pool_timeout``,
    ``prepare_threshold`` (see :mod:`relay.storage.postgres.options`).
    """

    def __init__(self, url: str, clock: Clock | None = None, **options: Any) -> None:
        self._options = parse_options(url, options)
        self._db = Database(self._options, clock)
        self._waiters = LocalNotifier()
        self._lock = threading.Lock()  # guards _opening across threads calling open / close
        self._opening: concurrent.futures.Future[None] | None = None
        self._listener: Listener | None = None  # these three live on the backend's loop
        self._listen_task: asyncio.Task[None] | None = None
        self._leader: LeaderLocks | None = None
        self._limited: set[tuple[str, ...]] = set()  # queue lists seen limited (writes.claim_jobs; loop)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate the schema if needed, and start listening. Idempotent."""
        with self._lock:
            if self._opening is None:
                self._db.loop.start()
                self._opening = asyncio.run_coroutine_threadsafe(self._start(), self._db.loop.loop)
            opening = self._opening
        try:
            await asyncio.wrap_future(opening)
        except BaseException:
            with self._lock:
                failed = self._opening is opening
                if failed:
                    self._opening = None
            if failed:
                self._db.loop.stop()  # _start cleaned up after itself on the loop
            raise

    async def _start(self) -> None:
        await self._db.open_pool(migrate_schema=True)
        kwargs = connection_kwargs(self._options, "relay-listener")
        self._listener = Listener(self._options.conninfo, kwargs, self._waiters)
        self._listen_task = asyncio.create_task(self._listener.run(), name="relay-postgres-listen")
        self._leader = LeaderLocks(self._options.conninfo, connection_kwargs(self._options, "relay-leader"))
        with contextlib.suppress(TimeoutError):  # polling covers the time LISTEN takes to come up
            async with asyncio.timeout(_LISTEN_READY_TIMEOUT):
                await self._listener.listening.wait()

    async def close(self) -> None:
        with self._lock:
            opening, self._opening = self._opening, None
        if opening is None:
            return
        try:
            await self._db.loop.call(self._stop())
        finally:
            self._db.loop.stop()

    async def _stop(self) -> None:
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        leader, self._leader = self._leader, None
        if leader is not None:
            await leader.close()
        await self._db.close_pool()

    async def migrate(self) -> list[str]:
        """Apply pending migrations (``relay migrate``); without :meth:`open`, on connections of its own."""
        with self._lock:
            opening = self._opening
        if opening is not None:
            await asyncio.wrap_future(opening)
            return await self._db.loop.call(self._db.migrate_on_loop())
        return await Database(self._options, self._db.clock).migrate_once()

    # -- producer and worker --------------------------------------------------------------------

    async def job_insert_many(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        if not jobs:
            return []
        batch = InsertBatch.of(jobs)
        results = await self._db.run(lambda conn, now: writes.insert_jobs(conn, now, batch))
        self._waiters.notify_threadsafe(list({r.job.queue for r in results if r.created}))
        return results

    async def job_claim(self, p: ClaimParams) -> ClaimedJobs:
        if p.limit <= 0 or not p.queues or not p.kinds:
            return ClaimedJobs()
        return await self._db.run(lambda conn, now: writes.claim_jobs(conn, now, p, self._limited))

    async def job_heartbeat_many(self, items: Sequence[HeartbeatItem]) -> HeartbeatResult:
        if not items:
            return HeartbeatResult()
        return await self._db.run(lambda conn, now: writes.heartbeat_jobs(conn, now, items), idempotent=True)

    async def job_finish_many(self, items: Sequence[FinishItem]) -> list[FinishResult]:
        if not items:
            return []
        return await self._db.run(lambda conn, now: writes.finish_jobs(conn, now, items))

    async def job_log_append(self, lines: Sequence[LogAppend]) -> None:
        if lines:
            await self._db.run(lambda conn, now: writes.append_logs(conn, now, lines))

    # -- transactional enqueue ------------------------------------------------------------------

    def insert_with_connection(self, conn: Connection[Any], jobs: Sequence[NewJob]) -> list[InsertResult]:
        """Insert ``jobs`` in the open transaction of the caller's sync psycopg ``conn`` (no commit).

        They become visible (and wake workers) when the caller commits, and vanish if it rolls back.
        Needs no :meth:`open`: only the schema (``relay migrate``).

        >>> with psycopg.connect(url) as conn:  # doctest: +SKIP
        ...     conn.execute("INSERT INTO orders ...")
        ...     storage.insert_with_connection(conn, [job])
        ...     # commit at the end of the with block: the order and its job, or neither
        """
        return transactional.insert_with_connection(conn, jobs, self._db.now())

    async def insert_with_connection_async(
        self, conn: AsyncConnection[Any], jobs: Sequence[NewJob]
    ) -> list[InsertResult]:
        """:meth:`insert_with_connection` for an ``AsyncConnection``, on the caller's own loop."""
        return await transactional.insert_with_connection_async(conn, jobs, self._db.now())

    # -- maintenance ----------------------------------------------------------------------------

    async def job_reap_expired(self) -> ReapResult:
        return await self._db.run(maintenance.reap_expired, idempotent=True)

    async def job_promote_due(self) -> int:
        return await self._db.run(maintenance.promote_due, idempotent=True)

    async def job_prune(self, p: PruneParams) -> int:
        if p.limit <= 0 or not p.states:
            return 0
        return await self._db.run(lambda conn, now: maintenance.prune(conn, now, p), idempotent=True)

    async def rate_buckets_prune(self) -> int:
        return await self._db.run(maintenance.prune_buckets, idempotent=True)

    async def leader_elect(self, p: LeaderParams) -> bool:
        return await self._db.loop.call(self._leader_call(lambda leader: leader.elect(p, self._db.now())))

    async def leader_resign(self, p: LeaderParams) -> None:
        await self._db.loop.call(self._leader_call(lambda leader: leader.resign(p, self._db.now())))

    async def _leader_call(self, call: Callable[[LeaderLocks], Awaitable[T]]) -> T:
        """On the loop: ``call``, once more on a fresh leader connection if the first one was lost."""
        for attempt in (1, 2):
            leader = self._leader
            if leader is None:
                raise StorageUnavailableError("the PostgreSQL storage is not open")
            try:
                return await call(leader)
            except CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise unavailable(exc, "PostgreSQL is unavailable") from exc
        raise AssertionError("unreachable")

    # -- operators ------------------------------------------------------------------------------

    async def job_get(self, job_id: str) -> Job | None:
        return await self._db.run(lambda conn, now: admin.get_job(conn, now, job_id), idempotent=True)

    async def job_list(self, p: ListParams) -> JobPage:
        return await self._db.run(lambda conn, now: admin.list_jobs(conn, now, p), idempotent=True)

    async def job_cancel(self, job_id: str) -> Job:
        return await self._db.run(lambda conn, now: admin.cancel_job(conn, now, job_id))

    async def job_requeue(self, p: RequeueParams) -> list[Job]:
        if p.job_id is None and not set(p.states) <= JobState.requeueable():
            wrong = sorted(str(s) for s in set(p.states) - JobState.requeueable())
            raise ValueError(f"only dead, failed or cancelled jobs can be requeued, not {', '.join(wrong)}")
        jobs, woken = await self._db.run(lambda conn, now: admin.requeue_jobs(conn, now, p))
        self._waiters.notify_threadsafe([*(job.queue for job in jobs), *woken])
        return jobs

    async def job_purge(self, p: PurgeParams) -> int:
        if JobState.RUNNING in p.states:
            raise ValueError("running jobs cannot be purged: cancel them first")
        if not p.states:
            return 0
        return await self._db.run(lambda conn, now: admin.purge_jobs(conn, now, p))

    async def job_logs(self, p: LogParams) -> list[LogLine]:
        if p.limit <= 0:
            return []
        return await self._db.run(lambda conn, now: admin.job_logs(conn, now, p), idempotent=True)

    async def queue_list(self) -> list[QueueInfo]:
        return await self._db.run(admin.list_queues, idempotent=True)

    async def queue_pause(self, name: str) -> None:
        await self._db.run(lambda conn, now: admin.set_paused(conn, now, name, True), idempotent=True)

    async def queue_resume(self, name: str) -> None:
        await self._db.run(lambda conn, now: admin.set_paused(conn, now, name, False), idempotent=True)
        self._waiters.notify_threadsafe([name])  # its waiting jobs may be claimed again

    async def queue_limits_set(self, name: str, limits: QueueLimits) -> None:
        await self._db.run(lambda conn, now: admin.set_limits(conn, now, name, limits), idempotent=True)
        self._waiters.notify_threadsafe([name])  # looser limits may let waiting jobs through

    # -- schedules ------------------------------------------------------------------------------

    async def schedule_upsert(self, p: ScheduleParams) -> Schedule:
        return await self._db.run(lambda conn, now: schedules.upsert(conn, now, p), idempotent=True)

    async def schedule_get(self, name: str) -> Schedule | None:
        return await self._db.run(lambda conn, now: schedules.get(conn, now, name), idempotent=True)

    async def schedule_list(self) -> list[Schedule]:
        return await self._db.run(schedules.list_all, idempotent=True)

    async def schedule_remove(self, name: str) -> bool:
        return await self._db.run(lambda conn, now: schedules.remove(conn, now, name))

    async def schedule_set_paused(self, name: str, paused: bool, next_run_at: datetime | None) -> Schedule:
        return await self._db.run(
            lambda conn, now: schedules.set_paused(conn, now, name, paused, next_run_at), idempotent=True
        )

    async def schedule_due(self, limit: int = 100) -> ScheduleDue:
        return await self._db.run(lambda conn, now: schedules.due(conn, now, limit), idempotent=True)

    async def schedule_fire(self, p: ScheduleFire) -> ScheduleFireResult:
        result = await self._db.run(lambda conn, now: schedules.fire(conn, now, p))
        if result.job is not None:
            self._waiters.notify_threadsafe([result.job.queue])
        return result

    # -- workflows ------------------------------------------------------------------------------

    async def workflow_start(self, p: WorkflowStart) -> WorkflowStarted:
        started, woken = await self._db.run(lambda conn, now: workflows.start(conn, now, p))
        self._waiters.notify_threadsafe(woken)
        return started

    async def workflow_get(self, run_id: str) -> WorkflowRun | None:
        return await self._db.run(lambda conn, now: workflows.get(conn, now, run_id), idempotent=True)

    async def workflow_list(self, p: WorkflowListParams) -> WorkflowPage:
        return await self._db.run(lambda conn, now: workflows.list_runs(conn, now, p), idempotent=True)

    async def workflow_cancel(self, run_id: str) -> WorkflowRun:
        return await self._db.run(lambda conn, now: workflows.cancel(conn, now, run_id))

    async def workflow_retry_step(self, run_id: str, step: str) -> WorkflowRun:
        run, woken = await self._db.run(lambda conn, now: admin.retry_step(conn, now, run_id, step))
        self._waiters.notify_threadsafe(woken)
        return run

    # -- workers --------------------------------------------------------------------------------

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        await self._db.run(lambda conn, now: admin.upsert_worker(conn, now, info), idempotent=True)

    async def worker_list(self) -> list[WorkerInfo]:
        return await self._db.run(admin.list_workers, idempotent=True)

    async def worker_remove(self, worker_id: str) -> None:
        await self._db.run(lambda conn, now: admin.remove_worker(conn, now, worker_id), idempotent=True)

    # -- wake-ups -------------------------------------------------------------------------------

    async def notify(self, queues: Sequence[str]) -> None:
        """Wake this process's waiters at once, and every other process's through NOTIFY."""
        if not queues:
            return
        self._waiters.notify_threadsafe(queues)
        payload = notify_payload(queues)
        await self._db.run(lambda conn, now: _notify(conn, payload), idempotent=True)

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> bool:
        return await self._waiters.wait_for_jobs(queues, timeout)

    # -- introspection (tests, metrics) ---------------------------------------------------------

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's counters (``pool_max``, ``pool_size``, ``pool_available``, ...)."""
        return self._db.pool_stats()

    @property
    def listen_connections(self) -> int:
        """How many times the LISTEN connection was established (1 + reconnections)."""
        return 0 if self._listener is None else self._listener.connections


async def _notify(conn: AsyncConnection[Any], payload: str) -> None:
    await conn.execute(Q["notify"], {"payload": payload})
