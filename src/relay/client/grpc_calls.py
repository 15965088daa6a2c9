"""Every call of the gRPC job API as data (the gRPC twin of :mod:`relay.client.calls`): the method,
the request message, how to decode the answer; plus where the server is, and its errors turned back
into the exceptions the HTTP client raises. The sync and the async client
(:mod:`relay.client.grpc`) only send these, so that the two cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import grpc
import orjson
from google.protobuf.message import Message

from relay.client.calls import Enqueued, Page
from relay.client.errors import ApiError, ServerUnavailableError, error_from_response
from relay.client.grpc_wire import job_of, log_line_of
from relay.client.wire import workflow_run_from_json
from relay.errors import RelayError
from relay.grpc.v1 import relay_pb2 as pb
from relay.types import Job, LogLine, WorkflowRun

T = TypeVar("T")

SERVICE = "/relay.v1.Jobs"
DEFAULT_URL = "grpc://127.0.0.1:50051"
DEFAULT_PORT = 50051
SCHEMES = ("grpc://", "grpcs://")

# Trailing metadata of an error (relay.server.grpc.errors): the parts of the HTTP API's answer.
CODE_KEY, FIELD_KEY, DETAIL_KEY = "relay-error-code", "relay-error-field", "relay-error-detail"

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# The code of an error without Relay's metadata (the call's auth, or gRPC itself refused it).
_PLAIN_CODES = {
    grpc.StatusCode.UNAUTHENTICATED: "unauthorized",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "body_too_large",
}


@dataclass(frozen=True, slots=True)
class GrpcCall(Generic[T]):
    method: str  # the RPC's name in service Jobs
    request: Message
    response: type[Message]  # each answer's (or, for a stream, each message's) type
    decode: Callable[[Any], T]
    job_id: str | None = None  # the job the call is about: names it in a not-found error

    @property
    def path(self) -> str:
        return f"{SERVICE}/{self.method}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is: ``host:port`` for gRPC, whether to use TLS, and the call metadata."""

    url: str
    address: str
    tls: bool
    root_certificates: bytes | None
    metadata: tuple[tuple[str, str], ...]

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates)


def target(
    url: str | None,
    token: str | None,
    tls: bool | None,
    root_certificates: bytes | None,
    env: Mapping[str, str] | None = None,
) -> Target:
    """``grpc://host:port`` (plain) or ``grpcs://host:port`` (TLS; ``tls`` overrides the scheme).
    Defaults: RELAY_SERVER_URL when it is a gRPC URL, RELAY_TOKEN, and the CA bundle of
    RELAY_GRPC_TLS_CA (a PEM file; otherwise the system's roots)."""
    e = os.environ if env is None else env
    env_url = e.get("RELAY_SERVER_URL", "")
    chosen = url or (env_url if env_url.startswith(SCHEMES) else DEFAULT_URL)
    scheme, sep, rest = chosen.partition("://")
    address = (rest if sep else chosen).rstrip("/")
    if ":" not in address.rpartition("]")[2]:
        address = f"{address}:{DEFAULT_PORT}"
    secure = tls if tls is not None else (sep != "" and scheme == "grpcs")
    ca_file = e.get("RELAY_GRPC_TLS_CA")
    roots = root_certificates if root_certificates is not None or not ca_file else Path(ca_file).read_bytes()
    bearer = token if token is not None else e.get("RELAY_TOKEN")
    metadata = (("authorization", f"Bearer {bearer}"),) if bearer else ()
    return Target(chosen, address, secure, roots, metadata)


def is_grpc_url(url: str | None) -> bool:
    return url is not None and url.startswith(SCHEMES)


def error_of(exc: grpc.RpcError, where: Target, job_id: str | None = None) -> RelayError:
    """The exception the HTTP client would raise for the same refusal."""
    code = exc.code()
    text = exc.details() or ""
    meta = _metadata(exc)
    if code is grpc.StatusCode.UNAVAILABLE and CODE_KEY not in meta:
        return ServerUnavailableError(f"cannot reach the Relay server at {where.url}: {text}")
    field = meta.get(FIELD_KEY)
    message = text[len(field) + 2 :] if field and text.startswith(f"{field}: ") else text
    error: dict[str, Any] = {"code": meta.get(CODE_KEY) or _PLAIN_CODES.get(code, code.name.lower())}
    error |= {"message": message, "field": field}
    if DETAIL_KEY in meta:
        error["detail"] = orjson.loads(meta[DETAIL_KEY])
    found = error_from_response(_HTTP_STATUS.get(code, 500), {"error": error}, job_id)
    if isinstance(found, ApiError) and found.status == 500:
        return ApiError(500, error["code"], f"gRPC {code.name}: {message}", field)
    return found


