"""The errors of the HTTP API, turned back into :mod:`relay.errors` exceptions on the client side.

The server answers every failure with ``{"error": {"code": ..., "message": ..., "field": ...,
"detail": {...}}}``. A code that names one of Relay's own errors (``invalid_job``, ``not_found``,
``invalid_state``, ``duplicate_id``, ``storage_unavailable``) becomes that exception, so that code
written against the library (and the CLI) handles a remote server the same way; any other error
becomes an :class:`ApiError` that keeps the HTTP status and the code.
"""

from __future__ import annotations

from typing import Any

from relay.errors import (
    DuplicateJobError,
    InvalidFieldError,
    InvalidJobError,
    InvalidLimitError,
    InvalidScheduleError,
    InvalidTransitionError,
    InvalidWorkflowError,
    JobNotFoundError,
    RelayError,
    ScheduleNotFoundError,
    StorageUnavailableError,
    WorkflowNotFoundError,
    WorkflowRunNotFoundError,
)


class ApiError(RelayError):
    """The server refused a request: ``status`` is the HTTP status, ``code`` the error's code."""

    code = "api_error"

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class AuthenticationError(ApiError):
    """401: no token, or a token the server does not accept (set RELAY_TOKEN)."""


class PermissionDeniedError(ApiError):
    """403: the token lacks the scope this request needs."""


class IdempotencyConflictError(ApiError):
    """409: an idempotency key already names a job with different content.

    In a batch, the other documents were enqueued all the same: ``results`` holds them (with None in
    the place of each conflicting document)."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, results: list[Any] | None = None
    ) -> None:
        super().__init__(status, code, message, field)
        self.results = results or []


class ServerUnavailableError(StorageUnavailableError):
    """The server cannot be reached, or answered that it (or its storage) is unavailable."""

    code = "server_unavailable"


def error_from_response(status: int, body: Any, job_id: str | None = None) -> RelayError:
    """The exception for an error response. ``job_id`` is the job the request was about, if any."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ApiError(status, "http_error", f"HTTP {status} without a Relay error body")
    code = str(error.get("code") or "http_error")
    message = str(error.get("message") or f"HTTP {status}")
    field = error.get("field") if isinstance(error.get("field"), str) else None
    raw_detail = error.get("detail")
    detail: dict[str, Any] = raw_detail if isinstance(raw_detail, dict) else {}
    known = _known_error(code, message, field, detail, job_id)
    if known is not None:
        return known
    if code == "idempotency_conflict":
        return IdempotencyConflictError(status, code, message, field)
    if status == 401:
        return AuthenticationError(status, code, message, field)
    if status == 403:
        return PermissionDeniedError(status, code, message, field)
    if status in (502, 503, 504):
        return ServerUnavailableError(message)
    return ApiError(status, code, message, field)


_INVALID: dict[str, type[InvalidFieldError]] = {
    error.code: error
    for error in (InvalidJobError, InvalidLimitError, InvalidScheduleError, InvalidWorkflowError)
}


def _known_error(
    code: str, message: str, field: str | None, detail: dict[str, Any], job_id: str | None
) -> RelayError | None:
    subject = str(detail.get("job_id") or job_id or "")
    if code in _INVALID:
        return _INVALID[code](field or "", message)
    if code == "not_found" and detail.get("schedule"):
        return ScheduleNotFoundError(str(detail["schedule"]))
    if code == "not_found" and detail.get("step"):
        return None  # a run without that step: an ApiError that keeps the message and the field
    if code == "not_found" and detail.get("run_id"):
        return WorkflowRunNotFoundError(str(detail["run_id"]))
    if code == "not_found" and detail.get("workflow"):
        return WorkflowNotFoundError(str(detail["workflow"]))
    if code == "not_found" and subject:
        return JobNotFoundError(subject)
    if code == "duplicate_id" and subject:
        return DuplicateJobError(subject)
    if code == "invalid_state" and subject:
        return InvalidTransitionError(subject, str(detail.get("state", "?")), str(detail.get("action", "?")))
    if code == "storage_unavailable":
        return StorageUnavailableError(message)
    return None
