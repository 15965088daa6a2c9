"""Rendering: the Jinja2 environment (autoescape always on: every value from a job is text, never
markup), the filters the templates use, and :func:`page`, which answers one template.

No template ever marks a value ``|safe``; a test greps for it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

from relay import __version__
from relay.server.dashboard.context import context_of
from relay.server.dashboard.security import CSRF_FIELD, SESSION_COOKIE, new_session_id, session_of, set_cookie
from relay.types import JSON, Job, JobKind, JobState, NewJob

SUMMARY_CHARS = 160

NOTICES = {
    "retried": "The job was requeued: it is pending again.",
    "cancelled": "The job was cancelled (a running job stops at its worker's next heartbeat).",
    "requeued": "The dead job was requeued: it is pending again.",
    "requeued-all": "{n} dead job(s) requeued.",
    "purged": "{n} dead job(s) purged.",
    "paused": "The queue is paused: workers claim nothing from it.",
    "resumed": "The queue is resumed.",
    "limits-set": "The queue's limits are saved: workers obey them at their next claim.",
    "schedule-paused": "The schedule is paused: it enqueues nothing until it is resumed.",
    "schedule-resumed": "The schedule is resumed from its next tick (the ticks it missed are not run).",
    "run-started": "The run is started.",
    "run-cancelled": "The run is cancelled: its waiting steps now, its running ones at their next heartbeat.",
    "step-retried": "The step is requeued; the steps its failure cancelled wait again.",
    "logged-out": "You are logged out.",
}


def when(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def duration(seconds: float | None) -> str:
    """``4s``, ``3m 12s``, ``2h 5m``, ``3d 4h``."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            rest = (s % size) // sub_size
            return f"{s // size}{unit} {rest}{sub}" if rest else f"{s // size}{unit}"
    return f"{s}s"


def age(value: datetime | None, now: datetime) -> str:
    return "—" if value is None else duration((now - value).total_seconds())


def until(value: datetime | None, now: datetime) -> str:
    """``in 4m``; ``due 5s ago`` for a tick that has come and has not been enqueued yet."""
    if value is None:
        return "—"
    seconds = (value - now).total_seconds()
    return f"in {duration(seconds)}" if seconds > 0 else f"due {duration(-seconds)} ago"


def pretty(value: JSON) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def jsonattr(value: JSON) -> str:
    """Compact JSON for a ``data-`` attribute: a plain string, so autoescape escapes its quotes."""
    return orjson.dumps(value).decode()


def _shell_line(payload: dict[str, JSON]) -> str:
    argv = payload.get("argv")
    # A "shell": true command is shown as written, not as the /bin/sh -c argv that runs it.
    if payload.get("shell") or not isinstance(argv, list):
        return str(payload.get("command", ""))
    return shlex.join(str(a) for a in argv)


def _task_call(payload: dict[str, JSON]) -> str:
    args = [orjson.dumps(a).decode() for a in payload.get("args") or []]
    args += [f"{k}={orjson.dumps(v).decode()}" for k, v in (payload.get("kwargs") or {}).items()]
    return f"{payload.get('task', '?')}({', '.join(args)})"


def summary(job: Job | NewJob) -> str:
    """One line that says what the job runs: the command line, the task call, or the payload."""
    payload = job.payload
    if job.kind is JobKind.SHELL and isinstance(payload, dict):
        text = _shell_line(payload)
    elif job.kind is JobKind.TASK and isinstance(payload, dict):
        text = _task_call(payload)
    else:
        text = orjson.dumps(payload).decode()
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def job_url(job_id: str) -> str:
    # quote() with safe="" turns "/" into %2F, so that an id with slashes stays one path segment.
    return "/ui/jobs/" + quote(job_id, safe="")


def queue_url(name: str) -> str:
    return "/ui/queues/" + quote(name, safe="")


def schedule_url(name: str) -> str:
    """The schedules page, at this schedule's row."""
    return "/ui/schedules#" + quote(schedule_anchor(name), safe="")


def workflow_run_url(run_id: str) -> str:
    return "/ui/workflow-runs/" + quote(run_id, safe="")


def workflows_url(workflow: str | None = None) -> str:
    return "/ui/workflows" + (f"?{urlencode({'workflow': workflow})}" if workflow else "")


def schedule_anchor(name: str) -> str:
    return f"schedule-{name}"


def url(path: str, params: Mapping[str, str | list[str] | None]) -> str:
    pairs = [
        (k, item)
        for k, v in params.items()
        if v is not None
        for item in (v if isinstance(v, list) else [v])
        if item != ""
    ]
    return f"{path}?{urlencode(pairs)}" if pairs else path


def here(request: Request) -> str:
    """This page's path and query, without a notice: where an action on it comes back to."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("notice", "n")]
    return request.url.path + (f"?{urlencode(query)}" if query else "")


def notice(request: Request) -> str | None:
    """The message of an action's redirect: a code from a fixed list (never text from the URL)."""
    template = NOTICES.get(request.query_params.get("notice", ""))
    if template is None:
        return None
    count = request.query_params.get("n", "0")
    return template.format(n=int(count) if count.isdigit() else 0)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("relay.server.dashboard", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when, iso=iso, duration=duration, pretty=pretty, summary=summary, jsonattr=jsonattr
    )
    env.globals.update(
        job_url=job_url,
        queue_url=queue_url,
        schedule_url=schedule_url,
        schedule_anchor=schedule_anchor,
        workflow_run_url=workflow_run_url,
        workflows_url=workflows_url,
        url=url,
        states=[s.value for s in JobState],
        version=__version__,
        age=age,
        until=until,
    )
    return env


ENV = _environment()


def page(request: Request, template: str, status: int = 200, **values: object) -> HTMLResponse:
    """Render ``template`` with what every page needs: the CSRF token of this session, the notice, who
    is logged in. A visitor without a session cookie gets one here."""
    ctx = context_of(request)
    session = session_of(request)
    fresh = session is None
    session = session or new_session_id()
    values.setdefault("now", ctx.server.now())
    values.setdefault("nav", "")
    body = ENV.get_template(template).render(
        here=here(request),
        csrf_field=CSRF_FIELD,
        csrf=ctx.csrf.token(session),
        notice=notice(request),
        auth_on=ctx.auth_on,
        live=ctx.feed is not None,
        **values,
    )
    response = HTMLResponse(body, status, headers={"Cache-Control": "no-store"})
    if fresh:
        set_cookie(request, response, SESSION_COOKIE, session)
    return response
