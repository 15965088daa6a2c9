"""The in-memory backend's data: job records, their indexes, and every operation the operator side uses.

Data layout (every structure is only touched while ``MemoryStorage``'s lock is held)::

    jobs       id -> JobRecord, in insertion order (dicts keep it), so reversed() is newest first
    by_key     idempotency_key -> JobRecord
    waiting    queue -> {id -> JobRecord} of pending / scheduled / failed jobs: what a claim scans
    running    id -> JobRecord of running jobs: what the reaper scans
    queues     name -> paused flag, for every queue that ever held a job or was paused / resumed
    limits     queue -> QueueLimits, for the queues that were given some
    buckets    (queue, rate_key or None) -> Bucket: token buckets drawn from and not yet full again
    ordered    (queue, ordering_key) -> {id -> JobRecord}: every stored job of that ordering key
    schedules  name -> Schedule
    logs       job id -> its LogLines in append order (seq 1, 2, ... per job)
    leaders    leadership name -> (holder, term expiry)
    workers    worker id -> WorkerInfo

``waiting``, ``running`` and ``ordered`` are indexes over ``jobs``: every state change goes through
:meth:`MemoryStore.set_state` and every removal through :meth:`MemoryStore.delete`, which keep them
right, and which also keep the ordering rule: per (queue, ordering_key), at most one blocking job is not
held, and when none is left the held job inserted first is released (``relay.storage.base``).

JSON values (payload, metadata, checkpoint, result, and chained jobs in their ``NewJob.to_json`` form)
are kept as the ``bytes`` orjson writes. Encoding once on the way in and decoding on every way out is
the deep copy the store needs: a caller that mutates a dict it passed in, or one it got back, never
reaches stored state. It is also what SQLite stores, so both backends accept and return the same values
(a tuple inside a payload comes back as a list on both).

The operator side (listing, cancel / requeue / purge, pruning, queues, logs) is in :mod:`.operations`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from relay.errors import DuplicateJobError, InvalidJobError
from relay.storage import workflow_rules
from relay.storage.flow_control import Bucket, BucketKey
from relay.storage.workflow_rules import Effects, Node, StepNow
from relay.types import (
    JSON,
    NO_LIMITS,
    AttemptError,
    Backoff,
    FailurePolicy,
    Job,
    JobKind,
    JobState,
    LogLine,
    NewJob,
    OrderingDead,
    QueueLimits,
    Schedule,
    UniqueWhile,
    WorkerInfo,
    new_job_id,
)

_JSON_NULL = b"null"
_REQUEUEABLE = JobState.requeueable()
_WAITING = JobState.waiting()
_FINAL = JobState.final()

# -- job records ---------------------------------------------------------------------------------------


def encode_json(value: JSON, field_name: str) -> bytes:
    """``value`` as JSON bytes; a value JSON cannot carry is refused before anything is written."""
    if value is None:
        return _JSON_NULL
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise InvalidJobError(field_name, f"not a JSON value: {exc}") from exc


def decode_json(raw: bytes) -> JSON:
    return None if raw == _JSON_NULL else orjson.loads(raw)


def encode_chain(chain: NewJob | None, field_name: str) -> bytes | None:
    return None if chain is None else encode_json(chain.to_json(), field_name)


def decode_chain(raw: bytes | None) -> NewJob | None:
    return None if raw is None else NewJob.from_json(orjson.loads(raw))


@dataclass(slots=True, eq=False)
class JobRecord:
    """One stored job. Only the store mutates it, and only while holding the backend's lock."""

    seq: int  # insertion order: claim tie-break and list cursor
    id: str
    queue: str
    kind: JobKind
    state: JobState
    priority: int
    max_retries: int
    backoff: Backoff
    timeout: float | None
    lease: float
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    payload: bytes
    metadata: bytes
    checkpoint: bytes
    idempotency_key: str | None = None
    on_success: bytes | None = None
    on_failure: bytes | None = None
    tags: tuple[str, ...] = ()
    parent_id: str | None = None
    attempt: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    cancel_requested: bool = False
    progress: float | None = None
    result: bytes = _JSON_NULL
    errors: list[AttemptError] = field(default_factory=list)
    rate_key: str | None = None
    concurrency_key: str | None = None
    ordering_key: str | None = None
    held: bool = False
    dead_blocks: bool = False  # dead while its queue's ordering_dead was "block": it holds its key
    unique_until: datetime | None = None
    unique_while: UniqueWhile = UniqueWhile.STORED
    workflow_run_id: str | None = None
    workflow_step: str | None = None

    def claim_order(self) -> tuple[int, datetime, int]:
        """Sort key of the claim: priority DESC, run_at ASC, insertion order ASC."""
        return (-self.priority, self.run_at, self.seq)

    def clear_lease(self) -> None:
        self.lease_token = None
        self.lease_expires_at = None

    def to_job(self) -> Job:
        """A frozen snapshot with fresh copies of every JSON value."""
        return Job(
            id=self.id,
            queue=self.queue,
            kind=self.kind,
            payload=decode_json(self.payload),
            state=self.state,
            priority=self.priority,
            attempt=self.attempt,
            max_retries=self.max_retries,
            backoff=self.backoff,
            timeout=self.timeout,
            lease=self.lease,
            run_at=self.run_at,
            created_at=self.created_at,
            updated_at=self.updated_at,
            idempotency_key=self.idempotency_key,
            on_success=decode_chain(self.on_success),
            on_failure=decode_chain(self.on_failure),
            tags=self.tags,
            metadata=decode_json(self.metadata),
            started_at=self.started_at,
            finished_at=self.finished_at,
            lease_token=self.lease_token,
            lease_expires_at=self.lease_expires_at,
            worker_id=self.worker_id,
            cancel_requested=self.cancel_requested,
            progress=self.progress,
            checkpoint=decode_json(self.checkpoint),
            result=decode_json(self.result),
            errors=tuple(self.errors),
            parent_id=self.parent_id,
            rate_key=self.rate_key,
            concurrency_key=self.concurrency_key,
            ordering_key=self.ordering_key,
            held=self.held,
            unique_until=self.unique_until,
            unique_while=self.unique_while,
            workflow_run_id=self.workflow_run_id,
            workflow_step=self.workflow_step,
        )

    def holds_key(self, now: datetime) -> bool:
        """Whether this job's idempotency key still keeps a second job with that key out."""
        if self.unique_until is not None and self.unique_until <= now:
            return False
        return self.unique_while is UniqueWhile.STORED or self.state not in _FINAL


