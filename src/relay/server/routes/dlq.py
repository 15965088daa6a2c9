"""``/api/v1/dlq``: the dead-letter queue (jobs in state ``dead``): list, requeue, purge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from relay.client.wire import job_to_json
from relay.errors import InvalidTransitionError
from relay.server.access import job_for
from relay.server.auth import require, require_all
from relay.server.errors import json_response
from relay.server.routes.jobs import Cursor, Limit, list_page
from relay.server.schemas import JobOut, JobPageOut, PurgedOut, RequeuedOut, responses
from relay.server.scopes import Action, Grants
from relay.server.state import Auth, State
from relay.storage.params import ListParams, PurgeParams, RequeueParams
from relay.types import JobState

router = APIRouter(prefix="/api/v1/dlq", tags=["dlq"])
QueueFilter = Annotated[str | None, Query(max_length=128, description="only this queue")]


def _require_admin(grants: Grants, queue: str | None) -> None:
    # Acting on every queue at once needs admin on every queue: "admin:*".
    if queue is None:
        require_all(grants, Action.ADMIN)
    else:
        require(grants, Action.ADMIN, queue)


@router.get("", response_model=None, responses=responses({200: JobPageOut}, 403, 422, 503))
async def dlq_list(
    state: State,
    grants: Auth,
    queue: Annotated[list[str] | None, Query(description="repeatable")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Dead jobs, newest first, with their errors."""
    params = ListParams(states=(JobState.DEAD,), limit=limit, cursor=cursor)
    return json_response(200, await list_page(state, grants, params, queue or []))


@router.post("/requeue", response_model=None, responses=responses({200: RequeuedOut}, 403, 503))
async def dlq_requeue_all(state: State, grants: Auth, queue: QueueFilter = None) -> Response:
    """Requeue every dead job (of ``queue``, if given): pending again, with one more attempt."""
    _require_admin(grants, queue)
    jobs = await state.storage.job_requeue(RequeueParams(states=(JobState.DEAD,), queue=queue))
    return json_response(200, {"requeued": len(jobs), "jobs": [job.id for job in jobs]})


@router.post(
    "/{job_id:path}/requeue",
    response_model=None,
    responses=responses({200: JobOut}, 403, 404, 409, 503),
)
async def dlq_requeue(job_id: str, state: State, grants: Auth) -> Response:
    """Requeue one dead job. A job in another state is a 409 (``/jobs/{id}/retry`` requeues failed
    and cancelled jobs too)."""
    job = await job_for(state.storage, grants, Action.ADMIN, job_id)
    if job.state is not JobState.DEAD:
        raise InvalidTransitionError(job_id, job.state.value, "requeue from the dead-letter queue")
    [requeued] = await state.storage.job_requeue(RequeueParams(job_id=job_id))
    return json_response(200, job_to_json(requeued))


@router.delete("", response_model=None, responses=responses({200: PurgedOut}, 403, 503))
async def dlq_purge(state: State, grants: Auth, queue: QueueFilter = None) -> Response:
    """Delete dead jobs (of ``queue``, if given) and their logs, for good."""
    _require_admin(grants, queue)
    purged = await state.storage.job_purge(PurgeParams(states=(JobState.DEAD,), queue=queue))
    return json_response(200, {"purged": purged})
