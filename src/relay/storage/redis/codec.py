"""Between Relay's types and what Redis stores: job hashes, packed inserts, errors, log lines, workers.

A job is one hash (``P:job:<id>``, layout version :data:`relay.storage.redis.keys.LAYOUT`) in two parts:

- ``doc``: what never changes after the insert, one orjson object made by :func:`job_doc` in Python and
  only read by Python: ``payload``, ``queue``, ``kind``, ``priority``, ``max_retries``, ``backoff``
  (``[kind, base, max]``), ``lease``, and when not None or empty ``timeout``, ``idempotency_key``
  (as inserted: the field of that name is the truth, since a lapsed key passes to a newer job),
  ``tags``, ``metadata``, ``on_success`` / ``on_failure`` (chained jobs in their ``NewJob.to_json``
  form), ``rate_key``, ``concurrency_key``, ``ordering_key``, ``unique_for_us`` (the unique window in
  µs: ``unique_until`` is ``created_at`` plus it), ``unique_while`` (only ``active``) and for a
  workflow's step ``workflow_run_id`` and ``workflow_step``. One field
  for what took ten: Redis pays for every field it writes and every value a script reads back, and
  Python decodes them all in one call.
- the fields the scripts read or change, every value a string: ``state``, ``run_at``, ``created_at``,
  ``updated_at``, ``attempt``, ``started_at``, ``finished_at``, ``lease_token``, ``lease_expires_at``,
  ``worker_id``, ``cancel_requested`` (``1``), ``progress``, ``checkpoint``, ``result``, ``errors``,
  ``parent_id``, ``idempotency_key``, ``held`` (``1`` while held behind an earlier job of its
  ordering key, or while a workflow's step waits for the steps it depends on) (these and ``doc`` are
  :data:`FIELDS`, what Python reads); and copies of what the
  scripts need of the doc: ``queue``, ``kind``, ``score`` (-priority: the ready set's score),
  ``max_retries``, ``lease_us`` (the lease in µs), and only when set ``rate_key``,
  ``concurrency_key``, ``ordering_key``, ``unique_until`` (µs), ``unique_while`` (``active``) and
  ``workflow_run_id``; plus ``seq`` (insertion order,
  16 digits with leading zeros: the form the ready set's members hold), ``on_success_spec`` /
  ``on_failure_spec`` (the chained job packed as :func:`pack_new_job` does, ready for a script to
  insert), ``batch`` (the token of the insert call that wrote it) and ``log_seq``.

Integers and floats are in Python's shortest exact ``str`` form, times integer microseconds since the
epoch, JSON values orjson text. Absent means None, except ``attempt`` (0), ``errors`` ([]) and
``checkpoint`` (null): an insert writes only what it must. The id is not stored: it is the key's last
part, and scripts return it beside the job's :data:`FIELDS` (``HMGET``, not ``HGETALL``: half the
strings for Redis to convert, since no field names come back).

:func:`job_from_fields` is the way back to a :class:`Job`; :func:`draft_job` and :func:`stamp_job` build
the same Job from what an insert sent, so that an insert need not read its jobs back.

Queue limits (``P:limits``) are JSON too (:func:`limits_json`), token buckets ``"<tokens> <at µs>"``
(:func:`bucket_from_text`).

Errors are stored with ``at_us`` (an integer) instead of ``at`` (ISO text), so that the reaper's Lua can
write its ``LeaseExpired`` error without formatting dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from relay.errors import InvalidJobError
from relay.storage.batching import collector_paused
from relay.types import (
    JSON,
    AttemptError,
    Backoff,
    BackoffKind,
    Job,
    JobKind,
    JobState,
    LogLine,
    NewJob,
    OrderingDead,
    QueueLimits,
    RateLimit,
    UniqueWhile,
    WorkerInfo,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_STATES = {s.value.encode(): s for s in JobState}
_KINDS = {k.value: k for k in JobKind}
_BACKOFFS: dict[tuple[str, float, float], Backoff] = {}
_ACTIVE, _STORED = UniqueWhile.ACTIVE, UniqueWhile.STORED

#: Times already converted during one call, by their stored text: the jobs of one batch share most
#: of theirs (created, started, updated at the same script's now), and a datetime costs a microsecond.
Times = dict[bytes, datetime]


# -- scalars -------------------------------------------------------------------------------------------


def to_us(when: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _US


def from_us(value: bytes | str | int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


@lru_cache(maxsize=256)  # a handful of distinct delays and leases, packed for every job
def duration_us(seconds: float) -> int:
    """``seconds`` in µs, rounded as ``timedelta`` rounds (so ``now + delay`` matches other backends)."""
    return timedelta(seconds=seconds) // _US


def encode_json(value: JSON, field: str) -> str:
    """``value`` as JSON text; a value JSON cannot carry is refused before anything is written."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidJobError(field, f"not a JSON value: {exc}") from exc


