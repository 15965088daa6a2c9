"""The storage seam: what every backend (memory, SQLite, PostgreSQL, Redis) implements, with the same meaning.

Internal: this seam may change in minor releases; it is not yet an API for third-party backends.

The seam is split by who uses it (the worker's hot path, maintenance, operators, wake-ups) and composed
into :class:`Storage`. It is domain-level (claim, heartbeat, finish...), never ``execute(sql)``, so Redis
and the in-memory backend implement it as naturally as SQL does. One conformance suite
(``tests/conformance``) holds every backend to it.

Rules every implementation keeps:

- Each operation is atomic. Times come from the backend's clock (the storage server's, or the clock
  injected at construction for tests), never from a worker's wall clock.
- Every write by a worker (heartbeat, finish) is fenced by the lease token it got at claim: a stale
  token changes nothing and is reported (``HeartbeatResult.lost``, ``FinishResult.state is None``).
- Chained jobs (``on_success`` / ``on_failure``) are inserted in the same transaction as the outcome.
- Flow control (rate and concurrency limits, ordering keys, unique windows) is decided here, in the
  claim's and the insert's own transaction: a limit that a worker checked on its side would not hold
  for a fleet. ``held`` jobs (behind an earlier job of their ordering key) keep one rule: per
  (queue, ordering_key), at most one *blocking* job is not held (see :meth:`JobWriter.job_insert_many`).
- Transient contention (SQLite's "database is locked", a serialisation failure) is retried inside the
  backend; only :class:`relay.errors.StorageUnavailableError` ever reaches the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

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
from relay.types import Job, LogLine, NewJob, QueueInfo, QueueLimits, Schedule, WorkerInfo, WorkflowRun


class JobWriter(Protocol):
    """The producer's and the worker's hot path."""

    async def job_insert_many(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        """Insert jobs in one transaction, in order; results in the same order.

        A job whose ``idempotency_key`` is held by a stored job returns that job (``created=False``),
        never a second one. A key is held while its job is stored, and also, if that job asked for it,
        only until ``created_at + unique_for`` and (``unique_while=active``) only while it is pending,
        scheduled, running or failed. A key no longer held passes to the new job: the old job keeps
        everything but its ``idempotency_key``, which becomes None.

        A client-chosen ``id`` that is taken raises ``DuplicateJobError`` and inserts nothing of the
        batch. A ``run_at`` in the future makes the job ``scheduled``.

        A job with an ``ordering_key`` is ``held`` when a *blocking* job of the same queue and key is
        not held (one inserted earlier, in this batch too). Blocking: pending, scheduled, running or
        failed, or dead after dying while its queue's ``ordering_dead`` was ``block`` (decided when it
        dies: a later change of the setting does not change it). Whenever a key is left without an
        unheld blocking job (a job completes, is cancelled, dies, is purged or pruned), its held job
        inserted first is released in the same transaction, and its queue notified. A held job keeps
        its state (pending or scheduled) until it is released: promotion passes it over, and it does
        not count in ``QueueInfo.oldest_pending_at``.
        """
        ...

    async def job_claim(self, p: ClaimParams) -> ClaimedJobs:
        """Claim up to ``p.limit`` due jobs; see :class:`ClaimParams`. Returns them as now running.

        A finish, release, cancel or reap that takes a job out of ``running`` in a queue with a
        concurrency limit notifies that queue: a slot is free."""
        ...

    async def job_heartbeat_many(self, items: Sequence[HeartbeatItem]) -> HeartbeatResult:
        """Extend the leases of running jobs and save their progress and checkpoints."""
        ...

    async def job_finish_many(self, items: Sequence[FinishItem]) -> list[FinishResult]:
        """Record the outcome of attempts, fenced by lease token; see :class:`FinishItem`."""
        ...

    async def job_log_append(self, lines: Sequence[LogAppend]) -> None:
        """Append output lines to jobs' logs, in order."""
        ...


