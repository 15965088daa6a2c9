"""``/api/v1/workflows`` and ``/api/v1/workflow-runs``: the definitions the server loaded at its start,
triggering a run, reading, listing and cancelling runs, and retrying a failed step.

Scopes are those of the queues a run's steps run on (see :mod:`relay.server.workflows`). Runs are the
JSON of :func:`relay.client.wire.workflow_run_to_json`, which ``relay workflow ... --json`` prints too.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from relay.client.wire import workflow_definition_to_json, workflow_run_to_json
from relay.errors import InvalidWorkflowError, WorkflowNotFoundError
from relay.runtime.workflows import trigger
from relay.server.enqueue import check_job
from relay.server.errors import ApiError, json_response
from relay.server.limits import NO_BODY, read_json
from relay.server.openapi import WORKFLOW_TRIGGER_BODY
from relay.server.schemas import WorkflowRunOut, WorkflowRunsOut, WorkflowsOut, responses
from relay.server.scopes import Action
from relay.server.state import Auth, State
from relay.server.workflows import definition_queues, may, readable_definitions, run_for, run_visible
from relay.storage.params import WorkflowListParams
from relay.types import JSON
from relay.workflows.definitions import NAME_PATTERN, resolve_params, steps_for

router = APIRouter(prefix="/api/v1", tags=["workflows"])
WorkflowName = Annotated[str, Path(min_length=1, max_length=128, pattern=NAME_PATTERN.pattern)]
RunId = Annotated[str, Path(min_length=1, max_length=255)]  # ":path" in routes: an id may hold "/"
StepName = Annotated[str, Path(min_length=1, max_length=128)]


@router.get("/workflows", response_model=None, responses=responses({200: WorkflowsOut}, 403))
async def list_workflows(state: State, grants: Auth) -> Response:
    """The definitions loaded at the server's start (``RELAY_WORKFLOWS_DIR``, ``--workflows DIR``) whose
    every step's queue the token may read, by name."""
    found = readable_definitions(state.workflows, grants)
    return json_response(200, {"workflows": [workflow_definition_to_json(d) for d in found]})


def _trigger_params(document: JSON) -> dict[str, str]:
    if document is NO_BODY:
        return {}
    if not isinstance(document, dict):
        raise InvalidWorkflowError("body", 'expected an object such as {"params": {"ref": "main"}}')
    for key in document:
        if key != "params":
            raise InvalidWorkflowError(key, "unknown field (expected only params)")
    params = document.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidWorkflowError("params", "expected an object of parameters by name")
    return cast(dict[str, str], params)  # resolve_params refuses a value that is not a string


@router.post(
    "/workflows/{name}/runs",
    status_code=201,
    response_model=None,
    openapi_extra=WORKFLOW_TRIGGER_BODY,
    responses=responses({201: WorkflowRunOut}, 400, 403, 404, 413, 415, 422, 503),
)
async def trigger_workflow(request: Request, name: WorkflowName, state: State, grants: Auth) -> Response:
    """Start a run: one job per step, in one transaction. An unknown parameter, a missing required one
    or a value that is not a string is 422 (``invalid_workflow``, ``field`` names it), and starts
    nothing. Needs ``enqueue`` on the queue of every step."""
    if not grants.allows_any(Action.ENQUEUE):
        raise ApiError(403, "forbidden", "this token lacks any enqueue scope", detail={"scope": "enqueue:*"})
    definition = state.workflows.get(name)
    queues = set() if definition is None else definition_queues(definition)
    if definition is None or not (may(grants, Action.READ, queues) or may(grants, Action.ENQUEUE, queues)):
        raise WorkflowNotFoundError(name)
    params = _trigger_params(await read_json(request, state.limits, allow_empty=True))
    # The jobs as they would be enqueued: scopes and the shell policy apply to each, as to a document.
    for step in steps_for(definition, resolve_params(definition, params)):
        check_job(grants, step.job, state.settings.allow_shell, f"steps.{step.name}")
    started = await trigger(state.storage, definition, params)
    return json_response(201, workflow_run_to_json(started.run))


@router.get("/workflow-runs", response_model=None, responses=responses({200: WorkflowRunsOut}, 403, 422, 503))
async def list_runs(
    state: State,
    grants: Auth,
    workflow: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Runs newest first, of one workflow or of all. A token that may not read every queue sees only
    the runs it may (so a page can hold fewer than ``limit``; follow ``next_cursor`` all the same)."""
    if not grants.allows_any(Action.READ):
        raise ApiError(403, "forbidden", "this token lacks any read scope", detail={"scope": "read:*"})
    try:
        page = await state.storage.workflow_list(WorkflowListParams(workflow or None, limit, cursor or None))
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid_request", "not a cursor of a previous page", "query.cursor") from None
    runs = [r for r in page.runs if await run_visible(state.storage, grants, r)]
    body = {"runs": [workflow_run_to_json(r) for r in runs], "next_cursor": page.next_cursor}
    return json_response(200, body)


@router.get(
    "/workflow-runs/{run_id:path}",
    response_model=None,
    responses=responses({200: WorkflowRunOut}, 403, 404, 422, 503),
)
async def get_run(run_id: RunId, state: State, grants: Auth) -> Response:
    """The run and every step as its job is now."""
    return json_response(200, workflow_run_to_json(await run_for(state.storage, grants, Action.READ, run_id)))


@router.post(
    "/workflow-runs/{run_id:path}/cancel",
    response_model=None,
    responses=responses({200: WorkflowRunOut}, 403, 404, 422, 503),
)
async def cancel_run(run_id: RunId, state: State, grants: Auth) -> Response:
    """Cancel the run: its waiting steps at once, its running steps at their next heartbeat. Needs
    ``admin`` on the queue of every step."""
    await run_for(state.storage, grants, Action.ADMIN, run_id)
    return json_response(200, workflow_run_to_json(await state.storage.workflow_cancel(run_id)))


@router.post(
    "/workflow-runs/{run_id:path}/steps/{step}/retry",
    response_model=None,
    responses=responses({200: WorkflowRunOut}, 403, 404, 409, 422, 503),
)
async def retry_step(run_id: RunId, step: StepName, state: State, grants: Auth) -> Response:
    """Bring a failed (or cancelled) step back: its job is requeued, and the steps its failure
    cancelled wait again. A step that has not failed is 409 (``invalid_state``), and nothing changes.
    Needs ``admin`` on the step's queue."""
    run = await run_for(state.storage, grants, Action.ADMIN, run_id, step)
    if all(s.name != step for s in run.steps):
        message = f"run {run_id!r} has no step named {step!r}"
        raise ApiError(404, "not_found", message, "step", detail={"run_id": run_id, "step": step})
    return json_response(200, workflow_run_to_json(await state.storage.workflow_retry_step(run_id, step)))
