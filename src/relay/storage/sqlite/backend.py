"""The SQLite backend: Relay's embedded default (``sqlite:///relay.db``), one file, several processes.

Every method hands a small function to the connection's own thread (:mod:`.connection`) and awaits it:
writes in a ``BEGIN IMMEDIATE`` transaction, reads in one snapshot, "database is locked" retried there.
The SQL is in ``queries.sql``; the functions in :mod:`.writes`, :mod:`.maintenance`, :mod:`.admin` and
:mod:`.schedules` only bind parameters and map rows; flow control is :mod:`.flow` (limits, buckets, the
claim of limited queues) and :mod:`.ordering` (held jobs); workflow runs are :mod:`.workflows` (a run's
graph, and the effects of a step's end on its run, applied where jobs end or come back). Wake-ups
(:mod:`.wakeup`): in-process through a :class:`LocalNotifier` shared by every instance on the same
file, and to other processes on the file through UNIX datagram sockets beside it; polling stays the
source of truth.

>>> storage = SQLiteStorage("relay.db")  # doctest: +SKIP
>>> await storage.open()  # creates the file and its schema  # doctest: +SKIP
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime

from relay.clock import Clock, SystemClock
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
from relay.storage.sqlite import admin, flow, maintenance, schedules, workflows, writes
from relay.storage.sqlite.connection import Database
from relay.storage.sqlite.wakeup import channel_for
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

CAPABILITIES = Capabilities(name="sqlite", multi_process=True, durable=True)


class SQLiteStorage:
    """The whole :class:`relay.storage.base.Storage` seam on one SQLite file.

    ``busy_timeout`` is how long SQLite itself waits for the write lock in one try; ``retry_deadline`` is
    how long a busy file is retried in all before :class:`StorageUnavailableError` (seconds both).
    """

    def __init__(
        self,
        path: str,
        clock: Clock | None = None,
        *,
        busy_timeout: float = 1.0,
        retry_deadline: float = 30.0,
    ) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._db = Database(path, self._clock, busy_timeout=busy_timeout, retry_deadline=retry_deadline)
        self._wakeups = channel_for(path)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    @property
    def busy_retries(self) -> int:
        """How many times a transaction found the file locked past the busy timeout and was retried."""
        return self._db.busy_retries

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        try:
            await self._db.close()
        finally:
            # After the database: a wait that starts meanwhile finds it closed and does not listen again.
            self._wakeups.unlisten(self)

    async def migrate(self) -> list[str]:
        if self._db.is_open:
            return await self._db.migrate()
        # Not opened (``relay migrate``): connect just for this, and leave it closed as it was.
        await self._db.open(migrate_schema=False)
        try:
            return await self._db.migrate()
        finally:
            await self._db.close()

    # -- producer and worker --------------------------------------------------------------------

    async def job_insert_many(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        if not jobs:
            return []
        results = await self._db.write(lambda conn, now: writes.insert_jobs(conn, now, jobs))
        self._wake(r.job.queue for r in results if r.created)
        return results

    async def job_claim(self, p: ClaimParams) -> ClaimedJobs:
        if p.limit <= 0 or not p.queues or not p.kinds:
            return ClaimedJobs()
        return await self._db.write(lambda conn, now: writes.claim_jobs(conn, now, p))

    async def job_heartbeat_many(self, items: Sequence[HeartbeatItem]) -> HeartbeatResult:
        if not items:
            return HeartbeatResult()
        return await self._db.write(lambda conn, now: writes.heartbeat_jobs(conn, now, items))

    async def job_finish_many(self, items: Sequence[FinishItem]) -> list[FinishResult]:
        if not items:
            return []
        results, woken = await self._db.write(lambda conn, now: writes.finish_jobs(conn, now, items))
        self._wake(woken)
        return results

    async def job_log_append(self, lines: Sequence[LogAppend]) -> None:
        if lines:
            await self._db.write(lambda conn, now: writes.append_logs(conn, now, lines))

    # -- maintenance ----------------------------------------------------------------------------

    async def job_reap_expired(self) -> ReapResult:
        result, woken = await self._db.write(maintenance.reap_expired)
        self._wake(woken)
        return result

    async def job_promote_due(self) -> int:
        queues = await self._db.write(maintenance.promote_due)
        self._wake(queues)
        return len(queues)

    async def job_prune(self, p: PruneParams) -> int:
        if p.limit <= 0 or not p.states:
            return 0
        pruned, woken = await self._db.write(lambda conn, now: maintenance.prune(conn, now, p))
        self._wake(woken)
        return pruned

    async def rate_buckets_prune(self) -> int:
        return await self._db.write(flow.prune_buckets)

    async def leader_elect(self, p: LeaderParams) -> bool:
        return await self._db.write(lambda conn, now: maintenance.leader_elect(conn, now, p))

    async def leader_resign(self, p: LeaderParams) -> None:
        await self._db.write(lambda conn, now: maintenance.leader_resign(conn, now, p))

    # -- operators ------------------------------------------------------------------------------

    async def job_get(self, job_id: str) -> Job | None:
        return await self._db.read(lambda conn, now: admin.get_job(conn, now, job_id))

    async def job_list(self, p: ListParams) -> JobPage:
        return await self._db.read(lambda conn, now: admin.list_jobs(conn, now, p))

    async def job_cancel(self, job_id: str) -> Job:
        job, woken = await self._db.write(lambda conn, now: admin.cancel_job(conn, now, job_id))
        self._wake(woken)
        return job

    async def job_requeue(self, p: RequeueParams) -> list[Job]:
        if p.job_id is None and not set(p.states) <= JobState.requeueable():
            wrong = sorted(str(s) for s in set(p.states) - JobState.requeueable())
            raise ValueError(f"only dead, failed or cancelled jobs can be requeued, not {', '.join(wrong)}")
        jobs, woken = await self._db.write(lambda conn, now: admin.requeue_jobs(conn, now, p))
        self._wake([*(job.queue for job in jobs), *woken])
        return jobs

    async def job_purge(self, p: PurgeParams) -> int:
        if JobState.RUNNING in p.states:
            raise ValueError("running jobs cannot be purged: cancel them first")
        if not p.states:
            return 0
        purged, woken = await self._db.write(lambda conn, now: admin.purge_jobs(conn, now, p))
        self._wake(woken)
        return purged

    async def job_logs(self, p: LogParams) -> list[LogLine]:
        if p.limit <= 0:  # SQLite reads a negative LIMIT as "no limit"
            return []
        return await self._db.read(lambda conn, now: admin.job_logs(conn, now, p))

    async def queue_list(self) -> list[QueueInfo]:
        return await self._db.read(admin.list_queues)

    async def queue_pause(self, name: str) -> None:
        await self._db.write(lambda conn, now: admin.set_paused(conn, now, name, True))

    async def queue_resume(self, name: str) -> None:
        await self._db.write(lambda conn, now: admin.set_paused(conn, now, name, False))
        self._wake([name])  # its waiting jobs may be claimed again

    async def queue_limits_set(self, name: str, limits: QueueLimits) -> None:
        await self._db.write(lambda conn, now: flow.set_limits(conn, now, name, limits))
        self._wake([name])  # looser limits may let waiting jobs through

    # -- schedules ------------------------------------------------------------------------------

    async def schedule_upsert(self, p: ScheduleParams) -> Schedule:
        return await self._db.write(lambda conn, now: schedules.upsert(conn, now, p))

    async def schedule_get(self, name: str) -> Schedule | None:
        return await self._db.read(lambda conn, now: schedules.get(conn, now, name))

    async def schedule_list(self) -> list[Schedule]:
        return await self._db.read(schedules.list_all)

    async def schedule_remove(self, name: str) -> bool:
        return await self._db.write(lambda conn, now: schedules.remove(conn, now, name))

    async def schedule_set_paused(self, name: str, paused: bool, next_run_at: datetime | None) -> Schedule:
        return await self._db.write(
            lambda conn, now: schedules.set_paused(conn, now, name, paused, next_run_at)
        )

    async def schedule_due(self, limit: int = 100) -> ScheduleDue:
        return await self._db.read(lambda conn, now: ScheduleDue(now, schedules.due(conn, now, limit)))

    async def schedule_fire(self, p: ScheduleFire) -> ScheduleFireResult:
        result, created = await self._db.write(lambda conn, now: schedules.fire(conn, now, p))
        if created and result.job is not None:
            self._wake([result.job.queue])
        return result

    # -- workflows ------------------------------------------------------------------------------

    async def workflow_start(self, p: WorkflowStart) -> WorkflowStarted:
        started, woken = await self._db.write(lambda conn, now: workflows.start(conn, now, p))
        self._wake(woken)
        return started

    async def workflow_get(self, run_id: str) -> WorkflowRun | None:
        return await self._db.read(lambda conn, now: workflows.get(conn, now, run_id))

    async def workflow_list(self, p: WorkflowListParams) -> WorkflowPage:
        return await self._db.read(lambda conn, now: workflows.list_runs(conn, now, p))

    async def workflow_cancel(self, run_id: str) -> WorkflowRun:
        return await self._db.write(lambda conn, now: workflows.cancel(conn, now, run_id))

    async def workflow_retry_step(self, run_id: str, step: str) -> WorkflowRun:
        def retry(conn: sqlite3.Connection, now: datetime) -> tuple[WorkflowRun, list[str]]:
            job_id = workflows.retry_target(conn, run_id, step)
            jobs, woken = admin.requeue_jobs(conn, now, RequeueParams(job_id=job_id))
            run = workflows.get(conn, now, run_id)
            assert run is not None  # read in this transaction
            return run, [*(job.queue for job in jobs), *woken]

        run, woken = await self._db.write(retry)
        self._wake(woken)
        return run

    # -- workers --------------------------------------------------------------------------------

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        await self._db.write(lambda conn, now: admin.upsert_worker(conn, now, info))

    async def worker_list(self) -> list[WorkerInfo]:
        return await self._db.read(admin.list_workers)

    async def worker_remove(self, worker_id: str) -> None:
        await self._db.write(lambda conn, now: admin.remove_worker(conn, now, worker_id))

    # -- wake-ups -------------------------------------------------------------------------------

    async def notify(self, queues: Sequence[str]) -> None:
        """Wake this process's waiters at once, and every other process's through its socket."""
        self._wake(queues)

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> bool:
        # The first wait binds this process's socket (kept until close): a process that only enqueues
        # never listens, nor does a closed storage (nothing would release its socket).
        if self._db.is_open:
            self._wakeups.listen(self)
        return await self._wakeups.notifier.wait_for_jobs(queues, timeout)

    @property
    def wake_socket(self) -> str | None:
        """This process's wake-up socket on the file, while some instance on it waits for jobs."""
        return self._wakeups.socket_path

    def _wake(self, queues: Iterable[str]) -> None:
        """After a commit that made jobs of ``queues`` claimable now."""
        wanted = list(dict.fromkeys(queues))
        if wanted:
            self._wakeups.notifier.notify_threadsafe(wanted)
            self._wakeups.send(wanted)
