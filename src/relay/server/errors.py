"""Every error the server answers, as JSON: ``{"error": {"code", "message", "field", "detail"}}``.

This is the one place that maps Relay's exceptions to HTTP statuses:

=============================  ======  ===========================================================
exception                      status  code
=============================  ======  ===========================================================
InvalidFieldError              422     its code: ``invalid_job``, ``invalid_limit``, ``invalid_schedule``,
                                       ``invalid_workflow``
                                       (``field`` is the dotted path to the problem)
JobNotFoundError               404     ``not_found``
ScheduleNotFoundError          404     ``not_found`` (``detail.schedule`` names it)
WorkflowNotFoundError          404     ``not_found`` (``detail.workflow`` names it)
WorkflowRunNotFoundError       404     ``not_found`` (``detail.run_id`` names it)
InvalidTransitionError         409     ``invalid_state``
DuplicateJobError              409     ``duplicate_id``
StorageUnavailableError        503     ``storage_unavailable`` (429 on the runner protocol: relay-rs
                                       clients read 429 as "retry later")
a bad query or path parameter  422     ``invalid_request`` (``field`` is ``query.limit``, ...)
anything unexpected            500     ``internal`` (logged with its traceback; never its message)
=============================  ======  ===========================================================
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.errors import (
    DuplicateJobError,
    InvalidFieldError,
    InvalidTransitionError,
    JobNotFoundError,
    RelayError,
    ScheduleNotFoundError,
    StorageUnavailableError,
    WorkflowNotFoundError,
    WorkflowRunNotFoundError,
)
from relay.types import JSON

log = logging.getLogger("relay.server")

_STATUS: dict[type[RelayError], int] = {
    InvalidFieldError: 422,  # InvalidJobError, InvalidLimitError, InvalidScheduleError
    JobNotFoundError: 404,
    ScheduleNotFoundError: 404,
    WorkflowNotFoundError: 404,
    WorkflowRunNotFoundError: 404,
    InvalidTransitionError: 409,
    DuplicateJobError: 409,
    StorageUnavailableError: 503,
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


class ApiError(Exception):
    """An error the server answers on purpose, with its status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        detail: dict[str, JSON] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.detail = detail
        self.headers = headers


def error_body(
    code: str, message: str, field: str | None = None, detail: dict[str, JSON] | None = None
) -> JSON:
    error: dict[str, JSON] = {"code": code, "message": message, "field": field}
    if detail:
        error["detail"] = detail
    return {"error": error}


def json_response(status: int, body: JSON, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    return json_response(exc.status, error_body(exc.code, exc.message, exc.field, exc.detail), exc.headers)


def is_runner_path(path: str) -> bool:
    return path == "/enqueue" or path.startswith("/v1/")


def from_relay_error(exc: RelayError, path: str) -> ApiError:
    status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 500)
    if isinstance(exc, StorageUnavailableError) and is_runner_path(path):
        status = 429
    field = exc.field or None if isinstance(exc, InvalidFieldError) else None
    message = exc.message if isinstance(exc, InvalidFieldError) else str(exc)
    return ApiError(status, exc.code, message, field, _detail(exc))


def _detail(exc: RelayError) -> dict[str, JSON] | None:
    if isinstance(exc, InvalidTransitionError):
        return {"job_id": exc.job_id, "state": exc.state, "action": exc.action}
    if isinstance(exc, JobNotFoundError | DuplicateJobError):
        return {"job_id": exc.job_id}
    if isinstance(exc, ScheduleNotFoundError):
        return {"schedule": exc.name}
    if isinstance(exc, WorkflowNotFoundError):
        return {"workflow": exc.name}
    if isinstance(exc, WorkflowRunNotFoundError):
        return {"run_id": exc.run_id}
    return None


def _validation_error(exc: RequestValidationError) -> ApiError:
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    field = ".".join(str(part) for part in first.get("loc", ())) or None
    return ApiError(422, "invalid_request", str(first.get("msg", "invalid request")), field)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_relay_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RelayError)
        return error_response(from_relay_error(exc, request.url.path))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(_validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(ApiError(exc.status_code, code, str(exc.detail), headers=headers))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RelayError, on_relay_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


class InternalErrorMiddleware:
    """Answers an unexpected exception with a JSON 500 (and logs it), instead of Starlette's plain text.

    The message is generic on purpose: an exception's text can carry SQL, paths or payload data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # too late for a response of our own: let the server drop the connection
            response = error_response(
                ApiError(500, "internal", "internal server error; see the server's log")
            )
            await response(scope, receive, send)
