"""The parameters and results of the storage seam's operations: one frozen dataclass per operation.

Params can grow new fields with defaults without breaking call sites (the river ``*Params`` habit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from relay.types import (
    JSON,
    AttemptError,
    CatchUp,
    FailurePolicy,
    Job,
    JobKind,
    JobState,
    NewJob,
    Outcome,
    Schedule,
    StepSpec,
    WorkflowRun,
)

#: Kinds a built-in worker runs. ``external`` jobs are only handed out through the runner protocol.
BUILTIN_KINDS: tuple[JobKind, ...] = (JobKind.TASK, JobKind.SHELL)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, so that the runtime and the tests branch on facts, not on types."""

    name: str
    listen_notify: bool = False  # cross-process wake-ups (Postgres NOTIFY, Redis pub/sub)
    transactional_enqueue: bool = False  # enqueue inside the caller's own transaction
    multi_process: bool = True  # several processes may open the same storage
    durable: bool = True  # survives a restart of the process that holds it
    time_precision: timedelta = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class InsertResult:
    job: Job
    created: bool  # False when an existing job was returned for the same idempotency key


@dataclass(frozen=True, slots=True)
class ClaimParams:
    """Claim up to ``limit`` due jobs from ``queues`` for ``worker_id``.

    Atomic: picks by priority (higher first), then run_at, then insertion order; marks them running;
    attempt += 1; a new lease token; lease_expires_at = now + the job's own ``lease``. Paused queues,
    jobs of other kinds, jobs whose run_at is in the future and held jobs (behind an earlier job of
    their ordering key) are never claimed.

    Flow control, in the same transaction (or script) as the claim, so that every worker of the fleet
    together keeps to it (:class:`relay.types.QueueLimits`, docs/flow-control.md):

    - ``rate``: each job claimed from the queue takes a token from the queue's bucket; none is
      claimed from it while the bucket holds less than one;
    - ``key_rate``: a job with a ``rate_key`` also takes a token from its key's bucket (created full on
      first use); a job whose key's bucket is empty is passed over, and the claim takes the next one;
    - ``concurrency``: running jobs of the queue (counted in storage, so a slot is back the moment a
      job leaves ``running`` by any way) plus those claimed stay at or below it;
    - ``key_concurrency``: the same per ``concurrency_key``; a job whose key is full is passed over.
    """

    queues: Sequence[str]
    worker_id: str
    limit: int
    kinds: Sequence[JobKind] = BUILTIN_KINDS


class ClaimedJobs(list[Job]):
    """What a claim took, in claim order, and when trying again may pay off.

    ``retry_after`` is set when a rate limit held back at least one due job: the seconds (by the
    storage's clock) until the soonest of those buckets holds a token. A worker sleeps that long
    (or until woken) instead of polling. None when no rate limit held a job back.
    """

    __slots__ = ("retry_after",)

    def __init__(self, jobs: Sequence[Job] = (), retry_after: float | None = None) -> None:
        super().__init__(jobs)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class HeartbeatItem:
    job_id: str
    lease_token: str
    progress: float | None = None  # None keeps the stored value
    checkpoint: JSON = None  # None keeps the stored value
    save_checkpoint: bool = False  # True stores ``checkpoint`` even when it is None


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    extended: frozenset[str] = frozenset()  # leases extended by the job's own lease
    lost: frozenset[str] = frozenset()  # token stale or job no longer running: stop working on it
    cancel_requested: frozenset[str] = frozenset()  # running, but an operator asked to cancel it


@dataclass(frozen=True, slots=True)
class FinishItem:
    """The end of one attempt, reported by the worker that holds ``lease_token``.

    - COMPLETED: ``result`` is stored; ``on_success`` is enqueued in the same transaction.
    - FAILED: while attempts remain (and ``retryable``), state ``failed`` with run_at = now +
      ``retry_delay``; otherwise ``dead``, and ``on_failure`` enqueued in the same transaction.
    - CANCELLED: state ``cancelled`` (no chain runs).
    - RELEASED: state ``pending``, the attempt is given back (attempt -= 1), no error recorded.
    """

    job_id: str
    lease_token: str
    outcome: Outcome
    result: JSON = None
    error: AttemptError | None = None
    retry_delay: float = 0.0
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class FinishResult:
    job_id: str
    state: JobState | None  # the state recorded; None when the lease was lost and nothing changed

    @property
    def lease_lost(self) -> bool:
        return self.state is None


