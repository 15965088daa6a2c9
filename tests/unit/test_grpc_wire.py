"""Messages of relay.v1 carry a job exactly as the HTTP API shows it, its times to the microsecond."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from relay.client.grpc_wire import job_message, job_of
from relay.client.wire import job_to_json
from relay.types import AttemptError, Backoff, BackoffKind, Job, JobKind, JobState

AT = datetime(2026, 12, 7, 12, 30, 0, tzinfo=UTC)


def a_job(when: datetime) -> Job:
    return Job(
        id="j-1",
        queue="emails",
        kind=JobKind.SHELL,
        payload={"command": "echo", "args": ["hi"]},
        state=JobState.RUNNING,
        priority=5,
        attempt=2,
        max_retries=3,
        backoff=Backoff(BackoffKind.EXPONENTIAL, 1.0, 3600.0),
        timeout=30.0,
        lease=30.0,
        run_at=when,
        created_at=when - timedelta(seconds=1),
        updated_at=when,
        started_at=when + timedelta(microseconds=7),
        lease_expires_at=when + timedelta(seconds=30),
        errors=(AttemptError(1, "ExitCode", "exit code 1", when, exit_code=1),),
    )


@pytest.mark.parametrize(
    "when", [AT, AT + timedelta(microseconds=1), datetime(1969, 12, 31, 23, 59, 59, 5, UTC)]
)
def test_a_job_message_is_the_http_json_and_its_typed_fields(when: datetime) -> None:
    job = a_job(when)
    message = job_message(job)
    assert orjson.loads(message.json) == job_to_json(job)
    assert job_of(message) == job
    expected = Timestamp()
    expected.FromDatetime(job.started_at or AT)
    assert (message.started_at.seconds, message.started_at.nanos) == (expected.seconds, expected.nanos)
    assert not message.HasField("finished_at")
    assert job_of(job_message(replace(job, finished_at=when))).finished_at == when
