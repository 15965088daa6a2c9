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
- Transient contention (SQLite's "database is locked", a serialisation failure) is retried inside the
  backend; only :class:`relay.errors.StorageUnavailableError` ever reaches the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from relay.storage.params import (
    Capabilities,
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
)
from relay.types import Job, LogLine, NewJob, QueueInfo, WorkerInfo


class JobWriter(Protocol):
    """The producer's and the worker's hot path."""

    async def job_insert_many(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        """Insert jobs in one transaction, in order; results in the same order.

        A job whose ``idempotency_key`` is already used returns the existing job (``created=False``),
        never a second one. A client-chosen ``id`` that is taken raises ``DuplicateJobError`` and
        inserts nothing of the batch. A ``run_at`` in the future makes the job ``scheduled``.
        """
        ...

    async def job_claim(self, p: ClaimParams) -> list[Job]:
        """Claim up to ``p.limit`` due jobs; see :class:`ClaimParams`. Returns them as now running."""
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

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        """Register a worker process, or refresh its entry."""
        ...

    async def worker_list(self) -> list[WorkerInfo]: ...

    async def worker_remove(self, worker_id: str) -> None: ...


class Notifier(Protocol):
    """Wake-ups when jobs arrive. Only a hint: polling stays the source of truth."""

    async def notify(self, queues: Sequence[str]) -> None:
        """Tell waiting workers that ``queues`` have new jobs (inserts notify by themselves)."""
        ...

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> bool:
        """Wait until one of ``queues`` may have new jobs or ``timeout`` seconds pass; True if woken."""
        ...


@runtime_checkable
class TransactionalInsert(Protocol):
    """Backends with ``capabilities.transactional_enqueue`` (PostgreSQL): insert with the caller's own
    connection, inside the caller's open transaction (no commit)."""

    def insert_with_connection(self, conn: Any, jobs: Sequence[NewJob]) -> list[InsertResult]: ...

    async def insert_with_connection_async(self, conn: Any, jobs: Sequence[NewJob]) -> list[InsertResult]: ...


@runtime_checkable
class Storage(JobWriter, Maintenance, Admin, Notifier, Protocol):
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
