"""``/api/v1/jobs``: enqueue (one, or a batch), get, list, logs, cancel, retry."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from relay.client.wire import job_to_json, log_line_to_json
from relay.server.access import job_for, readable_queues
from relay.server.enqueue import enqueue_batch, enqueue_one
from relay.server.errors import ApiError, json_response
from relay.server.limits import read_json
from relay.server.openapi import JOB_DOCUMENT_BODY, JOB_DOCUMENTS_BODY
from relay.server.schemas import BatchOut, EnqueuedOut, JobOut, JobPageOut, LogsOut, responses
from relay.server.scopes import Action, Grants
from relay.server.state import Auth, ServerState, State
from relay.storage.params import ListParams, LogParams, RequeueParams
from relay.types import JSON, JobKind, JobState

router = APIRouter(prefix="/api/v1", tags=["jobs"])
MAX_SEQ = 2**63 - 1  # storage keeps sequence numbers in 64 bits

Limit = Annotated[int, Query(ge=1, le=1000, description="jobs per page")]
Cursor = Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")]


@router.post(
    "/jobs",
    status_code=201,
    response_model=None,
    openapi_extra=JOB_DOCUMENT_BODY,
    responses=responses({201: EnqueuedOut, 200: EnqueuedOut}, 400, 403, 409, 413, 422, 503),
    summary="Enqueue one job",
)
async def enqueue(request: Request, state: State, grants: Auth) -> Response:
    """Enqueue one job document: 201 with the job; 200 with the existing job when its idempotency key
    was used before for the same job; 409 when it was used for a different one."""
    status, body = await enqueue_one(state, grants, await read_json(request, state.limits))
    return json_response(status, body)


@router.post(
    "/jobs/batch",
    status_code=201,
    response_model=None,
    openapi_extra=JOB_DOCUMENTS_BODY,
    responses=responses({201: BatchOut, 200: BatchOut}, 400, 403, 409, 413, 422, 503),
    summary="Enqueue many jobs in one transaction",
)
async def enqueue_many(request: Request, state: State, grants: Auth) -> Response:
    """A JSON array of job documents, inserted in one transaction: all of them, or (on an invalid
    document, a taken id, a missing scope) none. 201 if any job was created, else 200."""
    status, body = await enqueue_batch(state, grants, await read_json(request, state.limits))
    return json_response(status, body)


@router.get(
    "/jobs",
    response_model=None,
    responses=responses({200: JobPageOut}, 403, 422, 503),
    summary="List jobs, newest first",
)
async def list_jobs(
    state: State,
    grants: Auth,
    job_state: Annotated[list[JobState] | None, Query(alias="state", description="repeatable")] = None,
    queue: Annotated[list[str] | None, Query(description="repeatable")] = None,
    kind: Annotated[list[JobKind] | None, Query(description="repeatable")] = None,
    text: Annotated[str | None, Query(max_length=200, description="in the id, a tag or the payload")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    params = ListParams(
        states=job_state or (), kinds=kind or (), text=text or None, limit=limit, cursor=cursor
    )
    return json_response(200, await list_page(state, grants, params, queue or []))


async def list_page(state: ServerState, grants: Grants, params: ListParams, queues: list[str]) -> JSON:
    """One page of jobs of the queues the token may read (and asked for)."""
    visible = await readable_queues(state.storage, grants, queues)
    if visible == []:
        return {"jobs": [], "next_cursor": None}  # an empty filter would mean "every queue"
    try:
        page = await state.storage.job_list(replace(params, queues=visible or ()))
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid_request", "not a cursor of a previous page", "query.cursor") from None
    return {"jobs": [job_to_json(job) for job in page.jobs], "next_cursor": page.next_cursor}


@router.get(
    "/jobs/{job_id:path}/logs",
    response_model=None,
    responses=responses({200: LogsOut}, 403, 404, 422, 503),
    summary="A job's output",
)
async def job_logs(
    job_id: str,
    state: State,
    grants: Auth,
    attempt: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="only this attempt")] = None,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ, description="only lines after this seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    await job_for(state.storage, grants, Action.READ, job_id)
    lines = await state.storage.job_logs(LogParams(job_id, attempt, after_seq, limit))
    last_seq = lines[-1].seq if lines else after_seq
    return json_response(200, {"lines": [log_line_to_json(line) for line in lines], "last_seq": last_seq})


@router.post(
    "/jobs/{job_id:path}/cancel",
    response_model=None,
    responses=responses({200: JobOut}, 403, 404, 409, 503),
    summary="Cancel a job",
)
async def cancel(job_id: str, state: State, grants: Auth) -> Response:
    """A waiting job is cancelled at once; a running one is flagged, and its worker stops it at its
    next heartbeat (the job stays running until then)."""
    await job_for(state.storage, grants, Action.ADMIN, job_id)
    return json_response(200, job_to_json(await state.storage.job_cancel(job_id)))


@router.post(
    "/jobs/{job_id:path}/retry",
    response_model=None,
    responses=responses({200: JobOut}, 403, 404, 409, 503),
    summary="Requeue a dead, failed or cancelled job",
)
async def retry(job_id: str, state: State, grants: Auth) -> Response:
    await job_for(state.storage, grants, Action.ADMIN, job_id)
    [job] = await state.storage.job_requeue(RequeueParams(job_id=job_id))
    return json_response(200, job_to_json(job))


@router.get(
    "/jobs/{job_id:path}",
    response_model=None,
    responses=responses({200: JobOut}, 403, 404, 503),
    summary="Get a job",
)
async def get_job(job_id: str, state: State, grants: Auth) -> Response:
    return json_response(200, job_to_json(await job_for(state.storage, grants, Action.READ, job_id)))
