"""Relay's vocabulary: the job, its states, and the records that travel with it.

This module imports nothing else of Relay, so that every layer (storage, runtime, server, the HTTP
client) can share it. Everything here is plain data: frozen dataclasses and string enums whose values
are the names used everywhere (storage, API, CLI, dashboard, metrics).

A job's life (DESIGN.md section 2)::

    (new) ──enqueue──▶ pending ◀──run_at reached── scheduled / failed
                          │ claim (attempt += 1, new lease token)
                          ▼
                       running ──success──▶ completed
                          ├──error, attempts left──▶ failed (run_at = now + backoff)
                          ├──error, none left──────▶ dead
                          ├──lease expired─────────▶ pending / dead
                          ├──released at shutdown──▶ pending (attempt given back)
                          └──cancel (seen at heartbeat)──▶ cancelled
"""

from __future__ import annotations

import operator
import os
import secrets
import time
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Self

#: A JSON value: what payloads, results, checkpoints and metadata are made of. Never pickled.
JSON = Any

DEFAULT_QUEUE = "default"
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_MAX = 3600.0


class JobState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @classmethod
    def final(cls) -> frozenset[JobState]:
        """States a job never leaves on its own (only an operator's requeue moves dead/cancelled)."""
        return frozenset({cls.COMPLETED, cls.DEAD, cls.CANCELLED})

    @classmethod
    def waiting(cls) -> frozenset[JobState]:
        """States of a job that waits to be claimed (now or at its run_at)."""
        return frozenset({cls.PENDING, cls.SCHEDULED, cls.FAILED})

    @classmethod
    def requeueable(cls) -> frozenset[JobState]:
        return frozenset({cls.DEAD, cls.FAILED, cls.CANCELLED})


class JobKind(StrEnum):
    TASK = "task"  # a registered Python function
    SHELL = "shell"  # a command, run as a subprocess
    EXTERNAL = "external"  # an opaque payload for an HTTP runner; built-in workers never claim it


class BackoffKind(StrEnum):
    EXPONENTIAL = "exponential"  # with full jitter: the default
    LINEAR = "linear"
    FIXED = "fixed"


class UniqueWhile(StrEnum):
    """How long a job's ``idempotency_key`` keeps a second job with the same key out."""

    STORED = "stored"  # while the job is stored (until it is pruned or purged): the default
    ACTIVE = "active"  # while it is pending, scheduled, running or failed: free again once it ends


class OrderingDead(StrEnum):
    """What a dead job does to the later jobs of its ordering key (a queue setting)."""

    CONTINUE = "continue"  # the next job of the key runs; the dead one waits in the DLQ (the default)
    BLOCK = "block"  # the key stays held until the dead job is requeued (and ends) or purged


class CatchUp(StrEnum):
    """What a schedule does with ticks that came while no scheduler was running."""

    ONCE = "once"  # one job, for the latest missed tick (the default)
    SKIP = "skip"  # none: the next tick on time runs


class RunState(StrEnum):
    """A workflow run's state, derived from its steps' jobs (never stored on its own)."""

    RUNNING = "running"  # a step has not ended yet
    COMPLETED = "completed"  # every step completed (or failed with allow_failure)
    FAILED = "failed"  # a step failed (out of attempts, or cancelled) and the run went as far as it could
    CANCELLED = "cancelled"  # an operator cancelled the run


class FailurePolicy(StrEnum):
    """What a failed step does to the rest of its run."""

    STOP = "stop"  # every step still waiting is cancelled (the default)
    CONTINUE = "continue"  # only the steps that depend on it are cancelled; other branches go on


class Outcome(StrEnum):
    """What a worker reports at the end of an attempt."""

    COMPLETED = "completed"
    FAILED = "failed"  # retried while attempts remain, else dead
    CANCELLED = "cancelled"  # the job was asked to cancel and its worker stopped it
    RELEASED = "released"  # given back at shutdown: pending again, the attempt does not count


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    """A UUIDv7-style id: sortable by creation time, unique without coordination."""
    return new_job_ids(1)[0]