def new_record(spec: NewJob, job_id: str, now: datetime, parent_id: str | None = None) -> JobRecord:
    """The record of a job about to be inserted (its ``seq`` is set when it is stored).

    Encodes every JSON value first, so that a bad one raises before the batch writes anything.
    """
    run_at = spec.start_time(now)
    return JobRecord(
        seq=0,
        id=job_id,
        queue=spec.queue,
        kind=JobKind(spec.kind),
        state=JobState.SCHEDULED if run_at > now else JobState.PENDING,
        priority=spec.priority,
        max_retries=spec.max_retries,
        backoff=spec.backoff,
        timeout=spec.timeout,
        lease=spec.lease,
        run_at=run_at,
        created_at=now,
        updated_at=now,
        payload=encode_json(spec.payload, "payload"),
        metadata=encode_json(dict(spec.metadata), "metadata"),
        checkpoint=encode_json(spec.checkpoint, "checkpoint"),
        idempotency_key=spec.idempotency_key,
        on_success=encode_chain(spec.on_success, "on_success"),
        on_failure=encode_chain(spec.on_failure, "on_failure"),
        tags=tuple(spec.tags),
        parent_id=parent_id,
        rate_key=spec.rate_key,
        concurrency_key=spec.concurrency_key,
        ordering_key=spec.ordering_key,
        unique_until=None if spec.unique_for is None else now + timedelta(seconds=spec.unique_for),
        unique_while=spec.unique_while,
        workflow_run_id=spec.workflow_run_id,
        workflow_step=spec.workflow_step,
    )


@dataclass(slots=True, eq=False)
class RunRecord:
    """One workflow run: its graph (in definition order) and the ids of its steps' jobs."""

    seq: int
    id: str
    workflow: str
    policy: FailurePolicy
    params: bytes
    created_at: datetime
    nodes: tuple[Node, ...]
    job_ids: dict[str, str]  # step name -> job id
    cancelled: bool = False


# -- the store -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _PlannedBatch:
    """An insert batch checked in full before it writes anything: (record, created) per job."""

    results: list[tuple[JobRecord, bool]] = field(default_factory=list)
    new_ids: set[str] = field(default_factory=set)
    new_keys: dict[str, JobRecord] = field(default_factory=dict)
    released_keys: list[JobRecord] = field(default_factory=list)  # stored jobs whose key lapsed