# -- inserting -----------------------------------------------------------------------------------------

#: Positions in a packed job (``P_*`` in ``_lib.lua``).
ID, IDEM, RUN_AT, DELAY, QUEUE, KIND, SCORE, MAX_RETRIES, LEASE_US, DOC, CHECKPOINT = range(11)
#: The flow-control tail of a packed job, after the two chains: only sent when one of them is set, so
#: that the jobs of an insert without flow control cost the script (and the JSON) nothing more.
RATE_KEY, CONCURRENCY_KEY, ORDERING_KEY, UNIQUE_FOR_US, UNIQUE_WHILE = range(13, 18)
#: After the flow-control tail, for a workflow's step only: its run's id and whether it starts held.
RUN_ID, STEP_HELD = range(18, 20)


def pack_new_job(spec: NewJob, job_id: str, held: bool = False) -> list[str]:
    """``spec`` as the insert scripts read it (``P_*`` in ``_lib.lua``): id, idempotency key, run_at
    ('' = now + delay), delay µs, queue, kind, -priority (the ready set's score), max_retries, lease
    µs, :func:`job_doc`, checkpoint JSON ('' = null), then the packed on_success and on_failure jobs as
    JSON text ('' = none), and when any is set the flow-control tail: rate_key, concurrency_key,
    ordering_key, unique_for µs and unique_while ('' = None, or the default); and after it, for a
    workflow's step, its run's id and '1' when it starts ``held`` (workflow_start only). Numbers are
    formatted here, once, not by the script for every job. ``job_id`` '' lets the script make an id
    (chained jobs). An empty key is no key, as for the idempotency key."""
    kind = spec.kind if isinstance(spec.kind, JobKind) else JobKind(spec.kind)
    packed = [
        job_id,
        spec.idempotency_key or "",
        "" if spec.run_at is None else str(to_us(spec.run_at)),
        str(duration_us(spec.delay)),
        spec.queue,
        kind.value,
        str(-int(spec.priority)),
        str(int(spec.max_retries)),
        str(duration_us(spec.lease)),
        job_doc(spec, kind),
        "" if spec.checkpoint is None else encode_json(spec.checkpoint, "checkpoint"),
        _packed_chain(spec.on_success),
        _packed_chain(spec.on_failure),
    ]
    if _has_flow_control(spec) or spec.workflow_run_id is not None:
        packed += [
            spec.rate_key or "",
            spec.concurrency_key or "",
            spec.ordering_key or "",
            "" if spec.unique_for is None else str(duration_us(spec.unique_for)),
            "active" if spec.unique_while is UniqueWhile.ACTIVE else "",
        ]
        if spec.workflow_run_id is not None:
            packed += [spec.workflow_run_id, "1" if held else ""]
    return packed


def _has_flow_control(spec: NewJob) -> bool:
    return bool(
        spec.rate_key
        or spec.concurrency_key
        or spec.ordering_key
        or spec.unique_for is not None
        or spec.unique_while is UniqueWhile.ACTIVE
    )


def _packed_chain(chain: NewJob | None) -> str:
    # Its doc was encoded by pack_new_job, which named any field JSON cannot carry: strings only here.
    return "" if chain is None else orjson.dumps(pack_new_job(chain, chain.id or "")).decode()