class Maintenance(Protocol):
    """Duties the elected leader runs."""

    async def job_reap_expired(self) -> ReapResult:
        """Return running jobs whose lease expired to pending (attempts left) or dead (none left);
        jobs an operator asked to cancel become cancelled. Each records a ``LeaseExpired`` error."""
        ...

    async def job_promote_due(self) -> int:
        """Move scheduled and failed jobs whose run_at has come to pending; returns how many.

        Claims already consider due scheduled/failed jobs, so this only keeps listings honest."""
        ...

    async def job_prune(self, p: PruneParams) -> int:
        """Delete finished jobs (and their logs) older than the retention; returns how many."""
        ...

    async def rate_buckets_prune(self) -> int:
        """Delete the token buckets that are full again (a full bucket is the same as none) and those
        of limits that were removed; returns how many."""
        ...

    async def leader_elect(self, p: LeaderParams) -> bool:
        """Become or stay the leader; False while another holder's term has not lapsed."""
        ...

    async def leader_resign(self, p: LeaderParams) -> None:
        """Give up leadership if ``p.holder`` holds it."""
        ...


class Admin(Protocol):
    """What operators use: the API, the CLI and the dashboard."""

    async def job_get(self, job_id: str) -> Job | None: ...

    async def job_list(self, p: ListParams) -> JobPage:
        """Jobs newest first, filtered; the cursor stays stable while new jobs arrive."""
        ...

    async def job_cancel(self, job_id: str) -> Job:
        """Cancel a waiting job at once; a running one is flagged and cancelled by its worker.

        Raises ``JobNotFoundError``, or ``InvalidTransitionError`` for a job already final."""
        ...

    async def job_requeue(self, p: RequeueParams) -> list[Job]:
        """Move dead, failed or cancelled jobs back to pending, due now.

        With ``p.job_id``: raises ``JobNotFoundError`` or ``InvalidTransitionError``."""
        ...

    async def job_purge(self, p: PurgeParams) -> int:
        """Delete jobs in the given states (default: the dead-letter queue); returns how many."""
        ...

    async def job_logs(self, p: LogParams) -> list[LogLine]: ...

    async def queue_list(self) -> list[QueueInfo]:
        """Every known queue (one that ever held a job, or was paused) with its counts by state."""
        ...

    async def queue_pause(self, name: str) -> None: ...

    async def queue_resume(self, name: str) -> None: ...

    async def queue_limits_set(self, name: str, limits: QueueLimits) -> None:
        """Replace a queue's limits (registering the queue if it is new), and wake its workers.

        Buckets keep their tokens, cut to a smaller ``burst``. Validated by ``relay.jobs.limits``
        before it gets here. ``ordering_dead`` applies to jobs that die afterwards."""
        ...

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        """Register a worker process, or refresh its entry."""
        ...

    async def worker_list(self) -> list[WorkerInfo]: ...

    async def worker_remove(self, worker_id: str) -> None: ...


class Schedules(Protocol):
    """Periodic jobs. Storage keeps them and enqueues each tick once; the runtime parses the specs and
    computes the ticks (``relay.jobs.cron``), since neither SQL nor a Lua script can."""

    async def schedule_upsert(self, p: ScheduleParams) -> Schedule: ...

    async def schedule_get(self, name: str) -> Schedule | None: ...

    async def schedule_list(self) -> list[Schedule]:
        """Every schedule, by name."""
        ...

    async def schedule_remove(self, name: str) -> bool:
        """Delete a schedule (its jobs stay); False if there was none."""
        ...

    async def schedule_set_paused(self, name: str, paused: bool, next_run_at: datetime | None) -> Schedule:
        """Pause or resume a schedule. Resuming sets ``next_run_at`` (ticks missed while paused are
        not run). Raises ``ScheduleNotFoundError``."""
        ...

    async def schedule_due(self, limit: int = 100) -> ScheduleDue:
        """Schedules not paused whose ``next_run_at`` is at or before the storage's now."""
        ...

    async def schedule_fire(self, p: ScheduleFire) -> ScheduleFireResult:
        """Enqueue one tick, at most once; see :class:`ScheduleFire`."""
        ...


