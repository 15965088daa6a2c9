"""The dashboard's workflows: the definitions and recent runs (``/ui/workflows``), a run drawn as a graph
(``/ui/workflow-runs/{id}``), the JSON its script polls (``/ui/api/workflow-run?id=``), and the trigger,
cancel and retry actions.

Scopes are the API's (:mod:`relay.server.workflows`): a run is shown to a person who may read every
queue of its steps; its buttons appear only where their action would be allowed.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from relay.errors import InvalidWorkflowError, WorkflowNotFoundError
from relay.runtime.workflows import trigger
from relay.server.dashboard.context import DashboardContext, context_of, grants_of
from relay.server.dashboard.graph import layout, shown_state
from relay.server.dashboard.pages import feed_cursor
from relay.server.dashboard.render import iso, job_url, page, workflow_run_url
from relay.server.enqueue import check_job
from relay.server.errors import ApiError, json_response
from relay.server.scopes import Action, Grants
from relay.server.workflows import (
    definition_queues,
    may,
    readable_definitions,
    run_for,
    run_visible,
    step_queues,
)
from relay.storage.params import WorkflowListParams
from relay.storage.workflow_rules import Node, StepNow, to_retry
from relay.types import JSON, JobState, RunState, WorkflowRun
from relay.workflows.definitions import resolve_params, steps_for

Form = dict[str, str]
RUNS_PAGE = 25
PARAM_FIELD = "param."  # a trigger form's field for parameter NAME is "param.NAME"


def steps_done(run: WorkflowRun) -> int:
    return sum(1 for s in run.steps if s.state is JobState.COMPLETED)


def retryable(run: WorkflowRun) -> set[str]:
    """The steps the storage would let an operator retry now (``workflow_rules.to_retry``)."""
    nodes = [Node(s.name, s.depends_on, s.allow_failure) for s in run.steps]
    now = {s.name: StepNow(s.state, s.held) for s in run.steps}
    return {s.name for s in run.steps if s.state is not None and to_retry(nodes, now, s.name) is not None}


async def workflows_page(request: Request) -> HTMLResponse:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    definitions = readable_definitions(ctx.server.workflows, grants)
    name = request.query_params.get("workflow") or None
    cursor = request.query_params.get("cursor") or None
    try:
        found = await ctx.storage.workflow_list(WorkflowListParams(name, RUNS_PAGE, cursor))
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid_request", "not a cursor of a previous page", "query.cursor") from None
    runs = [r for r in found.runs if await run_visible(ctx.storage, grants, r)]
    return page(
        request,
        "workflows.html",
        nav="workflows",
        definitions=definitions,
        triggerable={d.name for d in definitions if may(grants, Action.ENQUEUE, definition_queues(d))},
        runs=runs,
        done={r.id: steps_done(r) for r in runs},
        workflow=name,
        next_cursor=found.next_cursor,
        param_field=PARAM_FIELD,
        feed_cursor=feed_cursor(ctx),
    )


async def _admin_steps(ctx: DashboardContext, grants: Grants, run: WorkflowRun) -> set[str]:
    """The steps whose queue this person may act on."""
    if grants.allows_all(Action.ADMIN):
        return {s.name for s in run.steps}
    queues = await step_queues(ctx.storage, run)
    return {name for name, queue in queues.items() if grants.allows(Action.ADMIN, queue)}


async def run_page(request: Request) -> HTMLResponse:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    run = await run_for(ctx.storage, grants, Action.READ, request.path_params["run_id"])
    admin = await _admin_steps(ctx, grants, run)
    return page(
        request,
        "workflow_run.html",
        nav="workflows",
        run=run,
        graph=layout(run),
        shown={s.name: shown_state(s) for s in run.steps},
        done=steps_done(run),
        can_cancel=run.state is RunState.RUNNING and admin == {s.name for s in run.steps},
        can_retry=retryable(run) & admin,
        feed_cursor=feed_cursor(ctx),
    )


async def run_data(request: Request) -> Response:
    """The run as its page's script reads it: every value is text for ``textContent``."""
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    run = await run_for(ctx.storage, grants, Action.READ, request.query_params.get("id", ""))
    admin = await _admin_steps(ctx, grants, run)
    can_retry = retryable(run) & admin
    steps: list[JSON] = [
        {
            "name": s.name,
            "state": shown_state(s),
            "job_id": s.job_id,
            "url": job_url(s.job_id),
            "attempt": s.attempt,
            "started_at": iso(s.started_at),
            "finished_at": iso(s.finished_at),
            "can_retry": s.name in can_retry,
        }
        for s in run.steps
    ]
    body: dict[str, JSON] = {
        "id": run.id,
        "state": run.state.value,
        "done": steps_done(run),
        "total": len(run.steps),
        "finished_at": iso(run.finished_at),
        "can_cancel": run.state is RunState.RUNNING and admin == {s.name for s in run.steps},
        "steps": steps,
    }
    return json_response(200, body)


# -- actions (dispatched by relay.server.dashboard.actions, after its origin and CSRF checks) ----------


def _back(form: Form, default: str, notice: str) -> Response:
    from relay.server.dashboard.actions import back  # actions imports this module: import it late

    return back(form, default, notice)


async def cancel_run(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
    run = await run_for(ctx.storage, grants, Action.ADMIN, form.get("run_id", ""))
    await ctx.storage.workflow_cancel(run.id)
    return _back(form, workflow_run_url(run.id), "run-cancelled")


async def retry_step(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
    step = form.get("step", "")
    run = await run_for(ctx.storage, grants, Action.ADMIN, form.get("run_id", ""), step)
    if all(s.name != step for s in run.steps):
        raise ApiError(404, "not_found", f"Run {run.id!r} has no step named {step!r}.")
    await ctx.storage.workflow_retry_step(run.id, step)  # InvalidTransitionError: a 409 page
    return _back(form, workflow_run_url(run.id), "step-retried")


async def trigger_run(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
    """Start a run from the trigger form: an empty parameter field takes the parameter's default."""
    name = form.get("workflow", "")
    definition = ctx.server.workflows.get(name)
    queues = set() if definition is None else definition_queues(definition)
    if definition is None or not may(grants, Action.READ, queues):
        raise WorkflowNotFoundError(name)
    params = {k[len(PARAM_FIELD) :]: v for k, v in form.items() if k.startswith(PARAM_FIELD) and v != ""}
    try:
        for step in steps_for(definition, resolve_params(definition, params)):
            check_job(grants, step.job, ctx.server.settings.allow_shell, f"steps.{step.name}")
    except InvalidWorkflowError as exc:
        raise ApiError(422, exc.code, f"The run was not started: {exc}", exc.field) from None
    started = await trigger(ctx.storage, definition, params)
    return _back({}, workflow_run_url(started.run.id), "run-started")