def new_job_ids(n: int) -> list[str]:
    """``n`` fresh UUIDv7 ids (48 bits of milliseconds, version 7, the RFC 9562 variant, 74 random bits),
    with one read of the system's randomness for them all: a bulk insert makes one per job, and one
    read each cost twice as much."""
    ms = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    head = f"{ms[:8]}-{ms[8:]}-7"
    rand = secrets.token_hex(10 * n)  # 20 random hex digits per id, 19 used
    return [
        f"{head}{rand[k : k + 3]}-{_VARIANT[rand[k + 3]]}{rand[k + 4 : k + 7]}-{rand[k + 7 : k + 19]}"
        for k in range(0, 20 * n, 20)
    ]


# The 17th hex digit of a UUID holds the variant bits 10xx: 8, 9, a or b, from any random hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_lease_token() -> str:
    return secrets.token_hex(16)


def worker_identity() -> str:
    """A worker id that names its host and process, and is unique across restarts."""
    host = os.uname().nodename
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before a retry. Computed by ``relay.jobs.backoff``; this is only the policy."""

    kind: BackoffKind = BackoffKind.EXPONENTIAL
    base: float = DEFAULT_BACKOFF_BASE  # seconds
    max: float = DEFAULT_BACKOFF_MAX  # seconds: no delay is ever longer


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated job, ready to insert. ``relay.jobs.document`` builds these from job documents.

    ``on_success`` / ``on_failure`` are themselves ``NewJob``s: storage inserts them in the same
    transaction as the outcome, with ``run_at`` = outcome time + ``delay``.
    """

    kind: JobKind
    payload: JSON
    queue: str = DEFAULT_QUEUE
    id: str | None = None  # client-chosen id; storage never invents a different one
    priority: int = 0  # higher first
    run_at: datetime | None = None  # absolute start time; wins over delay
    delay: float = 0.0  # seconds after insertion (used when run_at is None)
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None  # seconds an attempt may run
    lease: float = DEFAULT_LEASE_SECONDS  # heartbeat window
    idempotency_key: str | None = None
    on_success: NewJob | None = None
    on_failure: NewJob | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, JSON] = field(default_factory=dict)
    checkpoint: JSON = None  # initial state handed to the first attempt (runner protocol's ``state``)
    # Flow control (docs/flow-control.md); the keys only count in a queue whose limits use them.
    rate_key: str | None = None  # one token bucket per key when the queue has a key_rate
    concurrency_key: str | None = None  # at most key_concurrency running per key
    ordering_key: str | None = None  # jobs of one key (in one queue) run one at a time, in order
    unique_for: float | None = None  # seconds the idempotency key holds; None: no time limit
    unique_while: UniqueWhile = UniqueWhile.STORED
    # Set by storage for the jobs of a workflow run (relay.storage.base.Workflows), never by a document.
    workflow_run_id: str | None = None
    workflow_step: str | None = None

    def with_payload(self, payload: JSON) -> NewJob:
        """This job with another payload: what each enqueue of a task does to the task's template.

        ``dataclasses.replace`` costs three times as much (it looks every field up by name), and a
        bulk enqueue makes one of these per job."""
        values = list(_new_job_values(self))
        values[_PAYLOAD_INDEX] = payload
        return NewJob(*values)

    def with_id(self) -> NewJob:
        """This job with its id fixed (a fresh one when the client chose none)."""
        return self if self.id is not None else replace(self, id=new_job_id())

    def start_time(self, now: datetime) -> datetime:
        return self.run_at if self.run_at is not None else now + timedelta(seconds=self.delay)

    def to_json(self) -> dict[str, JSON]:
        """The canonical JSON form, used to store chained jobs until their outcome arrives."""
        out: dict[str, JSON] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, NewJob):
                value = value.to_json()
            elif isinstance(value, Backoff):
                value = {"kind": value.kind.value, "base": value.base, "max": value.max}
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, StrEnum):
                value = value.value
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, JSON]) -> Self:
        """Inverse of :meth:`to_json` (trusted input: it was validated when first enqueued)."""
        d = dict(data)
        d["kind"] = JobKind(d["kind"])
        b = d.get("backoff") or {}
        d["backoff"] = Backoff(
            BackoffKind(b.get("kind", BackoffKind.EXPONENTIAL)),
            b.get("base", DEFAULT_BACKOFF_BASE),
            b.get("max", DEFAULT_BACKOFF_MAX),
        )
        if d.get("run_at"):
            d["run_at"] = datetime.fromisoformat(d["run_at"])
        for chain in ("on_success", "on_failure"):
            if d.get(chain):
                d[chain] = NewJob.from_json(d[chain])
        d["tags"] = tuple(d.get("tags") or ())
        d["unique_while"] = UniqueWhile(d.get("unique_while") or UniqueWhile.STORED)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Every field of NewJob in declaration order (the order of its __init__ parameters).
