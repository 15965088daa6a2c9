"""The dashboard's pages (GET): the overview, a queue, the job list, a job, the dead-letter queue, the
schedules, the workers.

Every page reads what it shows through the storage seam's operator operations, and only ever a page
of jobs: queue counts come from ``queue_list``, lists from ``job_list`` with a limit and the storage
cursor, so a page costs the same with a hundred jobs or a hundred thousand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from relay.client.wire import job_to_json
from relay.jobs.cron import describe_spec
from relay.jobs.models import QUEUE_PATTERN
from relay.server.access import job_for, readable_queues
from relay.server.auth import forbidden, require, require_all
from relay.server.dashboard.chains import find_children
from relay.server.dashboard.context import DashboardContext, context_of, grants_of
from relay.server.dashboard.flow import CATCH_UP_WORDS, compact_parts, form_values, limits_view
from relay.server.dashboard.render import page
from relay.server.dashboard.throughput import only
from relay.server.errors import ApiError
from relay.server.scopes import Action, Grants
from relay.storage.params import JobPage, ListParams, LogParams
from relay.types import Job, JobKind, JobState, QueueInfo, Schedule

PAGE_SIZES = (25, 50, 100, 200)
LOG_PAGE = 1000  # log lines in the page itself; the browser fetches the rest, then tails
MAX_TEXT = 200
_LAST_ATTEMPT_OUTCOMES = (JobState.RUNNING, JobState.COMPLETED, JobState.CANCELLED)


def feed_cursor(ctx: DashboardContext) -> str:
    """Where the page's event stream resumes: no change between rendering and connecting is lost."""
    return "" if ctx.feed is None else f"{ctx.feed.epoch}-{ctx.feed.last_seq}"


async def _visible_queues(ctx: DashboardContext, grants: Grants) -> list[QueueInfo]:
    visible = await readable_queues(ctx.storage, grants, [])
    return [q for q in await ctx.storage.queue_list() if visible is None or q.name in visible]


async def overview(request: Request) -> HTMLResponse:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    queues = await _visible_queues(ctx, grants)
    names = {q.name for q in queues}
    workers = await ctx.storage.worker_list() if grants.allows_all(Action.READ) else None
    totals = {s.value: sum(q.counts.get(s, 0) for q in queues) for s in JobState}
    throughput = None if ctx.tracker is None else ctx.tracker.snapshot(only(names))
    return page(
        request,
        "overview.html",
        nav="overview",
        queues=queues,
        limit_parts={q.name: compact_parts(q) for q in queues},
        totals=totals,
        workers=workers,
        throughput=throughput,
        admin={q.name for q in queues if grants.allows(Action.ADMIN, q.name)},
        feed_cursor=feed_cursor(ctx),
    )


@dataclass
class JobFilters:
    """The job list's filters, from the query string (so that every view has a URL)."""

    states: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    kind: str = ""
    text: str = ""
    limit: int = 50
    cursor: str | None = None

    @classmethod
    def from_request(cls, request: Request) -> JobFilters:
        q = request.query_params
        states = [s for s in q.getlist("state") if s]
        bad = [s for s in states if s not in JobState.__members__.values()]
        if bad:
            raise ApiError(422, "invalid_request", f"unknown state {bad[0]!r}", "query.state")
        kind = q.get("kind", "")
        if kind and kind not in JobKind.__members__.values():
            raise ApiError(422, "invalid_request", f"unknown kind {kind!r}", "query.kind")
        limit = int(q["limit"]) if q.get("limit", "").isdigit() else 50
        return cls(
            states=states,
            queues=[n for n in q.getlist("queue") if n][:20],
            kind=kind,
            text=q.get("text", "").strip()[:MAX_TEXT],
            limit=limit if limit in PAGE_SIZES else 50,
            cursor=q.get("cursor") or None,
        )

    def query(self, **changes: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "state": self.states,
            "queue": self.queues,
            "kind": self.kind,
            "text": self.text,
        }
        values["limit"] = None if self.limit == 50 else str(self.limit)
        return values | changes

    def list_params(self, queues: list[str] | None) -> ListParams:
        return ListParams(
            states=tuple(JobState(s) for s in self.states),
            queues=tuple(queues or ()),
            kinds=(JobKind(self.kind),) if self.kind else (),
            text=self.text or None,
            limit=self.limit,
            cursor=self.cursor,
        )


async def list_jobs(ctx: DashboardContext, grants: Grants, filters: JobFilters) -> JobPage:
    """One page of the jobs the person may read (and asked for)."""
    visible = await readable_queues(ctx.storage, grants, filters.queues)
    if visible == []:
        return JobPage([], None)  # an empty queue filter would mean "every queue"
    try:
        return await ctx.storage.job_list(filters.list_params(visible))
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid_request", "not a cursor of a previous page", "query.cursor") from None


async def jobs(request: Request) -> HTMLResponse:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    filters = JobFilters.from_request(request)
    result = await list_jobs(ctx, grants, filters)
    queue_names = [q.name for q in await _visible_queues(ctx, grants)]
    return page(
        request,
        "jobs.html",
        nav="jobs",
        filters=filters,
        jobs=result.jobs,
        next_cursor=result.next_cursor,
        queue_names=queue_names,
        kinds=[k.value for k in JobKind],
        page_sizes=PAGE_SIZES,
        feed_cursor=feed_cursor(ctx),
    )


def attempts(job: Job) -> list[dict[str, Any]]:
    """One row per attempt, newest first: its error, or how it ended when it did not fail."""
    errors = {e.attempt: e for e in job.errors}
    rows: list[dict[str, Any]] = []
    for number in range(max(job.attempt, max(errors, default=0)), 0, -1):
        error = errors.get(number)
        outcome = "failed" if error is not None else "ended"
        if error is None and number == job.attempt and job.state in _LAST_ATTEMPT_OUTCOMES:
            outcome = job.state.value
        rows.append({"number": number, "outcome": outcome, "error": error})
    return rows


