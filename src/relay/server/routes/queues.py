"""``/api/v1/queues`` and ``/api/v1/workers``: counts by state, limits, pause and resume; the live
workers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from relay.client.wire import queue_to_json, worker_to_json
from relay.jobs.limits import parse_limits
from relay.jobs.models import QUEUE_PATTERN
from relay.server.access import readable_queues
from relay.server.auth import require, require_all
from relay.server.errors import ApiError, json_response
from relay.server.limits import read_json
from relay.server.openapi import LIMITS_DOCUMENT_BODY
from relay.server.schemas import QueueOut, QueuesOut, QueueStateOut, WorkersOut, responses
from relay.server.scopes import Action
from relay.server.state import Auth, ServerState, State
from relay.types import JSON

router = APIRouter(prefix="/api/v1", tags=["queues"])
QueueName = Annotated[str, Path(min_length=1, max_length=128, pattern=QUEUE_PATTERN)]


@router.get("/queues", response_model=None, responses=responses({200: QueuesOut}, 403, 503))
async def list_queues(state: State, grants: Auth) -> Response:
    """Every queue the token may read: jobs by state, whether it is paused, its oldest pending job."""
    visible = await readable_queues(state.storage, grants, [])
    queues = [q for q in await state.storage.queue_list() if visible is None or q.name in visible]
    now = state.now()
    return json_response(200, {"queues": [queue_to_json(q, now) for q in queues]})


async def _queue_json(state: ServerState, name: str) -> JSON:
    for queue in await state.storage.queue_list():
        if queue.name == name:
            return queue_to_json(queue, state.now())
    raise ApiError(404, "not_found", f"no queue named {name!r}", detail={"queue": name})


@router.get("/queues/{name}", response_model=None, responses=responses({200: QueueOut}, 403, 404, 422, 503))
async def get_queue(name: QueueName, state: State, grants: Auth) -> Response:
    """One queue: jobs by state, paused or not, its limits and the tokens its bucket holds. A queue is
    known once it held a job, was paused, or was given limits."""
    require(grants, Action.READ, name)
    return json_response(200, await _queue_json(state, name))


@router.put(
    "/queues/{name}/limits",
    response_model=None,
    openapi_extra=LIMITS_DOCUMENT_BODY,
    responses=responses({200: QueueOut}, 400, 403, 413, 415, 422, 503),
)
async def set_queue_limits(request: Request, name: QueueName, state: State, grants: Auth) -> Response:
    """Replace the queue's limits with these (every field left out is no limit: ``{}`` clears them
    all). Workers obey them at their next claim. An invalid field is 422, naming it, and changes
    nothing."""
    require(grants, Action.ADMIN, name)
    limits = parse_limits(await read_json(request, state.limits))
    await state.storage.queue_limits_set(name, limits)
    return json_response(200, await _queue_json(state, name))


async def _set_paused(state: State, grants: Auth, name: str, paused: bool) -> Response:
    require(grants, Action.ADMIN, name)
    await (state.storage.queue_pause(name) if paused else state.storage.queue_resume(name))
    return json_response(200, {"name": name, "paused": paused})


@router.post(
    "/queues/{name}/pause",
    response_model=None,
    responses=responses({200: QueueStateOut}, 403, 422, 503),
)
async def pause_queue(name: QueueName, state: State, grants: Auth) -> Response:
    """Workers (and runners) claim nothing from a paused queue; running jobs go on."""
    return await _set_paused(state, grants, name, True)


@router.post(
    "/queues/{name}/resume",
    response_model=None,
    responses=responses({200: QueueStateOut}, 403, 422, 503),
)
async def resume_queue(name: QueueName, state: State, grants: Auth) -> Response:
    return await _set_paused(state, grants, name, False)


@router.get(
    "/workers",
    response_model=None,
    responses=responses({200: WorkersOut}, 403, 503),
    tags=["workers"],
)
async def list_workers(state: State, grants: Auth) -> Response:
    """The registered worker processes. Workers serve many queues and name the jobs they run, so this
    needs ``read:*``. HTTP runners are not workers: they do not appear here."""
    require_all(grants, Action.READ)
    workers = await state.storage.worker_list()
    return json_response(200, {"workers": [worker_to_json(w) for w in workers]})