class MemoryStore:
    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.by_key: dict[str, JobRecord] = {}
        self.waiting: dict[str, dict[str, JobRecord]] = {}
        self.running: dict[str, JobRecord] = {}
        self.queues: dict[str, bool] = {}
        self.logs: dict[str, list[LogLine]] = {}
        self.leaders: dict[str, tuple[str, datetime]] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.limits: dict[str, QueueLimits] = {}
        self.buckets: dict[BucketKey, Bucket] = {}
        self.ordered: dict[tuple[str, str], dict[str, JobRecord]] = {}
        self.schedules: dict[str, Schedule] = {}
        self.runs: dict[str, RunRecord] = {}
        self.last_run_seq = 0
        self._in_effects = False  # applying a step's effects: they do not cascade
        self.wakeups: set[str] = set()  # queues whose held jobs were released: the backend notifies them
        self._last_seq = 0

    # -- inserting ------------------------------------------------------------------------------------

    def insert_batch(self, specs: Sequence[NewJob], now: datetime) -> list[tuple[JobRecord, bool]]:
        """Insert ``specs`` all or nothing; (record, created) per spec, in order (semantics rule 1).

        An idempotency key already used (stored, or earlier in the batch) returns that job and is checked
        before the id: a job that is not inserted cannot collide with anything.
        """
        plan = _PlannedBatch()
        for spec in specs:
            existing = self._job_with_key(spec.idempotency_key, plan)
            if existing is not None and (existing.id in plan.new_ids or existing.holds_key(now)):
                plan.results.append((existing, False))
                continue
            job_id = spec.id if spec.id is not None else new_job_id()
            if job_id in self.jobs or job_id in plan.new_ids:
                raise DuplicateJobError(job_id)
            record = new_record(spec, job_id, now)
            plan.new_ids.add(job_id)
            if existing is not None:
                plan.released_keys.append(existing)
            if spec.idempotency_key is not None:
                plan.new_keys[spec.idempotency_key] = record
            plan.results.append((record, True))
        for old in plan.released_keys:
            self._release_key(old)
        for record, created in plan.results:
            if created:
                self._store(record)
        return plan.results

    def insert_chain(self, raw_chain: bytes | None, parent: JobRecord, now: datetime) -> JobRecord | None:
        """Insert a parent's ``on_success`` / ``on_failure`` job; returns it when it was created.

        A chain whose idempotency key or client-chosen id is already taken is treated as enqueued
        already: raising here would undo the parent's outcome and, for the reaper, fail every later
        reap too (a requeued dead job that dies again meets its own earlier ``on_failure``).
        """
        chain = decode_chain(raw_chain)
        if chain is None:
            return None
        existing = self._job_with_key(chain.idempotency_key)
        if existing is not None and existing.holds_key(now):
            return None
        job_id = chain.id if chain.id is not None else new_job_id()
        if job_id in self.jobs:
            return None
        if existing is not None:
            self._release_key(existing)
        record = new_record(chain, job_id, now, parent_id=parent.id)
        self._store(record)
        return record

    def _release_key(self, record: JobRecord) -> None:
        """A job whose idempotency key lapsed gives it up, to the job about to be stored."""
        assert record.idempotency_key is not None
        del self.by_key[record.idempotency_key]
        record.idempotency_key = None

    def _job_with_key(self, key: str | None, plan: _PlannedBatch | None = None) -> JobRecord | None:
        if key is None:
            return None
        if plan is not None and key in plan.new_keys:
            return plan.new_keys[key]  # taken earlier in this batch, from a stored job or afresh
        return self.by_key.get(key)

    def _store(self, record: JobRecord) -> None:
        self._last_seq += 1
        record.seq = self._last_seq
        self.jobs[record.id] = record
        if record.idempotency_key is not None:
            self.by_key[record.idempotency_key] = record
        self.queues.setdefault(record.queue, False)
        if record.ordering_key is not None:
            group = self.ordered.setdefault((record.queue, record.ordering_key), {})
            record.held = self._has_unheld_blocking(group, record)
            group[record.id] = record
        self._index(record)

    # -- state changes and removal --------------------------------------------------------------------

    def set_state(self, record: JobRecord, state: JobState, now: datetime) -> None:
        """Move ``record`` to ``state`` (keeping the indexes and the ordering rule right) and stamp
        ``updated_at``."""
        was_blocking = self._blocking(record)
        old_state = record.state
        self._unindex(record)
        record.state = state
        record.updated_at = now
        # Decided once, when it dies: a later change of the setting applies to jobs that die after it.
        record.dead_blocks = state is JobState.DEAD and self._dead_blocks_in(record.queue)
        self._index(record)
        if record.workflow_run_id is not None:
            self._step_changed(record, old_state, now)
        if record.ordering_key is None or was_blocking == self._blocking(record):
            return
        group = self.ordered[(record.queue, record.ordering_key)]
        if was_blocking:  # it ended: it holds nothing, and its key may go on
            record.held = False
            self._release_next(group)
        else:  # requeued: behind the key's current job, if there is one
            record.held = self._has_unheld_blocking(group, record)

    def delete(self, record: JobRecord) -> None:
        """Remove a job with its logs; its id and idempotency key become free again, as in SQL."""
        self._unindex(record)
        del self.jobs[record.id]
        if record.idempotency_key is not None:
            self.by_key.pop(record.idempotency_key, None)
        self.logs.pop(record.id, None)
        if record.ordering_key is not None:
            group = self.ordered[(record.queue, record.ordering_key)]
            del group[record.id]
            if group:
                self._release_next(group)
            else:
                del self.ordered[(record.queue, record.ordering_key)]

    # -- workflow runs --------------------------------------------------------------------------------

    def _step_changed(self, record: JobRecord, old_state: JobState, now: datetime) -> None:
        """A step's job changed state: its effects on the run's other steps (workflow_rules), in this
        very operation. Effects change other steps through set_state too, but never cascade again."""
        run = self.runs.get(record.workflow_run_id or "")
        if run is None or self._in_effects:
            return
        ended = old_state not in _FINAL and record.state in _FINAL
        back = old_state in _FINAL and record.state not in _FINAL
        if not ended and not back:
            return
        self._in_effects = True
        try:
            if ended and not run.cancelled:
                self._apply(
                    run,
                    workflow_rules.after_step_ended(
                        run.nodes, self.steps_now(run), record.workflow_step or "", run.policy
                    ),
                    now,
                )
            elif back:
                self._revive(run, record, old_state, now)
        finally:
            self._in_effects = False

    def steps_now(self, run: RunRecord) -> dict[str, StepNow]:
        now: dict[str, StepNow] = {}
        for node in run.nodes:
            job = self.jobs.get(run.job_ids[node.name])
            now[node.name] = StepNow(None, False) if job is None else StepNow(job.state, job.held)
        return now

    def _apply(self, run: RunRecord, effects: Effects, now: datetime) -> None:
        for name in effects.release:
            job = self.jobs[run.job_ids[name]]
            job.held = False
            self.wakeups.add(job.queue)
        for name in effects.cancel:
            job = self.jobs[run.job_ids[name]]
            job.held = False
            job.finished_at = now
            self.set_state(job, JobState.CANCELLED, now)

    def _revive(self, run: RunRecord, record: JobRecord, old_state: JobState, now: datetime) -> None:
        """A step's job was requeued: the steps its failure cancelled wait again (workflow_rules)."""
        before = self.steps_now(run)
        before[record.workflow_step or ""] = StepNow(old_state, False)
        plan = workflow_rules.to_retry(run.nodes, before, record.workflow_step or "")
        run.cancelled = False
        if plan is None:  # a dependency failed and stays failed: it waits for that one's retry
            record.held = True
            return
        for name, held in plan.items():
            job = self.jobs[run.job_ids[name]]
            if job is not record:
                job.finished_at = None
                job.run_at = now
                job.cancel_requested = False
                self.set_state(job, JobState.PENDING, now)
            job.held = held
            if not held:
                self.wakeups.add(job.queue)

    # -- ordering keys --------------------------------------------------------------------------------

    def _blocking(self, record: JobRecord) -> bool:
        """Whether a job keeps the later jobs of its ordering key waiting (relay.storage.base)."""
        if record.state is JobState.DEAD:
            return record.dead_blocks
        return record.state not in _FINAL

    def _dead_blocks_in(self, queue: str) -> bool:
        return self.limits.get(queue, NO_LIMITS).ordering_dead is OrderingDead.BLOCK

    def _has_unheld_blocking(self, group: dict[str, JobRecord], other_than: JobRecord) -> bool:
        return any(r is not other_than and not r.held and self._blocking(r) for r in group.values())

    def _release_next(self, group: dict[str, JobRecord]) -> None:
        """Release the held job inserted first, once no unheld job of the key blocks it."""
        held = [r for r in group.values() if r.held]
        if not held or any(not r.held and self._blocking(r) for r in group.values()):
            return
        first = min(held, key=lambda r: r.seq)
        first.held = False
        self.wakeups.add(first.queue)

    def take_wakeups(self) -> set[str]:
        woken, self.wakeups = self.wakeups, set()
        return woken

    def _index(self, record: JobRecord) -> None:
        if record.state in _WAITING:
            self.waiting.setdefault(record.queue, {})[record.id] = record
        elif record.state is JobState.RUNNING:
            self.running[record.id] = record

    def _unindex(self, record: JobRecord) -> None:
        if record.state in _WAITING:
            self.waiting[record.queue].pop(record.id, None)
        elif record.state is JobState.RUNNING:
            self.running.pop(record.id, None)

    # -- lookups --------------------------------------------------------------------------------------

    def fenced(self, job_id: str, lease_token: str) -> JobRecord | None:
        """The job if it is running under ``lease_token``; None for a stale or unknown token."""
        record = self.running.get(job_id)
        if record is None or record.lease_token != lease_token:
            return None
        return record

    def in_states(self, states: Sequence[JobState], queue: str | None = None) -> Iterator[JobRecord]:
        """Jobs in ``states`` (and ``queue``, if given), in insertion order."""
        wanted = frozenset(states)
        for record in self.jobs.values():
            if record.state in wanted and (queue is None or record.queue == queue):
                yield record
