"""The dashboard's own ASGI app: its routes, and how errors look (an HTML page for a person, JSON for the
scripts under ``/ui/api/``).

=================================  ==========================================================
``GET /``                          the overview: queues, their counts, throughput, workers
``GET /ui/queues/{name}``          a queue: its counts, limits and what they use, the limits form
``GET /ui/jobs``                   jobs, filtered by state, queue, kind and text, paged
``GET /ui/jobs/{id}``              a job: its document, attempts and errors, logs, chain
``GET /ui/dlq``                    the dead-letter queue
``GET /ui/schedules``              the schedules, their next and last runs
``GET /ui/workers``                the registered workers
``GET /ui/workflows``              the workflow definitions and the latest runs
``GET /ui/workflow-runs/{id}``     a run: its steps as a graph, live
``GET|POST /ui/login``,            the token form (auth on)
``POST /ui/logout``
``POST /ui/actions/{name}``        retry, cancel, requeue, requeue-all, purge, pause, resume,
                                   limits, schedule-pause, schedule-resume, workflow-trigger,
                                   workflow-cancel, workflow-retry
``GET /ui/api/...``                data for the scripts (:mod:`relay.server.dashboard.data`)
``GET /ui/static/...``             CSS, JS and icons shipped in the package
=================================  ==========================================================
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from relay.errors import RelayError
from relay.server.dashboard import actions, data, login, pages, workflows
from relay.server.dashboard.context import DashboardContext, LoginRequired
from relay.server.dashboard.render import page
from relay.server.errors import ApiError, error_response, from_relay_error

STATIC = Path(__file__).parent / "static"
API_PREFIX = "/ui/api/"
STATIC_PREFIX = "/ui/static/"


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path == "/ui" or path.startswith("/ui/")


def _routes() -> list[BaseRoute]:
    return [
        Route("/", pages.overview),
        Route("/ui", lambda request: RedirectResponse("/", status_code=308)),
        Route("/ui/jobs", pages.jobs),
        Route("/ui/jobs/{job_id:path}", pages.job_page),
        Route("/ui/queues/{name:path}", pages.queue_page),
        Route("/ui/dlq", pages.dlq),
        Route("/ui/schedules", pages.schedules),
        Route("/ui/workers", pages.workers),
        Route("/ui/workflows", workflows.workflows_page),
        Route("/ui/workflow-runs/{run_id:path}", workflows.run_page),
        Route("/ui/login", login.login_form, methods=["GET"]),
        Route("/ui/login", login.login, methods=["POST"]),
        Route("/ui/logout", login.logout, methods=["POST"]),
        Route("/ui/actions/{name}", actions.act, methods=["POST"]),
        Route("/ui/api/events", data.events),
        Route("/ui/api/job", data.job),
        Route("/ui/api/logs", data.logs),
        Route("/ui/api/queue", data.queue),
        Route("/ui/api/schedules", data.schedules),
        Route("/ui/api/throughput", data.throughput),
        Route("/ui/api/workers", data.workers),
        Route("/ui/api/workflow-run", workflows.run_data),
        Mount("/ui/static", StaticFiles(directory=STATIC), name="static"),
    ]


def _error(request: Request, error: ApiError) -> Response:
    if request.url.path.startswith(API_PREFIX):
        return error_response(error)
    return page(request, "error.html", status=error.status, nav="", error=error)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(request, exc)


async def _on_relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RelayError)
    return _error(request, from_relay_error(exc, request.url.path))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "There is no such page.", 405: "This page does not take that method."}
    message = messages.get(exc.status_code, str(exc.detail))
    return _error(request, ApiError(exc.status_code, "not_found", message))


async def _on_login_required(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith(API_PREFIX):
        return error_response(ApiError(401, "unauthorized", "log in to the dashboard first"))
    if request.headers.get("sec-fetch-site") == "cross-site" and request.method == "GET":
        # A link from another site arrives without our SameSite=Strict cookies: one same-site reload
        # (a meta refresh: no script) brings them along, so a logged-in person is not asked again.
        return page(request, "reload.html", nav="")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", status_code=303)


def dashboard_app(ctx: DashboardContext) -> Starlette:
    app = Starlette(
        routes=_routes(),
        exception_handlers={
            ApiError: _on_api_error,
            RelayError: _on_relay_error,
            HTTPException: _on_http_error,
            LoginRequired: _on_login_required,
        },
    )
    app.state.dashboard = ctx
    return app