async def job_page(request: Request) -> HTMLResponse:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    job = await job_for(ctx.storage, grants, Action.READ, request.path_params["job_id"])
    lines = await ctx.storage.job_logs(LogParams(job.id, limit=LOG_PAGE))
    parent = await ctx.storage.job_get(job.parent_id) if job.parent_id else None
    if parent is not None and not grants.allows(Action.READ, parent.queue):
        parent = None  # shown as an id only: its queue is not readable with this token
    children = await find_children(ctx.storage, job)
    return page(
        request,
        "job.html",
        nav="jobs",
        job=job,
        document=job_to_json(job),
        lines=lines,
        more_lines=len(lines) == LOG_PAGE,
        last_seq=lines[-1].seq if lines else 0,
        attempts=attempts(job),
        parent=parent,
        children=[c for c in children.jobs if grants.allows(Action.READ, c.queue)],
        children_complete=children.complete,
        admin=grants.allows(Action.ADMIN, job.queue),
        final=job.is_final,
        requeueable=job.state in JobState.requeueable(),
        schedule=_schedule_of(job),
        feed_cursor=feed_cursor(ctx),
    )


def _schedule_of(job: Job) -> dict[str, Any] | None:
    """The schedule whose tick enqueued ``job`` (its metadata says so), with the tick."""
    name, tick = job.metadata.get("schedule"), job.metadata.get("tick")
    if not isinstance(name, str) or not isinstance(tick, str):
        return None
    try:
        at: datetime | None = datetime.fromisoformat(tick)
    except ValueError:
        at = None
    return {"name": name, "tick": at, "tick_text": tick}


async def dlq(request: Request) -> HTMLResponse:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    queue = request.query_params.get("queue") or None
    cursor = request.query_params.get("cursor") or None
    filters = JobFilters(states=[JobState.DEAD.value], queues=[queue] if queue else [], cursor=cursor)
    result = await list_jobs(ctx, grants, filters)
    queues = await _visible_queues(ctx, grants)
    dead = {q.name: q.counts.get(JobState.DEAD, 0) for q in queues}
    return page(
        request,
        "dlq.html",
        nav="dlq",
        queue=queue,
        cursor=cursor,
        jobs=result.jobs,
        next_cursor=result.next_cursor,
        dead=dead,
        total=dead.get(queue, 0) if queue else sum(dead.values()),
        admin_all=grants.allows_all(Action.ADMIN),
        admin={name for name in dead if grants.allows(Action.ADMIN, name)},
        feed_cursor=feed_cursor(ctx),
    )


async def workers(request: Request) -> HTMLResponse:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    require_all(grants, Action.READ)  # workers serve many queues and name the jobs they run
    found = sorted(await ctx.storage.worker_list(), key=lambda w: (w.host, w.pid, w.id))
    return page(request, "workers.html", nav="workers", workers=found, feed_cursor=feed_cursor(ctx))


async def find_queue(ctx: DashboardContext, grants: Grants, name: str) -> QueueInfo:
    """The queue named ``name``, if this person may read it (403 otherwise). A queue storage does not
    know yet (a schedule's, before its first tick) is empty; a name no queue could have is 404."""
    require(grants, Action.READ, name)
    for queue in await ctx.storage.queue_list():
        if queue.name == name:
            return queue
    if not valid_queue_name(name):
        raise ApiError(404, "not_found", f"There is no queue named {name!r}.")
    return QueueInfo(name, paused=False, counts={})


def valid_queue_name(name: str) -> bool:
    """The API's rule for a queue's name."""
    return 0 < len(name) <= 128 and re.fullmatch(QUEUE_PATTERN, name) is not None


async def render_queue(
    request: Request,
    name: str,
    *,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """A queue's page; after a refused limits form, with what was typed and a message per field."""
    ctx, grants = context_of(request), grants_of(request)
    queue = await find_queue(ctx, grants, name)
    schedules = [s for s in await ctx.storage.schedule_list() if s.job.queue == queue.name]
    return page(
        request,
        "queue.html",
        status=status,
        nav="queue",
        queue=queue,
        view=limits_view(queue),
        values=values if values is not None else form_values(queue.limits),
        errors=errors or {},
        admin=grants.allows(Action.ADMIN, queue.name),
        schedules=[schedule_row(s) for s in schedules],
        feed_cursor=feed_cursor(ctx),
    )


async def queue_page(request: Request) -> HTMLResponse:
    await context_of(request).open()
    return await render_queue(request, request.path_params["name"])


def schedule_row(schedule: Schedule) -> dict[str, Any]:
    return {
        "schedule": schedule,
        "description": describe_spec(schedule.spec, schedule.timezone),
        "catch_up": CATCH_UP_WORDS[schedule.catch_up],
    }


async def readable_schedules(ctx: DashboardContext, grants: Grants) -> list[Schedule]:
    """Every schedule whose job's queue this person may read, by name."""
    if not grants.allows_any(Action.READ):
        raise forbidden(Action.READ, "*")
    found = await ctx.storage.schedule_list()
    return sorted((s for s in found if grants.allows(Action.READ, s.job.queue)), key=lambda s: s.name)


async def schedules(request: Request) -> HTMLResponse:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    found = await readable_schedules(ctx, grants)
    return page(
        request,
        "schedules.html",
        nav="schedules",
        rows=[schedule_row(s) for s in found],
        admin={s.job.queue for s in found if grants.allows(Action.ADMIN, s.job.queue)},
        feed_cursor=feed_cursor(ctx),
    )
