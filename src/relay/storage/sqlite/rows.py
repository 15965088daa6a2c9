"""Between Python values and SQLite rows: times as integer microseconds, JSON as orjson text.

A ``jobs`` row is read positionally, in the column order of ``schema.sql`` (the backend checks that order
when it opens a file, see :data:`JOB_COLUMNS`). A new job is written by ``job_insert`` with only the
columns it sets (:func:`new_job`), and its :class:`Job` is built from the same values without decoding
them again; the conformance suite checks that the inserted job and the stored one compare equal.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from relay.storage.sql_rows import KINDS as _KINDS
from relay.storage.sql_rows import STATES as _STATES
from relay.storage.sql_rows import UNIQUE_WHILE as _UNIQUE_WHILE
from relay.storage.sql_rows import Row, dumps
from relay.storage.sql_rows import backoff as _backoff
from relay.storage.sql_rows import chain_json as _chain_json
from relay.types import (
    AttemptError,
    Job,
    JobState,
    LogLine,
    NewJob,
    UniqueWhile,
    WorkerInfo,
)

# Positions used outside the full mapping.
SEQ, PRIORITY, RUN_AT, IDEMPOTENCY_KEY = 0, 5, 13, 23

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PENDING, _SCHEDULED = JobState.PENDING, JobState.SCHEDULED

#: The query a row of :func:`new_job` is bound to, by the row's length.
INSERT_QUERIES = {15: "job_insert_plain", 21: "job_insert", 27: "job_insert_flow", 29: "job_insert_workflow"}

_STORED = UniqueWhile.STORED


def to_us(when: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def from_us_or_none(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _chain(text: str | None) -> NewJob | None:
    return None if text is None else NewJob.from_json(orjson.loads(text))


def _errors(text: str) -> tuple[AttemptError, ...]:
    if text == "[]":
        return ()
    return tuple(AttemptError.from_json(e) for e in orjson.loads(text))


def uses_flow_control(spec: NewJob) -> bool:
    """Whether ``spec`` sets a flow-control field, and so needs the long row of ``job_insert_flow``."""
    return not (
        spec.rate_key is None
        and spec.concurrency_key is None
        and spec.ordering_key is None
        and spec.unique_for is None
        and spec.unique_while is _STORED
    )


def new_job(
    spec: NewJob,
    job_id: str,
    now: datetime,
    now_us: int,
    stamp: datetime,
    parent_id: str | None,
    held: bool = False,
) -> tuple[Row, Job]:
    """A job about to be inserted: its parameters for one of :data:`INSERT_QUERIES`, and the
    :class:`Job` that row will read back as (what :func:`job_from_row` returns for it), built from the
    values at hand rather than decoded again. ``stamp`` is ``from_us(now_us)``, one instance shared by
    the batch (datetimes are immutable). JSON values still make one round trip through their text, so
    that the job returned holds what is stored (lists for tuples, a copy rather than the caller's dict).

    This runs once per job of a bulk insert, under the write lock: most jobs have no delay, tags,
    metadata, chains or checkpoint, and those cost one test each here, no call. A job whose nullable
    columns are all NULL binds the short row of ``job_insert_plain`` (see queries.sql for why); a job
    that sets a flow-control field (:func:`uses_flow_control`) the long row of ``job_insert_flow``, and
    a workflow's step (``workflow_run_id`` set) that row and its run and step, ``job_insert_workflow``;
    ``held`` is decided by the caller (:mod:`.ordering`, :mod:`.workflows`).
    """
    if spec.run_at is None and not spec.delay:
        run_us, run_at, state = now_us, stamp, _PENDING
    else:
        run_us = to_us(spec.start_time(now))
        run_at = from_us(run_us)
        state = _SCHEDULED if run_us > now_us else _PENDING
    kind, b = str(spec.kind), spec.backoff
    payload = orjson.dumps(spec.payload).decode()
    tags = orjson.dumps(spec.tags).decode() if spec.tags else "[]"
    metadata = orjson.dumps(spec.metadata).decode() if spec.metadata else "{}"
    on_success = None if spec.on_success is None else _chain_json(spec.on_success)
    on_failure = None if spec.on_failure is None else _chain_json(spec.on_failure)
    checkpoint = None if spec.checkpoint is None else orjson.dumps(spec.checkpoint).decode()
    row: Row
    step = spec.workflow_run_id is not None
    flow = uses_flow_control(spec) or step
    unique_until = None if spec.unique_for is None else to_us(now + timedelta(seconds=spec.unique_for))
    if flow:
        row = (
            job_id, spec.queue, kind, state.value, spec.priority, spec.max_retries, str(b.kind), b.base,
            b.max, spec.timeout, spec.lease, run_us, now_us, spec.idempotency_key, parent_id, payload,
            on_success, on_failure, tags, metadata, checkpoint, spec.rate_key, spec.concurrency_key,
            spec.ordering_key, int(held), unique_until, str(spec.unique_while),
        )  # fmt: skip
        if step:
            row = (*row, spec.workflow_run_id, spec.workflow_step)
    elif (
        spec.timeout is None
        and spec.idempotency_key is None
        and parent_id is None
        and on_success is None
        and on_failure is None
        and checkpoint is None
    ):
        row = (
            job_id, spec.queue, kind, state.value, spec.priority, spec.max_retries, str(b.kind), b.base,
            b.max, spec.lease, run_us, now_us, payload, tags, metadata,
        )  # fmt: skip
    else:
        row = (
            job_id, spec.queue, kind, state.value, spec.priority, spec.max_retries, str(b.kind), b.base,
            b.max, spec.timeout, spec.lease, run_us, now_us, spec.idempotency_key, parent_id, payload,
            on_success, on_failure, tags, metadata, checkpoint,
        )  # fmt: skip
    job = Job(
        id=job_id,
        queue=spec.queue,
        kind=_KINDS[kind],
        payload=orjson.loads(payload),
        state=state,
        priority=spec.priority,
        attempt=0,
        max_retries=spec.max_retries,
        backoff=b,  # frozen: shared, as job_from_row shares equal policies
        timeout=spec.timeout,
        lease=spec.lease,
        run_at=run_at,
        created_at=stamp,
        updated_at=stamp,
        idempotency_key=spec.idempotency_key,
        on_success=None if on_success is None else _chain(on_success),
        on_failure=None if on_failure is None else _chain(on_failure),
        tags=tuple(orjson.loads(tags)) if spec.tags else (),
        metadata=orjson.loads(metadata) if spec.metadata else {},
        checkpoint=None if checkpoint is None else orjson.loads(checkpoint),
        parent_id=parent_id,
    )
    if flow:
        job = replace(
            job,
            rate_key=spec.rate_key,
            concurrency_key=spec.concurrency_key,
            ordering_key=spec.ordering_key,
            held=held,
            unique_until=from_us_or_none(unique_until),
            unique_while=spec.unique_while,
            workflow_run_id=spec.workflow_run_id,
            workflow_step=spec.workflow_step,
        )
    return row, job


def job_from_row(r: Row) -> Job:
    """A :class:`Job` from a row in :data:`JOB_COLUMNS` order."""
    return Job(
        id=r[1],
        queue=r[2],
        kind=_KINDS[r[3]],
        state=_STATES[r[4]],
        priority=r[5],
        attempt=r[6],
        max_retries=r[7],
        backoff=_backoff(r[8], r[9], r[10]),
        timeout=r[11],
        lease=r[12],
        run_at=_EPOCH + timedelta(microseconds=r[13]),
        created_at=_EPOCH + timedelta(microseconds=r[14]),
        updated_at=_EPOCH + timedelta(microseconds=r[15]),
        started_at=from_us_or_none(r[16]),
        finished_at=from_us_or_none(r[17]),
        lease_token=r[18],
        lease_expires_at=from_us_or_none(r[19]),
        worker_id=r[20],
        cancel_requested=bool(r[21]),
        progress=r[22],
        idempotency_key=r[23],
        parent_id=r[24],
        payload=orjson.loads(r[25]),
        on_success=_chain(r[26]),
        on_failure=_chain(r[27]),
        tags=tuple(orjson.loads(r[28])) if r[28] != "[]" else (),
        metadata=orjson.loads(r[29]),
        checkpoint=None if r[30] is None else orjson.loads(r[30]),
        result=None if r[31] is None else orjson.loads(r[31]),
        errors=_errors(r[32]),
        rate_key=r[33],
        concurrency_key=r[34],
        ordering_key=r[35],
        held=bool(r[36]),
        unique_until=from_us_or_none(r[37]),
        unique_while=_UNIQUE_WHILE[r[38]],
        workflow_run_id=r[40],
        workflow_step=r[41],
    )


_FINAL_STATES = frozenset(s.value for s in JobState.final())


def key_holds(r: Row, now_us: int) -> bool:
    """Whether the stored job of row ``r`` still holds its idempotency key at ``now_us``: before its
    ``unique_until`` (if any) and, when ``unique_while`` is 'active', while it is not final."""
    unique_until, unique_while = r[37], r[38]
    if unique_until is not None and unique_until <= now_us:
        return False
    return unique_while == "stored" or r[4] not in _FINAL_STATES


def claim_order(r: Row) -> tuple[int, int, int]:
    """The sort key of claim order (priority DESC, run_at, seq): RETURNING promises no order."""
    return (-r[PRIORITY], r[RUN_AT], r[SEQ])


def log_line_from_row(r: Row) -> LogLine:
    """From ``job_id, seq, attempt, stream, text, at``."""
    return LogLine(job_id=r[0], seq=r[1], attempt=r[2], stream=r[3], text=r[4], at=from_us(r[5]))


def worker_params(info: WorkerInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "host": info.host,
        "pid": info.pid,
        "queues": dumps(info.queues),
        "concurrency": info.concurrency,
        "started_at": to_us(info.started_at),
        "last_heartbeat_at": to_us(info.last_heartbeat_at),
        "running": dumps(info.running),
    }


def worker_from_row(r: Row) -> WorkerInfo:
    """From ``id, host, pid, queues, concurrency, started_at, last_heartbeat_at, running``."""
    return WorkerInfo(
        id=r[0],
        host=r[1],
        pid=r[2],
        queues=tuple(orjson.loads(r[3])),
        concurrency=r[4],
        started_at=from_us(r[5]),
        last_heartbeat_at=from_us(r[6]),
        running=tuple(orjson.loads(r[7])),
    )