def job_doc(spec: NewJob, kind: JobKind) -> str:
    """The ``doc`` field of ``spec``'s hash, encoded in one call (a field that JSON cannot carry is
    named in the error)."""
    b = spec.backoff
    doc: dict[str, Any] = {
        "payload": spec.payload,
        "queue": spec.queue,
        "kind": kind,  # orjson writes an enum as its value
        "priority": int(spec.priority),
        "max_retries": int(spec.max_retries),
        "backoff": [b.kind, float(b.base), float(b.max)],
        "lease": float(spec.lease),
    }
    if spec.timeout is not None:
        doc["timeout"] = float(spec.timeout)
    if spec.idempotency_key:
        doc["idempotency_key"] = spec.idempotency_key
    if spec.tags:
        doc["tags"] = list(spec.tags)
    if spec.metadata:
        doc["metadata"] = dict(spec.metadata)
    if spec.on_success is not None:
        doc["on_success"] = spec.on_success.to_json()
    if spec.on_failure is not None:
        doc["on_failure"] = spec.on_failure.to_json()
    if _has_flow_control(spec):
        _add_flow_control(doc, spec)
    if spec.workflow_run_id is not None:
        doc["workflow_run_id"] = spec.workflow_run_id
        doc["workflow_step"] = spec.workflow_step
    try:
        return orjson.dumps(doc).decode()
    except orjson.JSONEncodeError:
        for field, value in doc.items():
            encode_json(value, field)  # raises InvalidJobError naming the field
        raise


def _add_flow_control(doc: dict[str, Any], spec: NewJob) -> None:
    for name in ("rate_key", "concurrency_key", "ordering_key"):
        value = getattr(spec, name)
        if value:
            doc[name] = value
    if spec.unique_for is not None:
        doc["unique_for_us"] = duration_us(spec.unique_for)
    if spec.unique_while is UniqueWhile.ACTIVE:
        doc["unique_while"] = "active"


#: The times of a draft (:func:`draft_job`) until :func:`stamp_job` sets the script's.
_UNSTAMPED = _EPOCH


def draft_job(packed: list[str]) -> Job:
    """The job the insert script writes for ``packed``, but for the times it chooses (its now, and the
    state and run_at that follow): the very Job that :func:`job_from_fields` reads back, its JSON values
    decoded from the text sent (not shared with the caller's NewJob). Built while Redis runs the script,
    and finished by :func:`stamp_job` when the reply comes."""
    delay = 0 if packed[RUN_AT] else int(packed[DELAY])
    d = orjson.loads(packed[DOC])
    checkpoint = packed[CHECKPOINT]
    return Job(
        id=packed[ID],
        queue=d["queue"],
        kind=_KINDS[d["kind"]],
        payload=d["payload"],
        # run_at = now + delay is due (pending) unless the delay is positive; a given run_at: stamp_job.
        state=JobState.SCHEDULED if delay > 0 else JobState.PENDING,
        priority=d["priority"],
        attempt=0,
        max_retries=d["max_retries"],
        backoff=_backoff(d["backoff"]),
        timeout=d.get("timeout"),
        lease=d["lease"],
        run_at=from_us(packed[RUN_AT]) if packed[RUN_AT] else _UNSTAMPED,
        created_at=_UNSTAMPED,
        updated_at=_UNSTAMPED,
        idempotency_key=packed[IDEM] or None,
        on_success=_chain(d.get("on_success")),
        on_failure=_chain(d.get("on_failure")),
        tags=tuple(d["tags"]) if "tags" in d else (),
        metadata=d.get("metadata") or {},
        checkpoint=orjson.loads(checkpoint) if checkpoint else None,
        rate_key=d.get("rate_key"),
        concurrency_key=d.get("concurrency_key"),
        ordering_key=d.get("ordering_key"),
        unique_while=_ACTIVE if d.get("unique_while") == "active" else _STORED,
        workflow_run_id=d.get("workflow_run_id"),
        workflow_step=d.get("workflow_step"),
    )


def stamp_job(draft: Job, packed: list[str], now_us: int, now: datetime, held: bool = False) -> None:
    """Sets on ``draft`` (:func:`draft_job`) what the insert script chose for ``packed`` at ``now_us``
    (``now``), as ``write_job`` in ``_lib.lua`` does, and whether it found the job ``held``. A Job is
    frozen, but nobody else holds a draft yet: three assignments here cost a tenth of building the job
    again after the reply."""
    set_field = object.__setattr__
    set_field(draft, "created_at", now)
    set_field(draft, "updated_at", now)
    if len(packed) > UNIQUE_FOR_US:
        if packed[UNIQUE_FOR_US]:
            set_field(draft, "unique_until", from_us(now_us + int(packed[UNIQUE_FOR_US])))
        if held:
            set_field(draft, "held", True)
    if packed[RUN_AT]:
        if int(packed[RUN_AT]) > now_us:
            set_field(draft, "state", JobState.SCHEDULED)
    else:
        delay = int(packed[DELAY])
        set_field(draft, "run_at", now if delay == 0 else from_us(now_us + delay))