class WorkflowReader(Protocol):
    async def workflow_get(self, run_id: str) -> WorkflowRun | None: ...


class Workflows(WorkflowReader, Protocol):
    """Workflow runs: persisted DAGs of jobs. Every transition is a job's own (claim, finish, reap,
    cancel, requeue) plus its effects on the run's other steps, decided in the same transaction by the
    rules of ``relay.storage.workflow_rules``: a step's success releases the steps waiting only for it,
    its failure cancels the steps that can no longer run. A run's state is derived from its steps'."""

    async def workflow_start(self, p: WorkflowStart) -> WorkflowStarted: ...

    async def workflow_list(self, p: WorkflowListParams) -> WorkflowPage:
        """Runs newest first; the cursor stays stable while new runs start."""
        ...

    async def workflow_cancel(self, run_id: str) -> WorkflowRun:
        """Cancel a run: its waiting steps at once, its running steps asked to stop (as job_cancel).
        Raises ``WorkflowRunNotFoundError``."""
        ...

    async def workflow_retry_step(self, run_id: str, step: str) -> WorkflowRun:
        """Bring a failed step back (``workflow_rules.to_retry``): its job requeued, and the steps its
        failure cancelled waiting again. Raises ``WorkflowRunNotFoundError``, ``KeyError``-like
        ``InvalidTransitionError`` when the step cannot be retried."""
        ...


class Notifier(Protocol):
    """Wake-ups when jobs arrive. Only a hint: polling stays the source of truth."""

    async def notify(self, queues: Sequence[str]) -> None:
        """Tell waiting workers that ``queues`` have new jobs (inserts notify by themselves)."""
        ...

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> bool:
        """Wait until one of ``queues`` may have new jobs or ``timeout`` seconds pass; True if woken."""
        ...


class WorkerStorage(WorkflowReader, Protocol):
    """The part of the seam a worker process uses (``relay.runtime.worker``): a whole backend, or a link
    that carries these operations to a server (``relay.grpc.worker_link``, ``relay worker --connect``).

    A worker that takes part in maintenance or defines schedules needs a whole :class:`Storage`."""

    async def open(self) -> None: ...

    async def job_claim(self, p: ClaimParams) -> ClaimedJobs: ...

    async def job_heartbeat_many(self, items: Sequence[HeartbeatItem]) -> HeartbeatResult: ...

    async def job_finish_many(self, items: Sequence[FinishItem]) -> list[FinishResult]: ...

    async def job_log_append(self, lines: Sequence[LogAppend]) -> None: ...

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> bool: ...

    async def worker_heartbeat(self, info: WorkerInfo) -> None: ...

    async def worker_remove(self, worker_id: str) -> None: ...


@runtime_checkable
class TransactionalInsert(Protocol):
    """Backends with ``capabilities.transactional_enqueue`` (PostgreSQL): insert with the caller's own
    connection, inside the caller's open transaction (no commit)."""

    def insert_with_connection(self, conn: Any, jobs: Sequence[NewJob]) -> list[InsertResult]: ...

    async def insert_with_connection_async(self, conn: Any, jobs: Sequence[NewJob]) -> list[InsertResult]: ...


@runtime_checkable
class Storage(JobWriter, Maintenance, Admin, Schedules, Workflows, Notifier, Protocol):
    """A whole backend. Only the composition root (``relay.app``) picks a concrete one."""

    @property
    def capabilities(self) -> Capabilities: ...

    async def open(self) -> None:
        """Connect, and create or migrate the schema when it is missing. Idempotent."""
        ...

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names of those applied."""
        ...
