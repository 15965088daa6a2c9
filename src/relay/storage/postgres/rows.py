"""Between Python values and PostgreSQL rows and parameters.

A ``relay.jobs`` row is read positionally, in the column order of ``schema.sql`` (the backend checks that
order when it opens a database, see :data:`TABLE_COLUMNS`). psycopg already turns timestamptz into aware
datetimes and ``json`` into Python values (with orjson, see :func:`use_orjson`); this module only builds
the :class:`Job`. Batches go to PostgreSQL as one JSON array per column ("columnar", :func:`json_array`),
which the queries unnest.

PostgreSQL text cannot hold NUL characters: JSON values travel as JSON text, where orjson escapes them
(``\\u0000``, which the ``json`` type keeps), and log lines have them replaced by U+FFFD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader

from relay.errors import InvalidJobError
from relay.storage.sql_rows import JOB_COLUMNS, Row
from relay.storage.sql_rows import KINDS as _KINDS
from relay.storage.sql_rows import STATES as _STATES
from relay.storage.sql_rows import UNIQUE_WHILE as _UNIQUE_WHILE
from relay.storage.sql_rows import backoff as _backoff
from relay.types import (
    JSON,
    AttemptError,
    Job,
    JobState,
    LogLine,
    NewJob,
    UniqueWhile,
    WorkerInfo,
)

SEQ, ID, IDEMPOTENCY_KEY = 0, 1, 23

#: relay.jobs as PostgreSQL has it: the columns both SQL backends share. A ``SELECT *`` row has them
#: all; queries that add columns of their own add them after these.
TABLE_COLUMNS = JOB_COLUMNS


def use_orjson(context: AdaptContext) -> None:
    """Load ``json`` columns with orjson on this connection or cursor (several times faster)."""
    context.adapters.register_loader("json", _OrjsonLoader)


class _OrjsonLoader(Loader):
    """``json`` values loaded by orjson, which psycopg calls directly: ``load`` is ``orjson.loads`` itself
    on each instance, not a method around it (psycopg's own JSON loader, even given orjson, goes through
    two Python calls per value: a claim of 200 jobs decodes a third faster without them)."""

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self.load = orjson.loads  # type: ignore[method-assign,assignment]  # takes a memoryview as is

    def load(self, data: Buffer) -> Any:  # what the instance attribute above stands for
        return orjson.loads(data)


def utc(when: datetime) -> datetime:
    """The same instant in UTC (a caller's connection may use another TimeZone)."""
    return when if when.tzinfo is UTC else when.astimezone(UTC)


def _utc_or_none(when: datetime | None) -> datetime | None:
    return None if when is None else utc(when)


def job_from_row(r: Row) -> Job:
    """A :class:`Job` from a row in :data:`TABLE_COLUMNS` order (``dead_blocks`` and extra trailing
    columns are ignored)."""
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
        run_at=utc(r[13]),
        created_at=utc(r[14]),
        updated_at=utc(r[15]),
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
        rate_key=r[33],
        concurrency_key=r[34],
        ordering_key=r[35],
        held=r[36],
        unique_until=_utc_or_none(r[37]),
        unique_while=_UNIQUE_WHILE[r[38]],
        workflow_run_id=r[40],
        workflow_step=r[41],
    )


def claim_order(r: Row) -> tuple[int, datetime, int]:
    """The sort key of claim order (priority DESC, run_at, seq): RETURNING promises no order."""
    return (-r[5], r[13], r[0])