# -- reading jobs --------------------------------------------------------------------------------------

#: What Python reads of a job hash, in this order (``HMGET``; the scripts get this very list as
#: ``READ``, see :mod:`.scripts`).
FIELDS = (
    "doc", "state", "run_at", "created_at", "updated_at", "attempt", "started_at", "finished_at",
    "lease_token", "lease_expires_at", "worker_id", "cancel_requested", "progress", "checkpoint",
    "result", "errors", "parent_id", "idempotency_key", "held",
)  # fmt: skip

Values = Sequence[bytes | None]


def _at(times: Times, value: bytes) -> datetime:
    found = times.get(value)
    if found is None:
        found = times[value] = _EPOCH + timedelta(microseconds=int(value))
    return found


def _time(times: Times, value: bytes | None) -> datetime | None:
    return None if value is None else _at(times, value)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _chain(value: dict[str, JSON] | None) -> NewJob | None:
    return None if value is None else NewJob.from_json(value)


def _backoff(value: list[Any]) -> Backoff:
    # Backoff is frozen, so equal policies share one instance; few distinct policies exist.
    key = (value[0], value[1], value[2])
    found = _BACKOFFS.get(key)
    if found is None:
        found = _BACKOFFS[key] = Backoff(BackoffKind(key[0]), float(key[1]), float(key[2]))
    return found


def _errors(raw: bytes | None) -> tuple[AttemptError, ...]:
    if raw is None or raw == b"[]":
        return ()
    return tuple(error_from_json(e) for e in orjson.loads(raw))


def job_from_fields(job_id: str, values: Values, times: Times | None = None) -> Job | None:
    """The :class:`Job` whose :data:`FIELDS` are ``values``, or None when there is no such job.
    ``times``: conversions to share between the jobs of one reply."""
    (doc, state, run_at, created_at, updated_at, attempt, started_at, finished_at, lease_token,
     lease_expires_at, worker_id, cancel_requested, progress, checkpoint, result, errors,
     parent_id, idempotency_key, held) = values  # fmt: skip
    if doc is None or state is None or run_at is None or created_at is None or updated_at is None:
        return None
    if times is None:
        times = {}
    d = orjson.loads(doc)
    created = _at(times, created_at)
    unique_for = d.get("unique_for_us")
    return Job(
        id=job_id,
        queue=d["queue"],
        kind=_KINDS[d["kind"]],
        payload=d["payload"],
        state=_STATES[state],
        priority=d["priority"],
        attempt=0 if attempt is None else int(attempt),
        max_retries=d["max_retries"],
        backoff=_backoff(d["backoff"]),
        timeout=d.get("timeout"),
        lease=d["lease"],
        run_at=_at(times, run_at),
        created_at=created,
        updated_at=_at(times, updated_at),
        idempotency_key=_text(idempotency_key),
        on_success=_chain(d.get("on_success")),
        on_failure=_chain(d.get("on_failure")),
        tags=tuple(d["tags"]) if "tags" in d else (),
        metadata=d.get("metadata") or {},
        started_at=_time(times, started_at),
        finished_at=_time(times, finished_at),
        lease_token=_text(lease_token),
        lease_expires_at=_time(times, lease_expires_at),
        worker_id=_text(worker_id),
        cancel_requested=cancel_requested == b"1",
        progress=None if progress is None else float(progress),
        checkpoint=None if checkpoint is None else orjson.loads(checkpoint),
        result=None if result is None else orjson.loads(result),
        errors=_errors(errors),
        parent_id=_text(parent_id),
        rate_key=d.get("rate_key"),
        concurrency_key=d.get("concurrency_key"),
        ordering_key=d.get("ordering_key"),
        held=held == b"1",
        unique_until=None if unique_for is None else created + timedelta(microseconds=unique_for),
        unique_while=_ACTIVE if d.get("unique_while") == "active" else _STORED,
        workflow_run_id=d.get("workflow_run_id"),
        workflow_step=d.get("workflow_step"),
    )


