"""A ``JobSpec`` message to the job document the HTTP API would receive, within the same limits.

The document is then parsed by the same code as over HTTP (:mod:`relay.server.enqueue`), so that
an invalid job fails with the same field path (``payload.command``, ``[3].queue``). What only a
message can get wrong is checked here: JSON text that is not JSON, ``document`` beside other fields,
a request larger than ``max_body_bytes``, JSON nested deeper than ``max_json_depth``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from relay.client.grpc_wire import datetime_of
from relay.errors import InvalidJobError
from relay.grpc.v1 import relay_pb2 as pb
from relay.jobs.json_values import join_path
from relay.server.errors import ApiError
from relay.server.limits import Limits, check_batch, check_depth
from relay.types import JSON

_TEXT_FIELDS = ("type", "queue", "id", "delay", "timeout", "lease", "idempotency_key", "backoff")
_JSON_FIELDS = ("payload", "metadata")
_SPEC_FIELDS: tuple[str, ...] = ("type", "payload", "queue", "id", "priority", "max_retries", "delay")
_SPEC_FIELDS += ("run_at", "timeout", "lease", "idempotency_key", "tags", "metadata", "backoff")


def _json(text: str, field: str, limits: Limits) -> JSON:
    try:
        value: JSON = orjson.loads(text)
        return value
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own limit (1024 levels), far past ours
            message = f"JSON nested deeper than {limits.max_json_depth} levels"
            raise ApiError(422, "json_too_deep", message, field) from None
        raise InvalidJobError(field, f"not valid JSON: {exc}") from None


def _set_fields(spec: pb.JobSpec) -> list[str]:
    """The spec's fields that are set (proto3: a scalar is "set" when it is not its zero value)."""
    set_fields = {field.name for field, _ in spec.ListFields()}
    return [name for name in _SPEC_FIELDS if name in set_fields]


def document_of(spec: pb.JobSpec, limits: Limits, path: str = "") -> JSON:
    """The job document ``spec`` describes (not yet validated as a job)."""
    if spec.document:
        others = _set_fields(spec)
        if others:
            message = f"with document set, leave every other field empty ({', '.join(others)} set)"
            raise InvalidJobError(join_path(path, "document"), message)
        return _json(spec.document, join_path(path, "document"), limits)
    document: dict[str, JSON] = {}
    for name in _TEXT_FIELDS:
        value = getattr(spec, name)
        if value:
            document[name] = value
    for name in _JSON_FIELDS:
        text = getattr(spec, name)
        if text:
            document[name] = _json(text, join_path(path, name), limits)
    for name in ("priority", "max_retries"):
        if spec.HasField(name):
            document[name] = getattr(spec, name)
    if spec.HasField("run_at"):
        run_at = datetime_of(spec.run_at)
        document["run_at"] = None if run_at is None else run_at.isoformat()
    if spec.tags:
        document["tags"] = list(spec.tags)
    return document


def _largest_field(spec: pb.JobSpec) -> str:
    """The field that makes a spec large: the one an error about its size names."""
    sizes = {name: len(str(getattr(spec, name))) for name in ("document", *_JSON_FIELDS, "tags")}
    return max(sizes, key=lambda name: sizes[name])


def _too_large(request_size: int, limits: Limits, field: str) -> ApiError:
    message = f"the request is {request_size} bytes, larger than {limits.max_body_bytes}"
    return ApiError(413, "body_too_large", message, field)


def document_for(request: pb.SubmitRequest, limits: Limits) -> JSON:
    """The document of a ``Submit``, the whole request held to the limits of an HTTP body."""
    if not request.HasField("job"):
        raise InvalidJobError("job", "required")
    size = request.ByteSize()
    if size > limits.max_body_bytes:
        raise _too_large(size, limits, _largest_field(request.job))
    document = document_of(request.job, limits)
    check_depth(document, limits.max_json_depth)
    return document


def documents_for(request: pb.SubmitManyRequest, limits: Limits) -> list[JSON]:
    """The documents of a ``SubmitMany``, paths ``[i]`` as in an HTTP batch."""
    jobs: Sequence[pb.JobSpec] = request.jobs
    try:
        check_batch(list(jobs), limits.max_batch)
    except ApiError as exc:
        raise ApiError(exc.status, exc.code, exc.message, "jobs") from None
    size = request.ByteSize()
    if size > limits.max_body_bytes:
        largest = max(range(len(jobs)), key=lambda i: jobs[i].ByteSize())
        raise _too_large(size, limits, join_path(join_path("", largest), _largest_field(jobs[largest])))
    documents = [document_of(spec, limits, join_path("", i)) for i, spec in enumerate(jobs)]
    check_depth(documents, limits.max_json_depth)  # the list is a level, as an HTTP batch's array
    return documents
