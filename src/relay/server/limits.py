"""Reading a request's JSON body within the server's limits.

- size: a body over ``max_body_bytes`` is refused with **413** ``body_too_large``, as soon as the
  Content-Length says so or the bytes read pass the limit (the rest is never buffered);
- syntax: a body that is not JSON is refused with **400** ``invalid_json``;
- depth: JSON nested deeper than ``max_json_depth`` is refused with **422** ``json_too_deep``, the
  field naming where (checked iteratively, so depth never costs a RecursionError);
- batch size: more than ``max_batch`` documents in one batch is refused with **413** ``batch_too_large``
  (:func:`check_batch`): like a body too large, the request is too big, not wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from fastapi import Request

from relay.jobs.json_values import join_path
from relay.server.errors import ApiError
from relay.types import JSON

NO_BODY = object()  # what read_json returns for an empty body, when that is allowed


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_json_depth: int
    max_batch: int


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limits: Limits, *, allow_empty: bool = False) -> JSON:
    """The request's body as JSON, within ``limits``; ``NO_BODY`` for an empty one if ``allow_empty``."""
    raw = await read_body(request, limits.max_body_bytes)
    if not raw.strip():
        if allow_empty:
            return NO_BODY
        raise ApiError(400, "invalid_json", "the request needs a JSON body")
    check_json_media_type(request)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own limit (1024 levels), far past ours
            raise ApiError(
                422, "json_too_deep", f"JSON nested deeper than {limits.max_json_depth} levels"
            ) from None
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    check_depth(value, limits.max_json_depth)
    return value


def check_json_media_type(request: Request) -> None:
    """A JSON body must say so. Browsers send text/plain or form bodies across sites without asking
    (a "simple request"), so accepting them would let any web page post jobs to a server without auth."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "send the body with Content-Type: application/json")


def check_depth(value: JSON, limit: int) -> None:
    stack: list[tuple[JSON, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            raise ApiError(422, "json_too_deep", f"JSON nested deeper than {limit} levels", path or None)
        children = item.items() if isinstance(item, dict) else enumerate(item)
        stack.extend((child, join_path(path, key), depth + 1) for key, child in children)


def check_batch(documents: JSON, limit: int) -> None:
    if isinstance(documents, list) and len(documents) > limit:
        raise ApiError(
            413, "batch_too_large", f"a batch holds at most {limit} documents, not {len(documents)}"
        )
