"""The dashboard's actions: ``POST /ui/actions/{name}`` with a form, answered by a redirect (303) back
to the page the person came from, with a notice.

Each action checks, in order: the origin and CSRF token (:func:`read_form`), the person's token, the
``admin`` scope on the queue it touches (the API's own checks: :func:`job_for`, :func:`require`; a
schedule's queue is its job's), and the job's state. Bulk actions on the dead-letter queue first answer
a confirmation page that says how many jobs they would touch; only its button (``confirm=yes``) acts.
A limits form that ``relay.jobs.limits`` refuses is answered with the queue page again (422), a message
next to each wrong field, and nothing stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from relay.errors import InvalidTransitionError, ScheduleNotFoundError
from relay.runtime.schedules import set_paused
from relay.server.access import job_for
from relay.server.auth import require, require_all
from relay.server.dashboard import workflows
from relay.server.dashboard.context import DashboardContext, context_of, grants_of
from relay.server.dashboard.flow import check_limits, submitted
from relay.server.dashboard.forms import local_path, read_form
from relay.server.dashboard.pages import render_queue, valid_queue_name
from relay.server.dashboard.render import job_url, page, queue_url, schedule_url
from relay.server.errors import ApiError
from relay.server.scopes import Action, Grants
from relay.storage.params import PurgeParams, RequeueParams
from relay.types import JobState

Form = dict[str, str]
Handler = Callable[[Request, DashboardContext, Grants, Form], Awaitable[Response]]


def back(form: Form, default: str, notice: str, count: int | None = None) -> RedirectResponse:
    """A 303 to the page named by the form's ``next`` (a local path only), with the notice added."""
    target = urlsplit(local_path(form.get("next"), default))
    query = [(k, v) for k, v in parse_qsl(target.query) if k not in ("notice", "n")]
    query.append(("notice", notice))
    if count is not None:
        query.append(("n", str(count)))
    fragment = f"#{target.fragment}" if target.fragment else ""
    return RedirectResponse(f"{target.path}?{urlencode(query)}{fragment}", status_code=303)


def _job_id(form: Form) -> str:
    job_id = form.get("job_id", "")
    if not job_id:
        raise ApiError(422, "invalid_request", "which job? (no job_id)", "form.job_id")
    return job_id


async def retry(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
    job = await job_for(ctx.storage, grants, Action.ADMIN, _job_id(form))
    await ctx.storage.job_requeue(RequeueParams(job_id=job.id))
    return back(form, job_url(job.id), "retried")


async def cancel(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
    job = await job_for(ctx.storage, grants, Action.ADMIN, _job_id(form))
    await ctx.storage.job_cancel(job.id)
    return back(form, job_url(job.id), "cancelled")


async def requeue(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
    """Requeue one job from the dead-letter queue (a job that is no longer dead is a 409)."""
    job = await job_for(ctx.storage, grants, Action.ADMIN, _job_id(form))
    if job.state is not JobState.DEAD:
        raise InvalidTransitionError(job.id, job.state.value, "requeue from the dead-letter queue")
    await ctx.storage.job_requeue(RequeueParams(job_id=job.id))
    return back(form, "/ui/dlq", "requeued")


async def _dead_count(ctx: DashboardContext, queue: str | None) -> int:
    queues = await ctx.storage.queue_list()
    return sum(q.counts.get(JobState.DEAD, 0) for q in queues if queue is None or q.name == queue)


def _bulk(action: str) -> Handler:
    """requeue-all or purge, of one queue (``admin`` on it) or of every queue (``admin:*``)."""

    async def handle(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
        queue = form.get("queue") or None
        if queue is None:
            require_all(grants, Action.ADMIN)
        else:
            require(grants, Action.ADMIN, queue)
        if form.get("confirm") != "yes":
            count = await _dead_count(ctx, queue)
            next_path = local_path(form.get("next"), "/ui/dlq")
            return page(
                request, "confirm.html", nav="dlq", action=action, queue=queue, count=count, next=next_path
            )
        if action == "purge":
            purged = await ctx.storage.job_purge(PurgeParams(states=(JobState.DEAD,), queue=queue))
            return back(form, "/ui/dlq", "purged", purged)
        jobs = await ctx.storage.job_requeue(RequeueParams(states=(JobState.DEAD,), queue=queue))
        return back(form, "/ui/dlq", "requeued-all", len(jobs))

    return handle


async def _queue_name(ctx: DashboardContext, form: Form) -> str:
    """The form's ``queue``: one storage holds, or a name the API would accept for a new one."""
    name = form.get("queue", "")
    known = name in {q.name for q in await ctx.storage.queue_list()}
    # The API's rule for names, except that a queue storage already holds can always be acted on.
    if not known and not valid_queue_name(name):
        raise ApiError(422, "invalid_request", "not a queue name", "form.queue")
    return name


def _pausing(paused: bool) -> Handler:
    async def handle(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
        name = await _queue_name(ctx, form)
        require(grants, Action.ADMIN, name)
        await (ctx.storage.queue_pause(name) if paused else ctx.storage.queue_resume(name))
        return back(form, "/", "paused" if paused else "resumed")

    return handle


async def limits(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
    """Replace a queue's limits with the form's (an empty field: no limit)."""
    name = await _queue_name(ctx, form)
    require(grants, Action.ADMIN, name)
    values = submitted(form)
    checked, errors = check_limits(values)
    if checked is None:
        return await render_queue(request, name, values=values, errors=errors, status=422)
    await ctx.storage.queue_limits_set(name, checked)
    return back(form, queue_url(name), "limits-set")


def _schedule_pausing(paused: bool) -> Handler:
    async def handle(request: Request, ctx: DashboardContext, grants: Grants, form: Form) -> Response:
        name = form.get("schedule", "")
        schedule = await ctx.storage.schedule_get(name) if name else None
        # Like a job: a schedule of a queue this token cannot read is not found, so it does not leak.
        if schedule is None or not (
            grants.allows(Action.READ, schedule.job.queue) or grants.allows(Action.ADMIN, schedule.job.queue)
        ):
            raise ApiError(404, "not_found", f"There is no schedule named {name!r}.")
        require(grants, Action.ADMIN, schedule.job.queue)
        try:
            await set_paused(ctx.storage, schedule.name, paused, ctx.server.now())
        except ScheduleNotFoundError:  # removed since it was read
            raise ApiError(404, "not_found", f"There is no schedule named {name!r}.") from None
        return back(form, schedule_url(schedule.name), "schedule-paused" if paused else "schedule-resumed")

    return handle


ACTIONS: dict[str, Handler] = {
    "retry": retry,
    "cancel": cancel,
    "requeue": requeue,
    "requeue-all": _bulk("requeue-all"),
    "purge": _bulk("purge"),
    "pause": _pausing(True),
    "resume": _pausing(False),
    "limits": limits,
    "schedule-pause": _schedule_pausing(True),
    "schedule-resume": _schedule_pausing(False),
    "workflow-trigger": workflows.trigger_run,
    "workflow-cancel": workflows.cancel_run,
    "workflow-retry": workflows.retry_step,
}


async def act(request: Request) -> Response:
    handler = ACTIONS.get(request.path_params["name"])
    if handler is None:
        raise ApiError(404, "not_found", "no such action")
    form = await read_form(request)  # origin and CSRF first, before anything else is looked at
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    return await handler(request, ctx, grants, form)