@dataclass(frozen=True, slots=True)
class ReapResult:
    """Jobs whose lease expired: back to pending (attempts left), to dead (none left), or cancelled
    (an operator had asked to cancel them)."""

    requeued: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListParams:
    """Filters for listing jobs, newest first. ``cursor`` is the opaque ``next_cursor`` of a page."""

    states: Sequence[JobState] = ()
    queues: Sequence[str] = ()
    kinds: Sequence[JobKind] = ()
    text: str | None = None  # substring of the id, a tag, or the payload's JSON
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True, slots=True)
class RequeueParams:
    """Requeue one job by id, or every job in ``states`` (and ``queue``, if given)."""

    job_id: str | None = None
    states: Sequence[JobState] = (JobState.DEAD,)
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class PurgeParams:
    """Delete jobs in ``states`` (default: the dead-letter queue), optionally of one queue."""

    states: Sequence[JobState] = (JobState.DEAD,)
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class PruneParams:
    """Delete jobs that reached a final state before ``finished_before`` (retention)."""

    finished_before: datetime
    states: Sequence[JobState] = (JobState.COMPLETED, JobState.CANCELLED, JobState.DEAD)
    limit: int = 10_000


@dataclass(frozen=True, slots=True)
class LogAppend:
    job_id: str
    attempt: int
    stream: str  # "stdout", "stderr" or "log"
    text: str


@dataclass(frozen=True, slots=True)
class LogParams:
    job_id: str
    attempt: int | None = None  # None: every attempt
    after_seq: int = 0  # only lines with seq > after_seq (for --follow)
    limit: int = 10_000


@dataclass(frozen=True, slots=True)
class LeaderParams:
    """Become (or stay) leader of ``name`` for ``ttl`` seconds. Leadership lapses unless renewed."""

    name: str
    holder: str
    ttl: float


@dataclass(frozen=True, slots=True)
class ScheduleParams:
    """Create a schedule, or replace the definition of the one named ``name``.

    A replaced schedule keeps its paused flag, its last run and its ``created_at``; its
    ``next_run_at`` becomes this one only when it is new or its ``spec`` or ``timezone`` changed
    (so that redefining it at every worker start never skips a tick that is due).
    """

    name: str
    spec: str
    timezone: str
    job: NewJob
    catch_up: CatchUp
    next_run_at: datetime | None  # computed by relay.jobs.cron from now


@dataclass(frozen=True, slots=True)
class ScheduleDue:
    """Schedules whose next tick has come, by the storage's clock, which ``now`` is."""

    now: datetime
    schedules: list[Schedule]


@dataclass(frozen=True, slots=True)
class ScheduleFire:
    """Enqueue one tick of a schedule, at most once whatever the number of nodes that try.

    Applied only while the stored schedule's ``next_run_at`` is still ``expected_next`` (what the
    caller read from :meth:`schedule_due`): then ``job`` (None: a skipped tick, nothing enqueued) is
    inserted and ``next_run_at`` set, in one transaction. ``job`` carries the idempotency key of the
    (schedule, tick) pair, so that not even a schedule removed and added again enqueues a tick twice.
    """

    name: str
    expected_next: datetime
    tick: datetime
    next_run_at: datetime | None
    job: NewJob | None


@dataclass(frozen=True, slots=True)
class ScheduleFireResult:
    fired: bool  # False: another node fired this tick first (or the schedule changed or went)
    job: Job | None = None  # the tick's job when it was enqueued (or found already enqueued)


@dataclass(frozen=True, slots=True)
class WorkflowStart:
    """Start a run of a workflow: the run and one job per step, in one transaction.

    Steps with dependencies start held (their jobs exist, pending or scheduled, but no claim takes
    them); each is released in the transaction that records the last of its dependencies' success
    (``relay.storage.workflow_rules``). ``run_id`` given and taken: the existing run is returned and
    nothing is inserted (a scheduled trigger starts each tick's run once). The graph was checked by
    ``relay.workflows`` (names unique, dependencies known, no cycle, no ordering keys).
    """

    workflow: str
    steps: Sequence[StepSpec]
    params: dict[str, JSON] = field(default_factory=dict)
    policy: FailurePolicy = FailurePolicy.STOP
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowStarted:
    run: WorkflowRun
    created: bool  # False: a run with this id existed already


@dataclass(frozen=True, slots=True)
class WorkflowListParams:
    """Runs newest first, of one workflow or of all; ``cursor`` is a page's ``next_cursor``."""

    workflow: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowPage:
    runs: list[WorkflowRun]
    next_cursor: str | None