def insert_params(specs: Sequence[NewJob], ids: Sequence[str], flow: bool) -> dict[str, str]:
    """The ``job_insert`` parameters of ``specs`` (with their final ``ids``): one JSON array per column.

    Why JSON text rather than typed arrays: orjson writes a whole column in one C call, while psycopg
    dumps a typed array element by element in Python (measured for 10,000 jobs: 6 ms instead of 50 ms on
    the client, for about 10 ms more on the server, which parses the JSON). Nested values (payload,
    tags, metadata, checkpoint, chains) travel as JSON inside the array, and the query keeps their text
    as written. Integers are coerced, since the query casts their text to ``integer`` (``2.0`` would
    not parse). The flow-control columns are empty arrays unless ``flow`` (some job of the batch uses a
    flow-control field): the query reads them as NULL, and the batch costs what it cost before."""
    return {
        **(_flow_params(specs) if flow else _NO_FLOW),
        "id": json_array(ids),
        "queue": json_array([s.queue for s in specs]),
        "kind": json_array([s.kind.value for s in specs]),
        "priority": json_array([int(s.priority) for s in specs]),
        # isoformat, not orjson's own datetime encoding, which refuses some tzinfo implementations.
        "run_at": json_array([None if s.run_at is None else s.run_at.isoformat() for s in specs]),
        "delay": json_array([s.delay for s in specs]),
        "max_retries": json_array([int(s.max_retries) for s in specs]),
        "backoff_kind": json_array([s.backoff.kind.value for s in specs]),
        "backoff_base": json_array([s.backoff.base for s in specs]),
        "backoff_max": json_array([s.backoff.max for s in specs]),
        "timeout": json_array([s.timeout for s in specs]),
        "lease": json_array([s.lease for s in specs]),
        "idempotency_key": json_array([s.idempotency_key for s in specs]),
        "payload": json_array([s.payload for s in specs]),
        "on_success": json_array([_chain(s.on_success, i, "on_success") for i, s in enumerate(specs)]),
        "on_failure": json_array([_chain(s.on_failure, i, "on_failure") for i, s in enumerate(specs)]),
        "tags": json_array([s.tags for s in specs]),
        "metadata": json_array([s.metadata for s in specs]),
        "checkpoint": json_array([s.checkpoint for s in specs]),
    }


_FLOW_COLUMNS = ("rate_key", "concurrency_key", "ordering_key", "unique_for", "unique_while")
_NO_FLOW = dict.fromkeys(_FLOW_COLUMNS, "[]")


def _flow_params(specs: Sequence[NewJob]) -> dict[str, str]:
    return {
        "rate_key": json_array([s.rate_key for s in specs]),
        "concurrency_key": json_array([s.concurrency_key for s in specs]),
        "ordering_key": json_array([s.ordering_key for s in specs]),
        "unique_for": json_array([s.unique_for for s in specs]),
        "unique_while": json_array([s.unique_while.value for s in specs]),
    }


def uses_flow_control(spec: NewJob) -> bool:
    """Whether a job sets any flow-control field (then its batch sends those columns)."""
    return (
        spec.ordering_key is not None
        or spec.rate_key is not None
        or spec.concurrency_key is not None
        or spec.unique_for is not None
        or spec.unique_while is not UniqueWhile.STORED
    )


def json_array(values: Sequence[Any]) -> str:
    """A batch parameter: one column as the text of a JSON array (see :func:`insert_params`)."""
    return orjson.dumps(values).decode()


def _chain(chain: NewJob | None, position: int, field: str) -> JSON:
    if chain is None:
        return None
    value = chain.to_json()
    if _has_nul(value):
        # The finish (and the reaper) read a stored chain with PostgreSQL's json operators, which
        # refuse a \u0000 anywhere in the value: stored, it would make every finish of its parent
        # fail. Refused here, the caller learns it at enqueue and nothing is written.
        raise InvalidJobError(
            f"[{position}].{field}", "PostgreSQL cannot store a NUL character (\\u0000) in a chained job"
        )
    return value


def _has_nul(value: JSON) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


