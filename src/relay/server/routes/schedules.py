"""``/api/v1/schedules``: periodic jobs (cron schedules): list, get, create or redefine, remove, pause,
resume.

A schedule's queue is the queue of its job: reading a schedule needs ``read`` on it, and defining,
removing, pausing or resuming one needs ``admin`` on it (on every queue its job chains into, too). A
schedule of a queue the token cannot read is "not found", as a job is.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from relay.client.wire import schedule_to_json
from relay.errors import InvalidScheduleError, ScheduleNotFoundError
from relay.jobs.cron import describe_spec
from relay.runtime import schedules
from relay.server.auth import forbidden, require
from relay.server.enqueue import check_job
from relay.server.errors import ApiError, json_response
from relay.server.limits import read_json
from relay.server.openapi import SCHEDULE_DOCUMENT_BODY
from relay.server.schemas import ScheduleOut, SchedulesOut, responses
from relay.server.scopes import Action, Grants
from relay.server.state import Auth, State
from relay.storage.base import Storage
from relay.types import JSON, Schedule

router = APIRouter(prefix="/api/v1", tags=["schedules"])
ScheduleName = Annotated[str, Path(min_length=1, max_length=255, pattern=schedules.NAME_PATTERN.pattern)]


def schedule_json(schedule: Schedule) -> dict[str, JSON]:
    return schedule_to_json(schedule) | {"description": describe_spec(schedule.spec, schedule.timezone)}


async def schedule_for(storage: Storage, grants: Grants, action: Action, name: str) -> Schedule:
    """The schedule, if ``action`` is granted on its queue; like :func:`relay.server.access.job_for`,
    one of a queue the token cannot read is not found (404), one it may read but not act on is 403."""
    if not grants.allows_any(action):
        raise forbidden(action, "*")
    schedule = await storage.schedule_get(name)
    queue = "" if schedule is None else schedule.job.queue
    if schedule is None or not (grants.allows(Action.READ, queue) or grants.allows(action, queue)):
        raise ScheduleNotFoundError(name)
    require(grants, action, queue)
    return schedule


@router.get("/schedules", response_model=None, responses=responses({200: SchedulesOut}, 403, 503))
async def list_schedules(state: State, grants: Auth) -> Response:
    """Every schedule the token may read (by name), with its next and last run, in words too."""
    if not grants.allows_any(Action.READ):
        raise forbidden(Action.READ, "*")
    listed = [s for s in await state.storage.schedule_list() if grants.allows(Action.READ, s.job.queue)]
    return json_response(200, {"schedules": [schedule_json(s) for s in listed]})


@router.get(
    "/schedules/{name}", response_model=None, responses=responses({200: ScheduleOut}, 403, 404, 422, 503)
)
async def get_schedule(name: ScheduleName, state: State, grants: Auth) -> Response:
    return json_response(200, schedule_json(await schedule_for(state.storage, grants, Action.READ, name)))


@router.put(
    "/schedules/{name}",
    status_code=201,
    response_model=None,
    openapi_extra=SCHEDULE_DOCUMENT_BODY,
    responses=responses({201: ScheduleOut, 200: ScheduleOut}, 400, 403, 413, 415, 422, 503),
)
async def put_schedule(request: Request, name: ScheduleName, state: State, grants: Auth) -> Response:
    """Create the schedule (201), or redefine it (200: it keeps its paused flag and last run, and its
    next run unless the spec or timezone changed). The body's ``name`` may be left out. A bad spec,
    timezone, catch-up policy or job is 422, naming the field, and stores nothing."""
    if not grants.allows_any(Action.ADMIN):
        raise forbidden(Action.ADMIN, "*")
    document = await read_json(request, state.limits)
    if isinstance(document, dict):
        given = document.get("name")
        if given is not None and given != name:
            raise InvalidScheduleError("name", f"must be the name in the path, {name!r}, or left out")
        document = {**document, "name": name}
    definition = schedules.schedule_from_document(document)
    check_job(grants, definition.job, state.settings.allow_shell, "job", Action.ADMIN)
    existing = await state.storage.schedule_get(name)
    if existing is not None and not grants.allows(Action.ADMIN, existing.job.queue):
        if grants.allows(Action.READ, existing.job.queue):
            raise forbidden(Action.ADMIN, existing.job.queue)
        raise ApiError(403, "forbidden", f"schedule {name!r} belongs to a queue this token cannot act on")
    [saved] = await schedules.save(state.storage, [definition], state.now())
    return json_response(201 if existing is None else 200, schedule_json(saved))


@router.delete(
    "/schedules/{name}",
    status_code=204,
    response_model=None,
    response_class=Response,
    responses=responses({204: "removed"}, 403, 404, 422, 503),
)
async def remove_schedule(name: ScheduleName, state: State, grants: Auth) -> Response:
    """Remove the schedule; the jobs it enqueued stay."""
    await schedule_for(state.storage, grants, Action.ADMIN, name)
    if not await state.storage.schedule_remove(name):
        raise ScheduleNotFoundError(name)  # removed meanwhile
    return Response(status_code=204)


async def _set_paused(state: State, grants: Auth, name: str, paused: bool) -> Response:
    schedule = await schedule_for(state.storage, grants, Action.ADMIN, name)
    if schedule.paused != paused:  # resuming a running schedule must not move its next run
        schedule = await schedules.set_paused(state.storage, name, paused, state.now())
    return json_response(200, schedule_json(schedule))


@router.post(
    "/schedules/{name}/pause",
    response_model=None,
    responses=responses({200: ScheduleOut}, 403, 404, 422, 503),
)
async def pause_schedule(name: ScheduleName, state: State, grants: Auth) -> Response:
    """No job is enqueued for the ticks that come while it is paused."""
    return await _set_paused(state, grants, name, True)


@router.post(
    "/schedules/{name}/resume",
    response_model=None,
    responses=responses({200: ScheduleOut}, 403, 404, 422, 503),
)
async def resume_schedule(name: ScheduleName, state: State, grants: Auth) -> Response:
    """Run again from the next tick after now: the ticks that passed while it was paused are not run."""
    return await _set_paused(state, grants, name, False)
