"""The job API over gRPC (service ``relay.v1.Jobs``): each RPC does what its HTTP route does
(:mod:`relay.server.routes.jobs`), through the same functions, with the same scopes: ``enqueue`` on
the job's queue (and every chained job's) to submit, ``read`` to get, list, read logs and watch,
``admin`` to cancel and retry. A job of a queue the token cannot read is NOT_FOUND, as over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import grpc

from relay.client.grpc_wire import job_message, json_text, log_line_message
from relay.client.wire import job_from_json, workflow_run_to_json
from relay.errors import InvalidFieldError
from relay.grpc.v1 import relay_pb2 as pb
from relay.grpc.v1 import relay_pb2_grpc
from relay.server.access import job_for, readable_queues
from relay.server.enqueue import enqueue_batch, enqueue_one
from relay.server.errors import ApiError
from relay.server.grpc.auth import grants_of
from relay.server.grpc.errors import mapped
from relay.server.grpc.specs import document_for, documents_for
from relay.server.grpc.watch import watch_job, watch_queue
from relay.server.routes.jobs import MAX_SEQ
from relay.server.scopes import Action, Grants
from relay.server.state import ServerState
from relay.server.tokens import TokenVerifier
from relay.server.workflows import run_for, step_queues
from relay.storage.params import ListParams, LogParams, RequeueParams
from relay.types import JSON, JobKind, JobState, WorkflowRun

Context = grpc.aio.ServicerContext[Any, Any]
E = TypeVar("E", JobState, JobKind)

DEFAULT_PAGE, MAX_PAGE = 50, 1000  # as GET /api/v1/jobs
DEFAULT_LOG_LINES, MAX_LOG_LINES = 1000, 10_000  # as GET /api/v1/jobs/{id}/logs
MAX_TEXT = 200


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidFieldError(field, "required")
    return value


def _enums(kind: type[E], values: list[str], field: str) -> list[E]:
    try:
        return [kind(value.strip().lower()) for value in values]
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise InvalidFieldError(field, f"expected some of {valid}") from None


def _in_range(value: int, low: int, high: int, field: str) -> int:
    if not low <= value <= high:
        raise InvalidFieldError(field, f"must be between {low} and {high}")
    return value


def _submitted(item: Any) -> pb.Submitted:
    """One enqueue's answer, from the JSON the HTTP API would send (the same function made it)."""
    return pb.Submitted(job=job_message(job_from_json(item["job"])), created=bool(item["created"]))


