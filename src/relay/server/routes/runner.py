"""The runner protocol's routes (relay-rs compatible): ``POST /enqueue``, ``GET /v1/next``,
``PATCH /v1/heartbeat``, ``DELETE /v1/complete``. The mapping and the fencing are in
:mod:`relay.server.runner`; storage trouble is 429 here (relay-rs clients retry on it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from relay.errors import DuplicateJobError
from relay.server import runner
from relay.server.auth import require
from relay.server.enqueue import check_names
from relay.server.errors import ApiError, json_response
from relay.server.limits import read_json
from relay.server.openapi import ANY_JSON_BODY, RUNNER_JOB_BODY
from relay.server.schemas import responses
from relay.server.scopes import Action
from relay.server.state import Auth, State

router = APIRouter(tags=["runner protocol"])
QueueParam = Annotated[str, Query(min_length=1, max_length=128, description="the queue")]
JobIdParam = Annotated[str, Query(min_length=1, max_length=255, description="the job's id")]
TokenParam = Annotated[
    str | None,
    Query(max_length=64, description=f"Relay extension: the {runner.LEASE_TOKEN_HEADER} of the claim"),
]


@router.post(
    "/enqueue",
    status_code=202,
    response_model=None,
    response_class=Response,
    openapi_extra=RUNNER_JOB_BODY,
    responses=responses({202: "accepted"}, 400, 403, 409, 413, 422, 429),
)
async def enqueue(request: Request, state: State, grants: Auth) -> Response:
    """Enqueue an ``external`` job for HTTP runners; 409 when a job with this id exists."""
    job = runner.new_job(await read_json(request, state.limits))
    require(grants, Action.ENQUEUE, job.queue)
    check_names(job, "")
    try:
        await state.storage.job_insert_many([job])
    except DuplicateJobError:
        existing = await state.storage.job_get(job.id or "")
        where = (
            f"in queue {existing.queue!r}"
            if existing is not None and grants.allows(Action.READ, existing.queue)
            else ""
        )
        message = f"job with id {job.id!r} already exists {where}".rstrip()
        raise ApiError(409, "duplicate_id", message, "id", {"job_id": job.id}) from None
    return Response(status_code=202)


@router.get(
    "/v1/next",
    response_model=None,
    responses=responses({200: runner.RunnerJobOut, 204: "no job is due"}, 403, 422, 429),
)
async def next_job(request: Request, queue: QueueParam, state: State, grants: Auth) -> Response:
    """Claim the next due ``external`` job of ``queue``: 200 with it, 204 when there is none."""
    require(grants, Action.WORK, queue)
    client = request.client.host if request.client is not None else "unknown"
    worker_id = f"runner:{grants.subject}@{client}" if grants.subject else f"runner@{client}"
    job = await runner.claim(state.storage, queue, worker_id)
    if job is None:
        return Response(status_code=204)
    return json_response(200, runner.runner_json(job), {runner.LEASE_TOKEN_HEADER: job.lease_token or ""})


@router.patch(
    "/v1/heartbeat",
    status_code=202,
    response_model=None,
    response_class=Response,
    openapi_extra=ANY_JSON_BODY,
    responses=responses({202: "lease extended"}, 400, 403, 404, 413, 422, 429),
)
async def heartbeat(
    request: Request,
    queue: QueueParam,
    job_id: JobIdParam,
    state: State,
    grants: Auth,
    lease_token: TokenParam = None,
) -> Response:
    """Extend the job's lease by its timeout and save the body as its state. 404 when the job is not
    running in ``queue`` (finished, reaped, or cancelled by an operator): stop working on it."""
    require(grants, Action.WORK, queue)
    body = await read_json(request, state.limits, allow_empty=True)
    await runner.heartbeat(state.storage, queue, job_id, body, lease_token)
    return Response(status_code=202)


@router.delete(
    "/v1/complete",
    response_model=None,
    response_class=Response,
    responses=responses({200: "completed"}, 403, 404, 422, 429),
)
async def complete(
    queue: QueueParam, job_id: JobIdParam, state: State, grants: Auth, lease_token: TokenParam = None
) -> Response:
    """Complete the job. 404 when it is not running in ``queue``."""
    require(grants, Action.WORK, queue)
    await runner.complete(state.storage, queue, job_id, lease_token)
    return Response(status_code=200)
