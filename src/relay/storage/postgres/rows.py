"""Between Python values and PostgreSQL rows and parameters.

A ``relay.jobs`` row is read positionally, in the column order of ``schema.sql`` (the backend checks that
order when it opens a database, see :data:`JOB_COLUMNS`). psycopg already turns timestamptz into aware
datetimes and ``json`` into Python values (with orjson, see :func:`use_orjson`); this module only builds
the :class:`Job`. Batches go to PostgreSQL as one array per column ("columnar"), which the queries unnest.

PostgreSQL text cannot hold NUL characters: JSON values travel as JSON text, where orjson escapes them
(``\\u0000``, which the ``json`` type keeps), and log lines have them replaced by U+FFFD.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg.abc import AdaptContext
from psycopg.types.json import set_json_loads

from relay.storage.sql_rows import KINDS as _KINDS
from relay.storage.sql_rows import STATES as _STATES
from relay.storage.sql_rows import Row, dumps, dumps_or_null
from relay.storage.sql_rows import backoff as _backoff
from relay.storage.sql_rows import chain_json as _chain_json
from relay.types import (
    AttemptError,
    Job,
    LogLine,
    NewJob,
    WorkerInfo,
)

SEQ, ID, IDEMPOTENCY_KEY = 0, 1, 23


def use_orjson(context: AdaptContext) -> None:
    """Load ``json`` columns with orjson on this connection or cursor (several times faster)."""
    set_json_loads(orjson.loads, context)


def _utc(when: datetime) -> datetime:
    """The same instant in UTC (a caller's connection may use another TimeZone)."""
    return when if when.tzinfo is UTC else when.astimezone(UTC)


def _utc_or_none(when: datetime | None) -> datetime | None:
    return None if when is None else _utc(when)


def job_from_row(r: Row) -> Job:
    """A :class:`Job` from a row in :data:`JOB_COLUMNS` order (extra trailing columns are ignored)."""
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
        run_at=_utc(r[13]),
        created_at=_utc(r[14]),
        updated_at=_utc(r[15]),
        started_at=_utc_or_none(r[16]),
        finished_at=_utc_or_none(r[17]),
        lease_token=r[18],
        lease_expires_at=_utc_or_none(r[19]),
        worker_id=r[20],
        cancel_requested=r[21],
        progress=r[22],
        idempotency_key=r[23],
        parent_id=r[24],
        payload=r[25],
        on_success=None if r[26] is None else NewJob.from_json(r[26]),
        on_failure=None if r[27] is None else NewJob.from_json(r[27]),
        tags=tuple(r[28]) if r[28] else (),
        metadata=r[29],
        checkpoint=r[30],
        result=r[31],
        errors=tuple(AttemptError.from_json(e) for e in r[32]) if r[32] else (),
    )


def claim_order(r: Row) -> tuple[int, datetime, int]:
    """The sort key of claim order (priority DESC, run_at, seq): RETURNING promises no order."""
    return (-r[5], r[13], r[0])


def insert_columns(specs: Sequence[NewJob], ids: list[str]) -> dict[str, list[Any]]:
    """The ``job_insert`` parameters of ``specs`` (with their final ``ids``), one list per column.

    One comprehension per column: several times cheaper than a tuple per job spread over 19 lists
    (measured: 60 ms instead of 300 ms for 20,000 jobs). Numbers are coerced to the column's type,
    since a binary array needs one element type throughout (``delay=5`` among ``delay=0.5``)."""
    return {
        "id": ids,
        "queue": [s.queue for s in specs],
        "kind": [s.kind.value for s in specs],
        "priority": [int(s.priority) for s in specs],
        "run_at": [s.run_at for s in specs],
        "delay": [float(s.delay) for s in specs],
        "max_retries": [int(s.max_retries) for s in specs],
        "backoff_kind": [s.backoff.kind.value for s in specs],
        "backoff_base": [float(s.backoff.base) for s in specs],
        "backoff_max": [float(s.backoff.max) for s in specs],
        "timeout": [None if s.timeout is None else float(s.timeout) for s in specs],
        "lease": [float(s.lease) for s in specs],
        "idempotency_key": [s.idempotency_key for s in specs],
        "payload": [dumps(s.payload) for s in specs],
        "on_success": [_chain_json(s.on_success) for s in specs],
        "on_failure": [_chain_json(s.on_failure) for s in specs],
        "tags": [dumps(list(s.tags)) for s in specs],
        "metadata": [dumps(s.metadata) for s in specs],
        "checkpoint": [dumps_or_null(s.checkpoint) for s in specs],
    }


def inserted_job(spec: NewJob, cols: dict[str, list[Any]], i: int, row: Row) -> Job:
    """The job ``job_insert`` just stored from ``spec`` (column ``i`` of ``cols``), from the
    ``id, state, run_at, created_at`` it returned: the rest is what was sent, so it is not read back.
    JSON values are loaded from the text sent, so the job shares no object with the caller's ``spec``."""
    created_at = _utc(row[3])
    on_success, on_failure, checkpoint = cols["on_success"][i], cols["on_failure"][i], cols["checkpoint"][i]
    return Job(
        id=row[0],
        queue=spec.queue,
        kind=spec.kind,
        payload=orjson.loads(cols["payload"][i]),
        state=_STATES[row[1]],
        priority=spec.priority,
        attempt=0,
        max_retries=spec.max_retries,
        backoff=spec.backoff,
        timeout=spec.timeout,
        lease=spec.lease,
        run_at=_utc(row[2]),
        created_at=created_at,
        updated_at=created_at,
        idempotency_key=spec.idempotency_key,
        on_success=None if on_success is None else NewJob.from_json(orjson.loads(on_success)),
        on_failure=None if on_failure is None else NewJob.from_json(orjson.loads(on_failure)),
        tags=tuple(spec.tags),
        metadata=orjson.loads(cols["metadata"][i]),
        checkpoint=None if checkpoint is None else orjson.loads(checkpoint),
    )


def log_text(text: str) -> str:
    """A log line PostgreSQL can store: NUL characters become U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def log_line_from_row(r: Row) -> LogLine:
    """From ``job_id, seq, attempt, stream, text, at``."""
    return LogLine(job_id=r[0], seq=r[1], attempt=r[2], stream=r[3], text=r[4], at=_utc(r[5]))


def worker_params(info: WorkerInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "host": info.host,
        "pid": info.pid,
        "queues": list(info.queues),
        "concurrency": info.concurrency,
        "started_at": info.started_at,
        "last_heartbeat_at": info.last_heartbeat_at,
        "running": list(info.running),
    }


def worker_from_row(r: Row) -> WorkerInfo:
    """From ``id, host, pid, queues, concurrency, started_at, last_heartbeat_at, running``."""
    return WorkerInfo(
        id=r[0],
        host=r[1],
        pid=r[2],
        queues=tuple(r[3]),
        concurrency=r[4],
        started_at=_utc(r[5]),
        last_heartbeat_at=_utc(r[6]),
        running=tuple(r[7]),
    )
