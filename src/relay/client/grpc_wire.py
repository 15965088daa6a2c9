"""Between Relay's types and the messages of ``relay.v1`` (``relay/grpc/v1/relay.proto``), for both ends
of the gRPC API: the server's services, the gRPC client and the worker's stream.

A job travels as its typed fields plus ``json``, the job exactly as the HTTP API shows it
(:func:`relay.client.wire.job_to_json`): a job read over gRPC is the same as one read over HTTP, field for
field. JSON values inside messages are JSON text, empty for none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from relay.client.wire import job_from_json, job_to_json
from relay.grpc.v1 import relay_pb2 as pb
from relay.types import JSON, AttemptError, Job, LogLine


def json_text(value: JSON) -> str:
    """A JSON value as a message's string field: empty for None."""
    return "" if value is None else orjson.dumps(value).decode()


def json_value(text: str) -> JSON:
    """The inverse of :func:`json_text` (raises ``orjson.JSONDecodeError`` on text that is not JSON)."""
    return None if text == "" else orjson.loads(text)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _set_time(stamp: Timestamp, when: datetime) -> None:
    """``stamp.FromDatetime(when)``, exactly (microseconds), without its calendar arithmetic: a
    server sends four per assigned job."""
    since = when - _EPOCH
    stamp.seconds = since.days * 86_400 + since.seconds
    stamp.nanos = since.microseconds * 1000


def timestamp(when: datetime | None) -> Timestamp | None:
    if when is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(UTC))
    return stamp


def datetime_of(stamp: Timestamp, present: bool = True) -> datetime | None:
    """An aware UTC datetime; None when the field is not set (``present`` from ``HasField``)."""
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def attempt_error_message(error: AttemptError) -> pb.AttemptError:
    message = pb.AttemptError(
        attempt=error.attempt,
        type=error.type,
        message=error.message,
        at=timestamp(error.at),
        traceback=error.traceback or "",
        stderr_tail=error.stderr_tail or "",
    )
    if error.exit_code is not None:
        message.exit_code = error.exit_code
    return message


def attempt_error_of(message: pb.AttemptError) -> AttemptError:
    return AttemptError(
        attempt=message.attempt,
        type=message.type,
        message=message.message,
        at=message.at.ToDatetime(tzinfo=UTC) if message.HasField("at") else datetime.now(UTC),
        traceback=message.traceback or None,
        exit_code=message.exit_code if message.HasField("exit_code") else None,
        stderr_tail=message.stderr_tail or None,
    )


def job_message(job: Job) -> pb.Job:
    message = pb.Job()
    fill_job_message(message, job)
    return message


def fill_job_message(message: pb.Job, job: Job) -> None:
    """Write ``job`` into ``message`` in place (a message field of another message, say): on the worker
    stream's hot path, building a Job and then copying it into its Assignment cost a third more."""
    message.id = job.id
    message.queue = job.queue
    message.type = job.kind.value
    message.state = job.state.value
    message.priority = job.priority
    message.attempt = job.attempt
    message.max_retries = job.max_retries
    message.payload = json_text(job.payload)
    message.result = json_text(job.result)
    message.tags.extend(job.tags)
    for name in ("created_at", "run_at", "started_at", "finished_at"):
        when: datetime | None = getattr(job, name)
        if when is not None:
            _set_time(getattr(message, name), when)
    message.errors.extend(attempt_error_message(e) for e in job.errors)
    message.cancel_requested = job.cancel_requested
    message.worker_id = job.worker_id or ""
    message.json = orjson.dumps(job_to_json(job, raw_times=True)).decode()


def job_of(message: pb.Job) -> Job:
    """The job a message carries, from its ``json`` (every field)."""
    document: dict[str, Any] = orjson.loads(message.json)
    return job_from_json(document)


def log_line_message(line: LogLine) -> pb.LogLine:
    return pb.LogLine(
        job_id=line.job_id,
        seq=line.seq,
        attempt=line.attempt,
        stream=line.stream,
        text=line.text,
        at=timestamp(line.at),
    )


def log_line_of(message: pb.LogLine) -> LogLine:
    at = message.at.ToDatetime(tzinfo=UTC) if message.HasField("at") else datetime.now(UTC)
    return LogLine(message.job_id, message.attempt, message.seq, message.stream, message.text, at)


__all__ = [
    "attempt_error_message",
    "attempt_error_of",
    "datetime_of",
    "fill_job_message",
    "job_message",
    "job_of",
    "json_text",
    "json_value",
    "log_line_message",
    "log_line_of",
    "timestamp",
]