@dataclass(frozen=True, slots=True)
class Inserted:
    """What ``job_insert`` answers for a whole batch, in one row: the time of the insert, which of the
    jobs with an idempotency key were inserted (the others found their key taken), the ``run_at`` of
    every inserted job that does not start at that time, the keys whose hold lapsed (then nothing was
    inserted), and the held jobs released. Everything else is what was sent."""

    now: datetime
    keyed: frozenset[str]
    run_at: dict[str, datetime]
    lapsed: list[str]
    released: frozenset[str]

    @classmethod
    def of(cls, row: Row) -> Inserted:
        """From ``now, keyed ids, delayed ids, their run_at, lapsed keys, released ids`` (NULL arrays
        when none)."""
        now, keyed, delayed, run_at, lapsed, released = row[0], row[1], row[2], row[3], row[4], row[5]
        return cls(
            utc(now),
            frozenset(keyed or ()),
            {} if delayed is None else {i: utc(when) for i, when in zip(delayed, run_at, strict=True)},
            list(lapsed or ()),
            frozenset(released or ()),
        )


def inserted_jobs(
    specs: Sequence[NewJob], ids: Sequence[str], params: dict[str, str], answer: Inserted, flow: bool
) -> list[Job]:
    """The jobs ``job_insert`` stored from ``specs`` (all of them, whether inserted or not: the caller
    picks), built from what was sent and the database's answer, not read back.

    JSON values are loaded again from the text sent, one column at a time, so that no job shares an
    object with the caller's spec (a caller that mutates its payload afterwards changes nothing)."""
    payloads = orjson.loads(params["payload"])
    metadata = orjson.loads(params["metadata"])
    checkpoints = orjson.loads(params["checkpoint"])
    on_success = _chains([s.on_success for s in specs], params["on_success"])
    on_failure = _chains([s.on_failure for s in specs], params["on_failure"])
    now = answer.now
    jobs: list[Job] = []
    for i, spec in enumerate(specs):
        run_at = answer.run_at.get(ids[i], now)
        jobs.append(
            Job(
                id=ids[i],
                queue=spec.queue,
                kind=spec.kind,
                payload=payloads[i],
                state=JobState.SCHEDULED if run_at > now else JobState.PENDING,
                priority=spec.priority,
                attempt=0,
                max_retries=spec.max_retries,
                backoff=spec.backoff,
                timeout=spec.timeout,
                lease=spec.lease,
                run_at=run_at,
                created_at=now,
                updated_at=now,
                idempotency_key=spec.idempotency_key,
                on_success=on_success[i],
                on_failure=on_failure[i],
                tags=tuple(spec.tags),
                metadata=metadata[i],
                checkpoint=checkpoints[i],
            )
        )
    return _with_flow(jobs, specs, answer) if flow else jobs


def _with_flow(jobs: list[Job], specs: Sequence[NewJob], answer: Inserted) -> list[Job]:
    """The jobs with their flow-control fields, as ``job_insert`` stored them: a job with an ordering key
    is held unless it was released, and ``unique_until`` is rounded to microseconds the way PostgreSQL
    multiplies an interval (``rint``, half to even, as ``round``)."""
    return [
        replace(
            job,
            rate_key=spec.rate_key,
            concurrency_key=spec.concurrency_key,
            ordering_key=spec.ordering_key,
            held=spec.ordering_key is not None and job.id not in answer.released,
            unique_until=None
            if spec.unique_for is None
            else answer.now + timedelta(microseconds=round(1_000_000 * spec.unique_for)),
            unique_while=spec.unique_while,
        )
        for job, spec in zip(jobs, specs, strict=True)
    ]


def _chains(chains: list[NewJob | None], sent: str) -> list[NewJob | None]:
    """The chained jobs of one column, rebuilt from the JSON ``sent`` (chains are rare: a column of
    nulls is not parsed at all)."""
    if all(chain is None for chain in chains):
        return chains
    return [None if c is None else NewJob.from_json(c) for c in orjson.loads(sent)]


def log_text(text: str) -> str:
    """A log line PostgreSQL can store: NUL characters become U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def log_line_from_row(r: Row) -> LogLine:
    """From ``job_id, seq, attempt, stream, text, at``."""
    return LogLine(job_id=r[0], seq=r[1], attempt=r[2], stream=r[3], text=r[4], at=utc(r[5]))


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
        started_at=utc(r[5]),
        last_heartbeat_at=utc(r[6]),
        running=tuple(r[7]),
    )