def jobs_from_pairs(reply: Sequence[Any], start: int = 0) -> list[Job]:
    """``[id, values, id, values, ...]`` (a script's reply, from ``reply[start]`` on) as Jobs; a job
    missing meanwhile is left out."""
    times: Times = {}
    with collector_paused((len(reply) - start) // 2):
        jobs = (job_from_fields(reply[x].decode(), reply[x + 1], times) for x in range(start, len(reply), 2))
        return [job for job in jobs if job is not None]


# -- errors, log lines, workers ------------------------------------------------------------------------


def error_json(error: AttemptError) -> str:
    d = error.to_json()
    del d["at"]
    d["at_us"] = to_us(error.at)
    return orjson.dumps(d).decode()


def error_from_json(d: dict[str, Any]) -> AttemptError:
    return AttemptError(
        attempt=d["attempt"],
        type=d["type"],
        message=d["message"],
        at=from_us(d["at_us"]),
        traceback=d.get("traceback"),
        exit_code=d.get("exit_code"),
        stderr_tail=d.get("stderr_tail"),
    )


def log_line(job_id: str, raw: bytes) -> LogLine:
    """From ``seq\\tattempt\\tat\\tstream\\ttext`` (log_append.lua)."""
    seq, attempt, at, stream, text = raw.decode().split("\t", 4)
    return LogLine(
        job_id=job_id, attempt=int(attempt), seq=int(seq), stream=stream, text=text, at=from_us(at)
    )


def worker_json(info: WorkerInfo) -> str:
    return orjson.dumps(
        {
            "id": info.id,
            "host": info.host,
            "pid": info.pid,
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "started_at_us": to_us(info.started_at),
            "last_heartbeat_at_us": to_us(info.last_heartbeat_at),
            "running": list(info.running),
        }
    ).decode()


def worker_from_json(raw: bytes) -> WorkerInfo:
    d = orjson.loads(raw)
    return WorkerInfo(
        id=d["id"],
        host=d["host"],
        pid=d["pid"],
        queues=tuple(d["queues"]),
        concurrency=d["concurrency"],
        started_at=from_us(d["started_at_us"]),
        last_heartbeat_at=from_us(d["last_heartbeat_at_us"]),
        running=tuple(d["running"]),
    )


# -- queue limits and token buckets -------------------------------------------------------------------


def limits_json(limits: QueueLimits) -> str:
    """``limits`` as ``P:limits`` keeps them, for the scripts (cjson) and for Python: only what is set,
    rates as ``[tokens a second, burst]``. Floats in orjson's shortest form read back as the same
    double in Lua and in Python, so a rate such as 10/60 round-trips exactly."""
    doc: dict[str, Any] = {}
    for name in ("rate", "key_rate"):
        rate: RateLimit | None = getattr(limits, name)
        if rate is not None:
            doc[name] = [float(rate.rate), int(rate.burst)]
    for name in ("concurrency", "key_concurrency"):
        count: int | None = getattr(limits, name)
        if count is not None:
            doc[name] = int(count)
    if limits.ordering_dead is OrderingDead.BLOCK:
        doc["ordering_dead"] = "block"
    return orjson.dumps(doc).decode()


def limits_from_json(raw: bytes | None) -> QueueLimits:
    if raw is None:
        return QueueLimits()
    d = orjson.loads(raw)
    return QueueLimits(
        rate=_rate_limit(d.get("rate")),
        key_rate=_rate_limit(d.get("key_rate")),
        concurrency=d.get("concurrency"),
        key_concurrency=d.get("key_concurrency"),
        ordering_dead=OrderingDead(d.get("ordering_dead", "continue")),
    )


def _rate_limit(value: list[Any] | None) -> RateLimit | None:
    return None if value is None else RateLimit(rate=float(value[0]), burst=int(value[1]))


def bucket_from_text(raw: bytes) -> tuple[float, datetime]:
    """A stored token bucket, ``"<tokens> <at µs>"``: what it held, and when."""
    tokens, at = raw.split()
    return float(tokens), from_us(at)
