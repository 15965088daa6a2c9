"""The shapes of the API's responses, as pydantic models: they exist for the OpenAPI document.

Handlers build their JSON with :mod:`relay.client.wire` (the codec the client reads back) and declare
these models as the responses' schemas; the schemathesis test checks that the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from relay.types import (
    BackoffKind,
    CatchUp,
    FailurePolicy,
    JobKind,
    JobState,
    OrderingDead,
    RunState,
    UniqueWhile,
)


class ErrorDetail(BaseModel):
    code: str = Field(description="stable and machine-readable: invalid_job, not_found, forbidden, ...")
    message: str
    field: str | None = Field(description="the dotted path of the offending field, if there is one")
    detail: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class BackoffOut(BaseModel):
    kind: BackoffKind
    base: float
    max: float


class AttemptErrorOut(BaseModel):
    attempt: int
    type: str
    message: str
    at: datetime
    traceback: str | None
    exit_code: int | None
    stderr_tail: str | None


class ChainedJob(BaseModel):
    """A job enqueued by an outcome (on_success / on_failure), in its canonical stored form."""

    kind: JobKind
    payload: Any
    queue: str
    id: str | None
    priority: int
    run_at: datetime | None
    delay: float
    max_retries: int
    backoff: BackoffOut
    timeout: float | None
    lease: float
    idempotency_key: str | None
    on_success: ChainedJob | None
    on_failure: ChainedJob | None
    tags: list[str]
    metadata: dict[str, Any]
    checkpoint: Any
    rate_key: str | None = None
    concurrency_key: str | None = None
    ordering_key: str | None = None
    unique_for: float | None = Field(None, description="seconds the idempotency key holds")
    unique_while: UniqueWhile = UniqueWhile.STORED
    workflow_run_id: str | None = Field(None, description="set by storage for a workflow run's step")
    workflow_step: str | None = None


class JobOut(BaseModel):
    id: str
    queue: str
    kind: JobKind
    payload: Any
    state: JobState
    priority: int
    attempt: int = Field(description="attempts so far: 0 until first claimed")
    max_retries: int
    backoff: BackoffOut
    timeout: float | None
    lease: float = Field(description="the heartbeat window, seconds")
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None
    on_success: ChainedJob | None
    on_failure: ChainedJob | None
    tags: list[str]
    metadata: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    worker_id: str | None
    cancel_requested: bool
    progress: float | None
    checkpoint: Any
    result: Any
    errors: list[AttemptErrorOut]
    parent_id: str | None
    rate_key: str | None
    concurrency_key: str | None
    ordering_key: str | None
    held: bool = Field(description="waiting behind an earlier job of its ordering key")
    unique_until: datetime | None = Field(description="when the idempotency key stops holding")
    unique_while: UniqueWhile
    workflow_run_id: str | None = Field(description="the workflow run this job is a step of")
    workflow_step: str | None = Field(description="its step's name in that run")


_DUPLICATE = "true when the idempotency key returned an existing job (then created is false)"


class EnqueuedOut(BaseModel):
    created: bool = Field(description="false when the idempotency key returned an existing job")
    duplicate: bool = Field(description=_DUPLICATE)
    job: JobOut


class BatchItemOut(BaseModel):
    created: bool
    duplicate: bool = Field(description=_DUPLICATE)
    job: JobOut | None = Field(description="null when this document's idempotency key conflicts")
    error: ErrorDetail | None


class BatchOut(BaseModel):
    jobs: list[BatchItemOut]


class JobPageOut(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")


class LogLineOut(BaseModel):
    job_id: str
    attempt: int
    seq: int
    stream: str
    text: str
    at: datetime


class LogsOut(BaseModel):
    lines: list[LogLineOut]
    last_seq: int = Field(description="pass as after_seq to get only newer lines")


class LimitsOut(BaseModel):
    """A queue's limits, in the flat form ``PUT /api/v1/queues/{name}/limits`` takes; null: no limit."""

    rate: float | None = Field(description="jobs a second from the whole queue")
    burst: int | None = Field(description="the queue's bucket size")
    key_rate: float | None = Field(description="jobs a second per rate_key")
    key_burst: int | None
    concurrency: int | None = Field(description="jobs running at once in the queue, fleet-wide")
    key_concurrency: int | None = Field(description="jobs running at once per concurrency_key")
    ordering_dead: OrderingDead


