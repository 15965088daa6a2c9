"""What the dashboard's scripts read, as JSON under ``/ui/api/`` (authenticated by the login cookie,
which ``EventSource`` and ``fetch`` send by themselves, unlike a bearer header):

- ``events``: server-sent events, the API's ``queue`` and ``job`` events from the change feed, plus a
  ``throughput`` event (the charts' data) after each change and every 10 seconds;
- ``job?id=``: a job as the list and the job page show it; ``logs?id=&after_seq=``: its log lines;
- ``queue?name=``: a queue as the API returns it, plus its limits in words (the queue page);
- ``schedules``: the schedules' runs and paused flags (the schedules page);
- ``throughput``, ``workers``.

Every value is data for ``textContent``: the scripts never parse HTML from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from relay.client.wire import log_line_to_json, queue_to_json, worker_to_json
from relay.server.access import job_for
from relay.server.auth import require_all
from relay.server.dashboard.context import DashboardContext, context_of, grants_of
from relay.server.dashboard.flow import limits_view
from relay.server.dashboard.pages import attempts, find_queue, readable_schedules
from relay.server.dashboard.render import iso, job_url, summary
from relay.server.dashboard.throughput import BUCKET_SECONDS
from relay.server.errors import ApiError, json_response
from relay.server.routes.events import sse
from relay.server.scopes import Action, Grants
from relay.storage.params import LogParams
from relay.types import JSON, Job, JobState, Schedule

MAX_SEQ = 2**63 - 1
LOG_LIMIT = 1000


def job_view(job: Job, grants: Grants) -> dict[str, JSON]:
    admin = grants.allows(Action.ADMIN, job.queue)
    return {
        "id": job.id,
        "url": job_url(job.id),
        "queue": job.queue,
        "kind": job.kind.value,
        "state": job.state.value,
        "attempt": job.attempt,
        "max_attempts": job.max_retries + 1,
        "summary": summary(job),
        "tags": list(job.tags),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "run_at": iso(job.run_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "worker_id": job.worker_id,
        "progress": job.progress,
        "cancel_requested": job.cancel_requested,
        "held": job.held,
        "result": job.result,
        "final": job.is_final,
        "can_retry": admin and job.state in JobState.requeueable(),
        "can_cancel": admin and not job.is_final,
        "attempts": [_attempt_view(row) for row in attempts(job)],
    }


def _attempt_view(row: dict[str, JSON]) -> dict[str, JSON]:
    error = row["error"]
    return {"number": row["number"], "outcome": row["outcome"], "error": error and error.to_json()}


async def job(request: Request) -> Response:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    found = await job_for(ctx.storage, grants, Action.READ, request.query_params.get("id", ""))
    return json_response(200, job_view(found, grants))


def _int_param(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > high:
        raise ApiError(422, "invalid_request", f"{name} must be a whole number up to {high}", f"query.{name}")
    return int(raw)


async def logs(request: Request) -> Response:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    found = await job_for(ctx.storage, grants, Action.READ, request.query_params.get("id", ""))
    after = _int_param(request, "after_seq", 0, MAX_SEQ)
    lines = await ctx.storage.job_logs(LogParams(found.id, after_seq=after, limit=LOG_LIMIT))
    body = {
        "lines": [log_line_to_json(line) for line in lines],
        "last_seq": lines[-1].seq if lines else after,
        "more": len(lines) == LOG_LIMIT,
        "state": found.state.value,
    }
    return json_response(200, body)


async def queue(request: Request) -> Response:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    found = await find_queue(ctx, grants, request.query_params.get("name", ""))
    now = ctx.server.now()
    body = {"queue": queue_to_json(found, now), "view": limits_view(found).to_json(), "now": iso(now)}
    return json_response(200, body)


def schedule_view(schedule: Schedule, grants: Grants) -> dict[str, JSON]:
    return {
        "name": schedule.name,
        "paused": schedule.paused,
        "next_run_at": iso(schedule.next_run_at),
        "last_run_at": iso(schedule.last_run_at),
        "last_job_id": schedule.last_job_id,
        "last_job_url": None if schedule.last_job_id is None else job_url(schedule.last_job_id),
        "can_admin": grants.allows(Action.ADMIN, schedule.job.queue),
    }


async def schedules(request: Request) -> Response:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    found = await readable_schedules(ctx, grants)
    body = {"schedules": [schedule_view(s, grants) for s in found], "now": iso(ctx.server.now())}
    return json_response(200, body)


async def throughput(request: Request) -> Response:
    ctx, grants = context_of(request), grants_of(request)
    if ctx.tracker is None:
        raise ApiError(503, "events_disabled", "this server's change feed is off (RELAY_EVENTS_INTERVAL=0)")
    ctx.tracker.catch_up()
    snapshot = ctx.tracker.snapshot(lambda name: grants.allows(Action.READ, name))
    return json_response(200, snapshot)


async def workers(request: Request) -> Response:
    ctx, grants = context_of(request), grants_of(request)
    await ctx.open()
    require_all(grants, Action.READ)
    found = await ctx.storage.worker_list()
    return json_response(200, {"workers": [worker_to_json(w) for w in found], "now": iso(ctx.server.now())})


async def _stream(ctx: DashboardContext, grants: Grants, resume: int | None) -> AsyncIterator[bytes]:
    """Like the API's event stream, plus ``throughput``; see :mod:`relay.server.routes.events`."""
    feed, tracker = ctx.feed, ctx.tracker
    assert feed is not None
    assert tracker is not None

    def visible(queue: str) -> bool:
        return grants.allows(Action.READ, queue)

    yield b"retry: 3000\n\n"
    if resume is None:
        yield sse("reset", {"reason": "the events after this cursor are gone: refetch what you show"})
        resume = feed.last_seq
    for queue in feed.queue_snapshot():
        if visible(str(queue["name"])):
            yield sse("queue", queue)
    last = resume
    while not feed.closed:
        events = feed.after(last)
        if events:
            for event in events:
                if visible(event.queue):
                    yield sse(event.type, event.data, feed.event_id(event))
            last = events[-1].seq
            continue  # look again before waiting: more may have come while these were sent
        tracker.catch_up()
        yield sse("throughput", tracker.snapshot(visible))
        # Wakes at the next change, or after a bucket: the charts move on while nothing happens.
        await feed.wait(BUCKET_SECONDS)


async def events(request: Request) -> Response:
    ctx, grants = context_of(request), grants_of(request)
    if not grants.allows_any(Action.READ):
        raise ApiError(403, "forbidden", "this token lacks any read scope", detail={"scope": "read:*"})
    if ctx.feed is None:
        raise ApiError(503, "events_disabled", "this server's change feed is off (RELAY_EVENTS_INTERVAL=0)")
    given = request.headers.get("last-event-id") or request.query_params.get("cursor")
    resume = ctx.feed.resume_point(given[:64] if given else None)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_stream(ctx, grants, resume), media_type="text/event-stream", headers=headers)