_new_job_values = operator.attrgetter(*(f.name for f in fields(NewJob)))
_PAYLOAD_INDEX = [f.name for f in fields(NewJob)].index("payload")


@dataclass(frozen=True, slots=True)
class AttemptError:
    """Why one attempt failed: kept for every attempt, shown by the CLI, API and dashboard."""

    attempt: int
    type: str  # exception class name, "ExitCode", "Timeout", "LeaseExpired", ...
    message: str
    at: datetime
    traceback: str | None = None
    exit_code: int | None = None
    stderr_tail: str | None = None

    def to_json(self) -> dict[str, JSON]:
        return {
            "attempt": self.attempt,
            "type": self.type,
            "message": self.message,
            "at": self.at.isoformat(),
            "traceback": self.traceback,
            "exit_code": self.exit_code,
            "stderr_tail": self.stderr_tail,
        }

    @classmethod
    def from_json(cls, d: dict[str, JSON]) -> AttemptError:
        return cls(
            attempt=d["attempt"],
            type=d["type"],
            message=d["message"],
            at=datetime.fromisoformat(d["at"]),
            traceback=d.get("traceback"),
            exit_code=d.get("exit_code"),
            stderr_tail=d.get("stderr_tail"),
        )


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored: its document, its state, and the bookkeeping of its attempts."""

    id: str
    queue: str
    kind: JobKind
    payload: JSON
    state: JobState
    priority: int
    attempt: int  # 0 until first claimed; incremented at each claim
    max_retries: int
    backoff: Backoff
    timeout: float | None
    lease: float
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None
    on_success: NewJob | None = None
    on_failure: NewJob | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, JSON] = field(default_factory=dict)
    started_at: datetime | None = None  # start of the current (or last) attempt
    finished_at: datetime | None = None
    lease_token: str | None = None  # set while running; every worker write must present it
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    cancel_requested: bool = False
    progress: float | None = None
    checkpoint: JSON = None  # saved at heartbeat, handed back on the next attempt
    result: JSON = None
    errors: tuple[AttemptError, ...] = ()
    parent_id: str | None = None  # the job whose outcome enqueued this one (on_success / on_failure)
    rate_key: str | None = None
    concurrency_key: str | None = None
    ordering_key: str | None = None
    held: bool = False  # waiting behind an earlier job of its ordering key: not claimable yet
    unique_until: datetime | None = None  # when the idempotency key stops holding (None: never)
    unique_while: UniqueWhile = UniqueWhile.STORED
    workflow_run_id: str | None = None  # the run this job is a step of
    workflow_step: str | None = None  # the step's name in its run

    @property
    def attempts_left(self) -> bool:
        """Whether a failure of the current attempt is retried (DESIGN.md: ``attempt <= max_retries``)."""
        return self.attempt <= self.max_retries

    @property
    def is_final(self) -> bool:
        return self.state in JobState.final()


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line (or chunk) of a job's output, kept per attempt, in order."""

    job_id: str
    attempt: int
    seq: int  # increases in the order lines were appended to this job
    stream: str  # "stdout", "stderr" or "log"
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``rate`` tokens a second, holding at most ``burst``. Each claimed job takes one.

    Over any window of ``t`` seconds it lets at most ``burst + rate * t`` jobs start.
    """

    rate: float  # tokens per second, > 0
    burst: int  # the bucket's size, >= 1; a new (or idle) bucket is full


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's flow control, kept in storage and obeyed by every worker at its next claim.

    ``None`` is "no limit". The per-key limits apply to jobs that carry the key (``rate_key``,
    ``concurrency_key``); a job without one is bound by the queue-wide limits only.
    """

    rate: RateLimit | None = None  # the whole queue
    key_rate: RateLimit | None = None  # each rate_key its own bucket
    concurrency: int | None = None  # running at once in the queue, across the whole fleet
    key_concurrency: int | None = None  # running at once per concurrency_key
    ordering_dead: OrderingDead = OrderingDead.CONTINUE

    @property
    def limited(self) -> bool:
        """Whether a claim from this queue has anything to check beyond its jobs' order."""
        return (
            self.rate is not None
            or self.key_rate is not None
            or self.concurrency is not None
            or self.key_concurrency is not None
        )


