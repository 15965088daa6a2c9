"""Between Relay's types and what Redis stores: job hashes, packed inserts, errors, log lines, workers.

A job is one hash (``P:job:<id>``), one field per :class:`relay.types.Job` attribute, every value a
string: integers and floats in Python's shortest exact ``str`` form, times as integer microseconds
since the epoch, JSON values (payload, metadata, checkpoint, result, tags, errors, chained jobs in their
``NewJob.to_json`` form) as orjson text. A field that is absent means None. Besides the attributes a
hash holds ``seq`` (insertion order), ``lease_us`` (the lease in µs, for the scripts' arithmetic),
``on_success_spec`` / ``on_failure_spec`` (the chained job packed as :func:`pack_new_job` does, ready for
a script to insert), ``batch`` (the token of the insert call that wrote it) and ``log_seq``.

Every script returns jobs as their ``HGETALL``, and :func:`job_from_hash` is the only way back to a
:class:`Job`: the job an insert or a claim returns is exactly the job ``job_get`` reads afterwards.

Errors are stored with ``at_us`` (an integer) instead of ``at`` (ISO text), so that the reaper's Lua can
write its ``LeaseExpired`` error without formatting dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from relay.errors import InvalidJobError
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
    WorkerInfo,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_STATES = {s.value.encode(): s for s in JobState}
_KINDS = {k.value.encode(): k for k in JobKind}
_BACKOFFS: dict[tuple[bytes, bytes, bytes], Backoff] = {}

Hash = dict[bytes, bytes]


# -- scalars -------------------------------------------------------------------------------------------


def to_us(when: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _US


def from_us(value: bytes | str | int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


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


def pack_new_job(spec: NewJob, job_id: str) -> list[str]:
    """``spec`` as the insert scripts read it (``parse_spec`` in ``_lib.lua``): a header, then the
    field/value pairs stored as they are. ``job_id`` '' lets the script make an id (chained jobs)."""
    pairs = _new_job_fields(spec)
    return [
        job_id,
        spec.idempotency_key or "",
        "" if spec.run_at is None else str(to_us(spec.run_at)),
        str(duration_us(spec.delay)),
        spec.queue,
        str(JobKind(spec.kind)),
        str(int(spec.priority)),
        str(len(pairs) // 2),
        *pairs,
    ]


def _new_job_fields(spec: NewJob) -> list[str]:
    b = spec.backoff
    pairs = [
        "max_retries", str(int(spec.max_retries)),
        "backoff_kind", str(BackoffKind(b.kind)), "backoff_base", str(b.base), "backoff_max", str(b.max),
        "lease", str(spec.lease), "lease_us", str(duration_us(spec.lease)),
        "payload", encode_json(spec.payload, "payload"),
        "tags", encode_json(list(spec.tags), "tags"),
        "metadata", encode_json(dict(spec.metadata), "metadata"),
        "checkpoint", encode_json(spec.checkpoint, "checkpoint"),
    ]  # fmt: skip
    if spec.timeout is not None:
        pairs += ["timeout", str(spec.timeout)]
    for name, chain in (("on_success", spec.on_success), ("on_failure", spec.on_failure)):
        if chain is not None:
            packed = pack_new_job(chain, chain.id or "")
            pairs += [name, encode_json(chain.to_json(), name), f"{name}_spec", encode_json(packed, name)]
    return pairs


def inserted_hash(
    packed: list[str], *, seq: bytes, state: bytes, run_at: bytes, now: bytes, batch: str
) -> Hash:
    """The hash ``write_job`` (``_lib.lua``) stored for ``packed``, rebuilt from what the insert sent and
    the few values the script chose, so that an insert need not read every new job back."""
    job_id, idem, _run_at, _delay, queue, kind, priority, _n, *pairs = packed
    h: Hash = {pairs[i].encode(): pairs[i + 1].encode() for i in range(0, len(pairs), 2)}
    h[b"id"], h[b"seq"], h[b"state"], h[b"queue"] = job_id.encode(), seq, state, queue.encode()
    h[b"kind"], h[b"priority"], h[b"run_at"] = kind.encode(), priority.encode(), run_at
    h[b"created_at"] = h[b"updated_at"] = now
    h[b"attempt"], h[b"errors"], h[b"batch"] = b"0", b"[]", batch.encode()
    if idem:
        h[b"idempotency_key"] = idem.encode()
    return h


# -- reading jobs --------------------------------------------------------------------------------------


def to_hash(flat: Sequence[bytes]) -> Hash:
    """An ``HGETALL`` reply (field, value, field, value...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _text(h: Hash, field: bytes) -> str | None:
    value = h.get(field)
    return None if value is None else value.decode()


def _time(h: Hash, field: bytes) -> datetime | None:
    value = h.get(field)
    return None if value is None else _EPOCH + timedelta(microseconds=int(value))


def _float(h: Hash, field: bytes) -> float | None:
    value = h.get(field)
    return None if value is None else float(value)


def _chain(h: Hash, field: bytes) -> NewJob | None:
    value = h.get(field)
    return None if value is None else NewJob.from_json(orjson.loads(value))


def _backoff(h: Hash) -> Backoff:
    # Backoff is frozen, so equal policies share one instance; few distinct policies exist.
    key = (h[b"backoff_kind"], h[b"backoff_base"], h[b"backoff_max"])
    found = _BACKOFFS.get(key)
    if found is None:
        found = _BACKOFFS[key] = Backoff(BackoffKind(key[0].decode()), float(key[1]), float(key[2]))
    return found


def _errors(raw: bytes) -> tuple[AttemptError, ...]:
    if raw == b"[]":
        return ()
    return tuple(error_from_json(e) for e in orjson.loads(raw))


def job_seq(h: Hash) -> int:
    return int(h[b"seq"])


def job_from_hash(h: Hash) -> Job:
    """The :class:`Job` a job hash holds (see the module docstring for the fields)."""
    return Job(
        id=h[b"id"].decode(),
        queue=h[b"queue"].decode(),
        kind=_KINDS[h[b"kind"]],
        payload=orjson.loads(h[b"payload"]),
        state=_STATES[h[b"state"]],
        priority=int(h[b"priority"]),
        attempt=int(h[b"attempt"]),
        max_retries=int(h[b"max_retries"]),
        backoff=_backoff(h),
        timeout=_float(h, b"timeout"),
        lease=float(h[b"lease"]),
        run_at=_EPOCH + timedelta(microseconds=int(h[b"run_at"])),
        created_at=_EPOCH + timedelta(microseconds=int(h[b"created_at"])),
        updated_at=_EPOCH + timedelta(microseconds=int(h[b"updated_at"])),
        idempotency_key=_text(h, b"idempotency_key"),
        on_success=_chain(h, b"on_success"),
        on_failure=_chain(h, b"on_failure"),
        tags=tuple(orjson.loads(h[b"tags"])),
        metadata=orjson.loads(h[b"metadata"]),
        started_at=_time(h, b"started_at"),
        finished_at=_time(h, b"finished_at"),
        lease_token=_text(h, b"lease_token"),
        lease_expires_at=_time(h, b"lease_expires_at"),
        worker_id=_text(h, b"worker_id"),
        cancel_requested=h.get(b"cancel_requested") == b"1",
        progress=_float(h, b"progress"),
        checkpoint=orjson.loads(h[b"checkpoint"]),
        result=orjson.loads(h[b"result"]) if b"result" in h else None,
        errors=_errors(h[b"errors"]),
        parent_id=_text(h, b"parent_id"),
    )


def job_from_flat(flat: Sequence[bytes]) -> Job:
    return job_from_hash(to_hash(flat))


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