class QueueOut(BaseModel):
    name: str
    paused: bool
    counts: dict[str, int] = Field(description="jobs by state; every state is present")
    oldest_pending_at: datetime | None
    oldest_pending_age_seconds: float | None
    limits: LimitsOut
    tokens: float | None = Field(description="what the queue's bucket holds now; null without a rate")


class QueuesOut(BaseModel):
    queues: list[QueueOut]


class QueueStateOut(BaseModel):
    name: str
    paused: bool


class ScheduleOut(BaseModel):
    name: str
    schedule: str = Field(description="a cron expression, an alias such as @hourly, or 'every 30s'")
    description: str = Field(description="the schedule in words, for people")
    timezone: str
    catch_up: CatchUp
    paused: bool
    job: ChainedJob = Field(description="the template of each tick's job")
    next_run_at: datetime | None = Field(description="the next tick; null when there is none")
    last_run_at: datetime | None = Field(description="the tick of the last job enqueued")
    last_job_id: str | None
    created_at: datetime
    updated_at: datetime


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]


class WorkflowParamOut(BaseModel):
    name: str
    default: str | None
    required: bool = Field(description="true when it has no default: a trigger must give it")


class WorkflowStepDefinitionOut(BaseModel):
    name: str
    depends_on: list[str]
    runs: str | None = Field(description="the task's name, or the command line")
    queue: str


class WorkflowOut(BaseModel):
    """A workflow definition, as the server loaded it at its start."""

    name: str
    description: str | None
    on_failure: FailurePolicy
    params: list[WorkflowParamOut]
    steps: list[WorkflowStepDefinitionOut]
    source: str = Field(description="the file it was loaded from")


class WorkflowsOut(BaseModel):
    workflows: list[WorkflowOut]


class WorkflowStepOut(BaseModel):
    name: str
    job_id: str
    depends_on: list[str]
    allow_failure: bool
    state: JobState | None = Field(description="its job's state; null when the job was pruned")
    held: bool = Field(description="waiting for the steps it depends on")
    attempt: int
    result: Any
    started_at: datetime | None
    finished_at: datetime | None


class WorkflowRunOut(BaseModel):
    id: str
    workflow: str
    state: RunState = Field(description="derived from the steps' states")
    policy: FailurePolicy
    params: dict[str, Any]
    cancelled: bool
    created_at: datetime
    finished_at: datetime | None
    steps: list[WorkflowStepOut]


class WorkflowRunsOut(BaseModel):
    runs: list[WorkflowRunOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_heartbeat_at: datetime
    running: list[str]
    running_count: int


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class RequeuedOut(BaseModel):
    requeued: int
    jobs: list[str]


class PurgedOut(BaseModel):
    purged: int


class StatusOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    durability: dict[str, Any] | None = Field(
        None, description="what the storage can lose with its settings (Redis: persistence, eviction)"
    )


def responses(success: dict[int, Any], *errors: int) -> dict[int | str, dict[str, Any]]:
    """An operation's responses for its OpenAPI entry: ``success`` maps a status to a model, a
    description, or a whole response object; ``errors`` are the error statuses it can answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, value in success.items():
        if isinstance(value, type) and issubclass(value, BaseModel):
            out[status] = {"model": value, "description": "success"}
        else:
            out[status] = {"description": value} if isinstance(value, str) else value
    for status in errors:
        out[status] = {"model": ErrorBody, "description": _ERROR_TEXT.get(status, "error")}
    return out


_ERROR_TEXT = {
    400: "the body is not JSON",
    401: "no valid bearer token",
    403: "the token lacks the scope",
    404: "no such job, queue, schedule, workflow or workflow run",
    409: "conflict with the job's state, its id or its idempotency key",
    415: "the body is not sent as application/json",
    413: "the body (or the batch) is too large",
    422: "invalid input; field names it",
    429: "storage unavailable: retry later",
    503: "storage unavailable",
}