NO_LIMITS = QueueLimits()


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    paused: bool
    counts: dict[JobState, int]
    oldest_pending_at: datetime | None = None
    limits: QueueLimits = NO_LIMITS
    tokens: float | None = None  # what the queue-wide bucket holds now; None without a rate


@dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic job: ``job`` is enqueued at every tick of ``spec`` (in ``timezone``).

    ``spec`` is a 5-field cron expression, an alias such as ``@hourly``, or ``every 30s``
    (:mod:`relay.jobs.cron` parses it; storage only keeps it). Exactly one job is enqueued per tick.
    """

    name: str
    spec: str
    timezone: str  # an IANA name, such as "Europe/Berlin"
    job: NewJob  # the template of each tick's job
    catch_up: CatchUp
    paused: bool
    next_run_at: datetime | None  # the next tick to enqueue; None when the spec has no more ticks
    last_run_at: datetime | None  # the tick of the last job enqueued
    last_job_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    started_at: datetime
    last_heartbeat_at: datetime
    running: tuple[str, ...] = ()  # ids of the jobs it runs now


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a workflow run to start: its job, and the steps it waits for."""

    name: str
    job: NewJob
    depends_on: tuple[str, ...] = ()
    allow_failure: bool = False  # a failure of this step counts as a success for the steps after it


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """A step of a stored run, as its job is now (``state`` None: its job was pruned or purged)."""

    name: str
    job_id: str
    depends_on: tuple[str, ...]
    allow_failure: bool
    state: JobState | None
    held: bool  # waiting for the steps it depends on
    attempt: int = 0
    result: JSON = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """A run of a workflow: its steps in definition order, its state derived from theirs."""

    id: str
    workflow: str  # the definition's name ("chain", "group", "chord" for the Python canvas)
    policy: FailurePolicy
    params: dict[str, JSON]
    cancelled: bool  # an operator cancelled it
    created_at: datetime
    steps: tuple[WorkflowStep, ...]

    @property
    def state(self) -> RunState:
        return run_state(self.steps, self.cancelled)

    @property
    def finished_at(self) -> datetime | None:
        if self.state is RunState.RUNNING:
            return None
        ends = [s.finished_at for s in self.steps if s.finished_at is not None]
        return max(ends) if ends else self.created_at

    def step(self, name: str) -> WorkflowStep:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


def step_succeeded(state: JobState | None, allow_failure: bool) -> bool:
    """Whether a step that ended in ``state`` lets the steps after it run."""
    if state is JobState.COMPLETED:
        return True
    return allow_failure and state in (JobState.DEAD, JobState.CANCELLED)


def run_state(steps: tuple[WorkflowStep, ...], cancelled: bool) -> RunState:
    """Running while a step has not ended; then failed if one failed without allow_failure (or was
    cancelled because of it), else completed. A cancelled run is cancelled."""
    if cancelled:
        return RunState.CANCELLED
    if any(s.state is not None and s.state not in JobState.final() for s in steps):
        return RunState.RUNNING
    # A step whose job is gone (pruned after the retention) had ended: it does not fail the run.
    if all(s.state is None or step_succeeded(s.state, s.allow_failure) for s in steps):
        return RunState.COMPLETED
    return RunState.FAILED
