"""Between Python values and SQLite rows: times as integer microseconds, JSON as orjson text.

A ``jobs`` row is read positionally, in the column order of ``schema.sql`` (the backend checks that order
when it opens a file, see :data:`JOB_COLUMNS`). The same tuple shape is written by ``job_insert``, so a new
job is mapped to a :class:`Job` by the very function that maps rows read back: inserted and stored jobs
compare equal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from relay.storage.sql_rows import KINDS as _KINDS
from relay.storage.sql_rows import STATES as _STATES
from relay.storage.sql_rows import Row, dumps, dumps_or_null
from relay.storage.sql_rows import backoff as _backoff
from relay.storage.sql_rows import chain_json as _chain_json
from relay.types import (
    AttemptError,
    Job,
    JobState,
    LogLine,
    NewJob,
    WorkerInfo,
    new_job_id,
)

# Positions used outside the full mapping.
SEQ, ID, QUEUE, PRIORITY, RUN_AT, IDEMPOTENCY_KEY = 0, 1, 2, 5, 13, 23

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


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


def new_job_row(spec: NewJob, now: datetime, now_us: int, parent_id: str | None) -> Row:
    """The row of a job about to be inserted (``seq`` None: SQLite assigns the next one)."""
    run_us = now_us if spec.run_at is None and not spec.delay else to_us(spec.start_time(now))
    state = JobState.SCHEDULED.value if run_us > now_us else JobState.PENDING.value
    b = spec.backoff
    return (
        None, spec.id or new_job_id(), spec.queue, str(spec.kind), state, spec.priority, 0,
        spec.max_retries, str(b.kind), b.base, b.max, spec.timeout, spec.lease, run_us, now_us, now_us,
        None, None, None, None, None, 0, None, spec.idempotency_key, parent_id,
        orjson.dumps(spec.payload).decode(), _chain_json(spec.on_success), _chain_json(spec.on_failure),
        orjson.dumps(spec.tags).decode(), orjson.dumps(spec.metadata).decode(),
        dumps_or_null(spec.checkpoint), None, "[]",
    )  # fmt: skip


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
    )


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
