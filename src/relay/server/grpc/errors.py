"""The one place that maps Relay's errors to gRPC status codes (the gRPC twin of
:mod:`relay.server.errors`, which it builds on: an error is first what the HTTP API would answer,
then that answer's status becomes a code).

=============================================  ===================  ==================================
error (its HTTP status)                        gRPC code            details
=============================================  ===================  ==================================
InvalidFieldError (422), a body/JSON limit     INVALID_ARGUMENT     ``field: message``
(413, 422, 400)
JobNotFoundError, WorkflowRunNotFoundError     NOT_FOUND
(404)
InvalidTransitionError (409 ``invalid_state``) FAILED_PRECONDITION
DuplicateJobError, an idempotency conflict     ALREADY_EXISTS
(409)
a missing scope (403)                          PERMISSION_DENIED    names the scope
StorageUnavailableError (503)                  UNAVAILABLE          retry later
=============================================  ===================  ==================================

The details are for people and plain gRPC clients. Relay's own client rebuilds the exact exception
the HTTP client raises from the trailing metadata, which carries the HTTP answer's parts:
``relay-error-code``, ``relay-error-field`` and ``relay-error-detail`` (JSON text).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import grpc
import orjson

from relay.errors import RelayError
from relay.server.errors import ApiError, from_relay_error

log = logging.getLogger("relay.server.grpc")

CODE_KEY = "relay-error-code"
FIELD_KEY = "relay-error-field"
DETAIL_KEY = "relay-error-detail"

_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,  # too large is bad input here: the caller must send less
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
}
_ALREADY_EXISTS = frozenset({"duplicate_id", "idempotency_conflict"})


def status_code(error: ApiError) -> grpc.StatusCode:
    if error.status == 409:
        return (
            grpc.StatusCode.ALREADY_EXISTS
            if error.code in _ALREADY_EXISTS
            else grpc.StatusCode.FAILED_PRECONDITION
        )
    return _BY_STATUS.get(error.status, grpc.StatusCode.INTERNAL)


def api_error(exc: Exception) -> ApiError | None:
    """What the HTTP API would answer for ``exc``; None for an exception that is a bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RelayError):
        return from_relay_error(exc, "")
    return None


def details(error: ApiError) -> str:
    return f"{error.field}: {error.message}" if error.field else error.message


def trailing_metadata(error: ApiError) -> tuple[tuple[str, str], ...]:
    items = [(CODE_KEY, error.code)]
    if error.field:
        items.append((FIELD_KEY, error.field))
    if error.detail:
        items.append((DETAIL_KEY, orjson.dumps(error.detail).decode()))
    return tuple(items)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: ApiError) -> None:
    """End the call with ``error``'s code (``context.abort`` raises, so this never returns normally)."""
    await context.abort(status_code(error), details(error), trailing_metadata(error))


class mapped:  # lower case: it reads as a call, `async with mapped(context):`
    """Turn the errors raised in the block into the call's status. An unexpected exception is logged
    with its traceback and answered INTERNAL with a generic message: its text can carry SQL, paths or
    payload data, as over HTTP. (A class, not a generator: its ``__aexit__`` never swallows, so the
    type checker knows a block that returns always returns.)"""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, grpc.aio.AbortError):
            return  # no error, a cancelled call, or an abort of our own (auth): as it is
        error = api_error(exc)
        if error is None:
            log.error("unexpected error in a gRPC call", exc_info=exc)
            await self.context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server's log")
        else:
            await abort_with(self.context, error)


__all__ = ["abort_with", "api_error", "mapped", "status_code", "trailing_metadata"]