def _metadata(exc: grpc.RpcError) -> dict[str, str]:
    # Pairs in both APIs (namedtuples in the sync one, tuples in grpc.aio), though typed apart.
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    return {key: value.decode() if isinstance(value, bytes) else value for key, value in pairs}


# -- the calls ----------------------------------------------------------------------------------------


def _enqueued(reply: pb.Submitted) -> Enqueued:
    return Enqueued(job_of(reply.job), reply.created)


def _spec(document: Mapping[str, Any]) -> pb.JobSpec:
    # A whole document as JSON text: every field a job document has, not only those JobSpec names.
    return pb.JobSpec(document=orjson.dumps(dict(document)).decode())


def enqueue(document: Mapping[str, Any]) -> GrpcCall[Enqueued]:
    return GrpcCall("Submit", pb.SubmitRequest(job=_spec(document)), pb.Submitted, _enqueued)


def enqueue_many(documents: Iterable[Mapping[str, Any]]) -> GrpcCall[list[Enqueued]]:
    def decode(reply: pb.SubmitManyResponse) -> list[Enqueued]:
        return [_enqueued(item) for item in reply.results]

    request = pb.SubmitManyRequest(jobs=[_spec(d) for d in documents])
    return GrpcCall("SubmitMany", request, pb.SubmitManyResponse, decode)


def get(job_id: str) -> GrpcCall[Job]:
    return GrpcCall("Get", pb.GetRequest(id=job_id), pb.Job, job_of, job_id)


def list_jobs(
    *,
    states: Sequence[str] = (),
    queues: Sequence[str] = (),
    kinds: Sequence[str] = (),
    text: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> GrpcCall[Page]:
    def decode(reply: pb.ListResponse) -> Page:
        return Page([job_of(j) for j in reply.jobs], reply.next_cursor or None)

    request = pb.ListRequest(
        states=list(states), queues=list(queues), types=list(kinds), text=text or "", limit=limit
    )
    request.cursor = cursor or ""
    return GrpcCall("List", request, pb.ListResponse, decode)


def logs(
    job_id: str, *, attempt: int | None = None, after_seq: int = 0, limit: int = 10_000
) -> GrpcCall[list[LogLine]]:
    def decode(reply: pb.LogsResponse) -> list[LogLine]:
        return [log_line_of(line) for line in reply.lines]

    request = pb.LogsRequest(id=job_id, after_seq=after_seq, limit=limit)
    if attempt is not None:
        request.attempt = attempt
    return GrpcCall("Logs", request, pb.LogsResponse, decode, job_id)


def cancel(job_id: str) -> GrpcCall[Job]:
    return GrpcCall("Cancel", pb.CancelRequest(id=job_id), pb.Job, job_of, job_id)


def retry(job_id: str) -> GrpcCall[Job]:
    return GrpcCall("Retry", pb.RetryRequest(id=job_id), pb.Job, job_of, job_id)


def watch(job_id: str | None = None, queue: str | None = None) -> GrpcCall[Job]:
    """A stream: each message decodes to the job as it is after a change."""

    def decode(event: pb.JobEvent) -> Job:
        return job_of(event.job)

    request = pb.WatchRequest(job_id=job_id or "", queue=queue or "")
    return GrpcCall("Watch", request, pb.JobEvent, decode, job_id)


def workflow_run(run_id: str) -> GrpcCall[WorkflowRun]:
    def decode(reply: pb.WorkflowRun) -> WorkflowRun:
        return workflow_run_from_json(orjson.loads(reply.json))

    return GrpcCall("GetWorkflowRun", pb.GetWorkflowRunRequest(id=run_id), pb.WorkflowRun, decode)


def ready() -> GrpcCall[bool]:
    """A probe the server answers without touching storage: a Get without an id, which it refuses
    (INVALID_ARGUMENT, field ``id``) once the token is checked. The clients read that as "ready"."""
    return GrpcCall("Get", pb.GetRequest(), pb.Job, lambda reply: True)


def is_ready_refusal(exc: ApiError) -> bool:
    return exc.status == 422 and exc.field == "id"
