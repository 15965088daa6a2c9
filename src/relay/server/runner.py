"""The runner protocol (DESIGN.md section 6), wire-compatible with relay-rs clients.

A relay-rs job is a Relay ``external`` job:

=================  ============================================================================
relay-rs field     Relay job
=================  ============================================================================
``id``             the job's id (ids are unique across all queues in Relay)
``queue``          its queue
``timeout``        its ``lease``: seconds from the claim or the last heartbeat until the reaper
                   returns it to the queue (whole seconds, at least 1)
``max_retries``    its ``max_retries``: it runs at most ``1 + max_retries`` times, then it is dead
``persist_data``   kept in ``metadata.persist_data`` and handed back; every Relay job is persisted
``payload``        its payload (any JSON; null when absent)
``state``          its checkpoint: set at enqueue, replaced by each heartbeat's body
=================  ============================================================================

The protocol carries no lease token, so the server looks up the job's current token and acts with it:
fencing for HTTP runners is by job id and running state. A runner whose job was reaped and claimed
again by another runner can therefore still heartbeat or complete it. A runner that wants exact
fencing reads the ``Relay-Lease-Token`` header of ``GET /v1/next`` and passes it back as the
``lease_token`` query parameter (an extension relay-rs clients ignore).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relay.jobs.models import QUEUE_PATTERN, validate_model
from relay.server.errors import ApiError
from relay.server.limits import NO_BODY
from relay.storage.base import Storage
from relay.storage.params import ClaimParams, FinishItem, HeartbeatItem
from relay.types import JSON, Job, JobKind, JobState, NewJob, Outcome

LEASE_TOKEN_HEADER = "Relay-Lease-Token"
QueueName = Annotated[str, Field(min_length=1, max_length=128, pattern=QUEUE_PATTERN)]


class RunnerJob(BaseModel):
    """The body of ``POST /enqueue``. Unknown fields are ignored, as relay-rs does."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: Annotated[str, Field(min_length=1, max_length=255)]
    queue: QueueName
    timeout: Annotated[
        int, Field(ge=1, le=2**31 - 1, description="seconds without a heartbeat before a retry")
    ]
    persist_data: bool = False
    max_retries: Annotated[int, Field(ge=0, le=1000)] = 0
    payload: Any = None
    state: Any = None

    @model_validator(mode="before")
    @classmethod
    def _null_means_absent(cls, data: Any) -> Any:
        # relay-rs reads null as "not given" for its optional fields.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class RunnerJobOut(BaseModel):
    """The body of ``GET /v1/next``: ``state`` is absent when the job has none."""

    id: str
    queue: str
    timeout: int
    persist_data: bool
    max_retries: int
    payload: Any
    state: Any = None


def new_job(body: JSON) -> NewJob:
    """The external job for a relay-rs enqueue body; InvalidJobError names the field that is wrong."""
    spec = validate_model(RunnerJob, body, "")
    return NewJob(
        kind=JobKind.EXTERNAL,
        payload=spec.payload,
        queue=spec.queue,
        id=spec.id,
        max_retries=spec.max_retries,
        lease=float(spec.timeout),
        checkpoint=spec.state,
        metadata={"persist_data": spec.persist_data},
    )


def runner_json(job: Job) -> dict[str, JSON]:
    body: dict[str, JSON] = {
        "id": job.id,
        "queue": job.queue,
        "timeout": math.ceil(job.lease),  # relay-rs reads whole seconds; never shorten the window
        "persist_data": bool(job.metadata.get("persist_data", False)),
        "max_retries": job.max_retries,
        "payload": job.payload,
    }
    if job.checkpoint is not None:
        body["state"] = job.checkpoint
    return body


def _not_found(queue: str, job_id: str) -> ApiError:
    return ApiError(
        404, "not_found", f"job with id {job_id!r} not found in queue {queue!r}", detail={"job_id": job_id}
    )


async def claim(storage: Storage, queue: str, worker_id: str) -> Job | None:
    jobs = await storage.job_claim(ClaimParams([queue], worker_id, 1, (JobKind.EXTERNAL,)))
    return jobs[0] if jobs else None


async def _lease_token(storage: Storage, queue: str, job_id: str, given: str | None) -> str:
    """The token to act with: the one given, or the job's current one while it runs in ``queue``."""
    job = await storage.job_get(job_id)
    running = (
        job is not None
        and job.queue == queue
        and job.kind is JobKind.EXTERNAL
        and job.state is JobState.RUNNING
    )
    if job is None or not running or job.lease_token is None:
        raise _not_found(queue, job_id)
    return given or job.lease_token


async def heartbeat(storage: Storage, queue: str, job_id: str, state: JSON, given_token: str | None) -> None:
    """Extend the lease and save ``state`` (unless it is NO_BODY). A job an operator cancelled is
    cancelled now, and the runner is told 404: the job is no longer its to work on."""
    token = await _lease_token(storage, queue, job_id, given_token)
    save = state is not NO_BODY
    item = HeartbeatItem(job_id, token, checkpoint=state if save else None, save_checkpoint=save)
    result = await storage.job_heartbeat_many([item])
    if job_id in result.cancel_requested:
        await storage.job_finish_many([FinishItem(job_id, token, Outcome.CANCELLED)])
        raise ApiError(404, "not_found", f"job {job_id!r} was cancelled", detail={"job_id": job_id})
    if job_id not in result.extended:
        raise _not_found(queue, job_id)


async def complete(storage: Storage, queue: str, job_id: str, given_token: str | None) -> None:
    token = await _lease_token(storage, queue, job_id, given_token)
    [result] = await storage.job_finish_many([FinishItem(job_id, token, Outcome.COMPLETED)])
    if result.lease_lost:
        raise _not_found(queue, job_id)