@dataclass
class JobsService(relay_pb2_grpc.JobsServicer):
    state: ServerState
    verifier: TokenVerifier | None

    async def Submit(self, request: pb.SubmitRequest, context: Context) -> pb.Submitted:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            document = document_for(request, self.state.limits)
            _, body = await enqueue_one(self.state, grants, document)
            return _submitted(body)

    async def SubmitMany(self, request: pb.SubmitManyRequest, context: Context) -> pb.SubmitManyResponse:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            documents: JSON = documents_for(request, self.state.limits)
            _, body = await enqueue_batch(self.state, grants, documents)
            items: list[Any] = body["jobs"]
            conflicts = [item["error"] for item in items if item.get("error")]
            if conflicts:
                raise _batch_conflict(conflicts, len(items))
            return pb.SubmitManyResponse(results=[_submitted(item) for item in items])

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.Job:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            job_id = _required(request.id, "id")
            return job_message(await job_for(self.state.storage, grants, Action.READ, job_id))

    async def List(self, request: pb.ListRequest, context: Context) -> pb.ListResponse:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            params = ListParams(
                states=_enums(JobState, list(request.states), "states"),
                kinds=_enums(JobKind, list(request.types), "types"),
                text=request.text or None,
                limit=_in_range(request.limit or DEFAULT_PAGE, 1, MAX_PAGE, "limit"),
                cursor=request.cursor or None,
            )
            if len(request.text) > MAX_TEXT:
                raise InvalidFieldError("text", f"at most {MAX_TEXT} characters")
            visible = await readable_queues(self.state.storage, grants, list(request.queues))
            if visible == []:
                return pb.ListResponse()  # an empty filter would mean "every queue"
            try:
                page = await self.state.storage.job_list(replace(params, queues=visible or ()))
            except (ValueError, OverflowError):
                raise InvalidFieldError("cursor", "not a cursor of a previous page") from None
            return pb.ListResponse(
                jobs=[job_message(j) for j in page.jobs], next_cursor=page.next_cursor or ""
            )

    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.Job:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            job_id = _required(request.id, "id")
            await job_for(self.state.storage, grants, Action.ADMIN, job_id)
            return job_message(await self.state.storage.job_cancel(job_id))

    async def Retry(self, request: pb.RetryRequest, context: Context) -> pb.Job:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            job_id = _required(request.id, "id")
            await job_for(self.state.storage, grants, Action.ADMIN, job_id)
            [job] = await self.state.storage.job_requeue(RequeueParams(job_id=job_id))
            return job_message(job)

    async def Logs(self, request: pb.LogsRequest, context: Context) -> pb.LogsResponse:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            job_id = _required(request.id, "id")
            attempt = request.attempt if request.HasField("attempt") else None
            params = LogParams(
                job_id,
                None if attempt is None else _in_range(attempt, 1, 2**31 - 1, "attempt"),
                _in_range(request.after_seq, 0, MAX_SEQ, "after_seq"),
                _in_range(request.limit or DEFAULT_LOG_LINES, 1, MAX_LOG_LINES, "limit"),
            )
            await job_for(self.state.storage, grants, Action.READ, job_id)
            lines = await self.state.storage.job_logs(params)
            return pb.LogsResponse(lines=[log_line_message(line) for line in lines])

    async def Watch(self, request: pb.WatchRequest, context: Context) -> AsyncIterator[pb.JobEvent]:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            if bool(request.job_id) == bool(request.queue):
                raise InvalidFieldError("job_id", "give a job_id or a queue (one of the two)")
            if request.job_id:
                jobs = watch_job(self.state, grants, request.job_id)
            else:
                jobs = watch_queue(self.state, grants, request.queue)
            async for job in jobs:
                yield pb.JobEvent(job=job_message(job))

    async def _served_run(self, grants: Grants, run_id: str) -> WorkflowRun | None:
        """The run, when the token may work on one of its steps' queues: a gRPC worker reads the results
        a step depends on (relay.runtime.workflows.step_inputs) with its ``work`` token, which need not
        grant ``read``. Otherwise None, and the ``read`` rule of the HTTP API applies."""
        if not grants.allows_any(Action.WORK):
            return None
        run = await self.state.storage.workflow_get(run_id)
        if run is None:
            return None
        queues = await step_queues(self.state.storage, run)
        return run if any(grants.allows(Action.WORK, q) for q in queues.values()) else None

    async def GetWorkflowRun(self, request: pb.GetWorkflowRunRequest, context: Context) -> pb.WorkflowRun:
        grants = await grants_of(context, self.verifier)
        async with mapped(context):
            run_id = _required(request.id, "id")
            run = await self._served_run(grants, run_id) or await run_for(
                self.state.storage, grants, Action.READ, run_id
            )
            return pb.WorkflowRun(
                id=run.id,
                workflow=run.workflow,
                state=run.state.value,
                json=json_text(workflow_run_to_json(run)),
            )


def _batch_conflict(conflicts: list[Any], total: int) -> ApiError:
    """A batch whose documents reuse idempotency keys: the others were enqueued (one transaction
    inserted them all, and only then told which keys existed), as the HTTP client's error says."""
    fields = ", ".join(str(c["field"]) for c in conflicts)
    message = (
        f"{len(conflicts)} of {total} documents reuse an idempotency key with different content "
        f"({fields}); the other {total - len(conflicts)} were enqueued"
    )
    return ApiError(409, "idempotency_conflict", message, str(conflicts[0]["field"]))


def add_jobs_service(server: grpc.aio.Server, state: ServerState, verifier: TokenVerifier | None) -> None:
    """Register the ``Jobs`` service on ``server``."""
    relay_pb2_grpc.add_JobsServicer_to_server(JobsService(state, verifier), server)  # type: ignore[no-untyped-call]


__all__ = ["JobsService", "add_jobs_service"]
