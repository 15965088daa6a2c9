"""The HTTP client, asynchronous: :class:`AsyncRelayClient`. See :mod:`relay.client` for an example."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from relay.client import calls
from relay.client.base import DEFAULT_TIMEOUT, client_options, response_body, unreachable
from relay.client.calls import Call, Enqueued, Page, RunPage
from relay.types import JSON, Job, LogLine, QueueInfo, Schedule, WorkerInfo, WorkflowRun

T = TypeVar("T")


class AsyncRelayClient:
    """Talks to a Relay server over HTTP; every failure raises a :class:`relay.errors.RelayError`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, headers = client_options(base_url, token)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncRelayClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=tuple(call.params),
                json=call.json if call.has_body else None,
            )
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return calls.result(call, response.status_code, response_body(response))

    async def enqueue(self, document: Mapping[str, Any]) -> Enqueued:
        return await self.send(calls.enqueue(document))

    async def enqueue_many(self, documents: Iterable[Mapping[str, Any]]) -> list[Enqueued]:
        return await self.send(calls.enqueue_many(documents))

    async def get(self, job_id: str) -> Job:
        return await self.send(calls.get(job_id))

    async def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        queues: Sequence[str] = (),
        kinds: Sequence[str] = (),
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        call = calls.list_jobs(
            states=states, queues=queues, kinds=kinds, text=text, limit=limit, cursor=cursor
        )
        return await self.send(call)

    async def logs(
        self, job_id: str, *, attempt: int | None = None, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogLine]:
        return await self.send(calls.logs(job_id, attempt=attempt, after_seq=after_seq, limit=limit))

    async def cancel(self, job_id: str) -> Job:
        return await self.send(calls.cancel(job_id))

    async def retry(self, job_id: str) -> Job:
        return await self.send(calls.retry(job_id))

    async def dlq_list(
        self, *, queues: Sequence[str] = (), limit: int = 50, cursor: str | None = None
    ) -> Page:
        return await self.send(calls.dlq_list(queues=queues, limit=limit, cursor=cursor))

    async def dlq_requeue(self, job_id: str) -> Job:
        return await self.send(calls.dlq_requeue(job_id))

    async def dlq_requeue_all(self, queue: str | None = None) -> list[str]:
        return await self.send(calls.dlq_requeue_all(queue))

    async def dlq_purge(self, queue: str | None = None) -> int:
        return await self.send(calls.dlq_purge(queue))

    async def queues(self) -> list[QueueInfo]:
        return await self.send(calls.queues())

    async def queue(self, name: str) -> QueueInfo:
        """One queue, with its limits; ApiError 404 when the server knows no such queue."""
        return await self.send(calls.queue(name))

    async def set_queue_limits(self, name: str, limits: Mapping[str, Any]) -> QueueInfo:
        """Replace the queue's limits with the flat limits document (``{"rate": "100/s", "burst": 20,
        "concurrency": 5}``; ``{}`` clears them): the queue as it is now. InvalidLimitError names a
        bad field (nothing is changed then)."""
        return await self.send(calls.set_queue_limits(name, limits))

    async def pause_queue(self, name: str) -> None:
        await self.send(calls.pause_queue(name))

    async def resume_queue(self, name: str) -> None:
        await self.send(calls.resume_queue(name))

    async def schedules(self) -> list[Schedule]:
        return await self.send(calls.schedules())

    async def schedule(self, name: str) -> Schedule:
        """The schedule; ScheduleNotFoundError when there is none."""
        return await self.send(calls.schedule(name))

    async def put_schedule(self, name: str, document: Mapping[str, Any]) -> Schedule:
        """Create or redefine the schedule from a schedule document (``{"schedule": "0 3 * * *",
        "timezone": "Europe/Berlin", "job": {...}}`` or ``"command": "..."``). InvalidScheduleError (or
        InvalidJobError, for its job) names a bad field (nothing is stored then)."""
        return await self.send(calls.put_schedule(name, document))

    async def remove_schedule(self, name: str) -> None:
        await self.send(calls.remove_schedule(name))

    async def pause_schedule(self, name: str) -> Schedule:
        return await self.send(calls.pause_schedule(name))

    async def resume_schedule(self, name: str) -> Schedule:
        """Resume from the next tick after now (the server's clock): missed ticks are not run."""
        return await self.send(calls.resume_schedule(name))

    async def workers(self) -> list[WorkerInfo]:
        return await self.send(calls.workers())

    async def list_workflows(self) -> list[dict[str, JSON]]:
        """The workflow definitions the server loaded at its start, as JSON: name, description,
        on_failure, params, steps (name, depends_on, runs, queue), source."""
        return await self.send(calls.workflows())

    async def trigger_workflow(self, name: str, params: Mapping[str, str] | None = None) -> WorkflowRun:
        """Start a run of workflow ``name``. WorkflowNotFoundError for an unknown name;
        InvalidWorkflowError names a bad parameter (nothing is started then)."""
        return await self.send(calls.trigger_workflow(name, params or {}))

    async def get_workflow_run(self, run_id: str) -> WorkflowRun:
        """The run, every step as it is now; WorkflowRunNotFoundError when there is none."""
        return await self.send(calls.workflow_run(run_id))

    async def list_workflow_runs(
        self, workflow: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> RunPage:
        """Runs newest first, of one workflow or of all."""
        return await self.send(calls.workflow_runs(workflow=workflow, limit=limit, cursor=cursor))

    async def cancel_workflow_run(self, run_id: str) -> WorkflowRun:
        """Cancel the run: its waiting steps at once, its running steps asked to stop."""
        return await self.send(calls.cancel_workflow_run(run_id))

    async def retry_workflow_step(self, run_id: str, step: str) -> WorkflowRun:
        """Bring failed step ``step`` back; InvalidTransitionError when it cannot be retried."""
        return await self.send(calls.retry_workflow_step(run_id, step))

    async def ready(self) -> bool:
        return await self.send(calls.ready())
