"""The HTTP client, synchronous: :class:`RelayClient`. See :mod:`relay.client` for an example."""

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


class RelayClient:
    """Talks to a Relay server over HTTP; every failure raises a :class:`relay.errors.RelayError`."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, headers = client_options(base_url, token)
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=tuple(call.params),
                json=call.json if call.has_body else None,
            )
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from exc
        return calls.result(call, response.status_code, response_body(response))

    def enqueue(self, document: Mapping[str, Any]) -> Enqueued:
        return self.send(calls.enqueue(document))

    def enqueue_many(self, documents: Iterable[Mapping[str, Any]]) -> list[Enqueued]:
        return self.send(calls.enqueue_many(documents))

    def get(self, job_id: str) -> Job:
        return self.send(calls.get(job_id))

    def list_jobs(
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
        return self.send(call)

    def logs(
        self, job_id: str, *, attempt: int | None = None, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogLine]:
        return self.send(calls.logs(job_id, attempt=attempt, after_seq=after_seq, limit=limit))

    def cancel(self, job_id: str) -> Job:
        return self.send(calls.cancel(job_id))

    def retry(self, job_id: str) -> Job:
        return self.send(calls.retry(job_id))

    def dlq_list(self, *, queues: Sequence[str] = (), limit: int = 50, cursor: str | None = None) -> Page:
        return self.send(calls.dlq_list(queues=queues, limit=limit, cursor=cursor))

    def dlq_requeue(self, job_id: str) -> Job:
        return self.send(calls.dlq_requeue(job_id))

    def dlq_requeue_all(self, queue: str | None = None) -> list[str]:
        return self.send(calls.dlq_requeue_all(queue))

    def dlq_purge(self, queue: str | None = None) -> int:
        return self.send(calls.dlq_purge(queue))

    def queues(self) -> list[QueueInfo]:
        return self.send(calls.queues())

    def queue(self, name: str) -> QueueInfo:
        """One queue, with its limits; ApiError 404 when the server knows no such queue."""
        return self.send(calls.queue(name))

    def set_queue_limits(self, name: str, limits: Mapping[str, Any]) -> QueueInfo:
        """Replace the queue's limits with the flat limits document (``{"rate": "100/s", "burst": 20,
        "concurrency": 5}``; ``{}`` clears them): the queue as it is now. InvalidLimitError names a
        bad field (nothing is changed then)."""
        return self.send(calls.set_queue_limits(name, limits))

    def pause_queue(self, name: str) -> None:
        self.send(calls.pause_queue(name))

    def resume_queue(self, name: str) -> None:
        self.send(calls.resume_queue(name))

    def schedules(self) -> list[Schedule]:
        return self.send(calls.schedules())

    def schedule(self, name: str) -> Schedule:
        """The schedule; ScheduleNotFoundError when there is none."""
        return self.send(calls.schedule(name))

    def put_schedule(self, name: str, document: Mapping[str, Any]) -> Schedule:
        """Create or redefine the schedule from a schedule document (``{"schedule": "0 3 * * *",
        "timezone": "Europe/Berlin", "job": {...}}`` or ``"command": "..."``). InvalidScheduleError (or
        InvalidJobError, for its job) names a bad field (nothing is stored then)."""
        return self.send(calls.put_schedule(name, document))

    def remove_schedule(self, name: str) -> None:
        self.send(calls.remove_schedule(name))

    def pause_schedule(self, name: str) -> Schedule:
        return self.send(calls.pause_schedule(name))

    def resume_schedule(self, name: str) -> Schedule:
        """Resume from the next tick after now (the server's clock): missed ticks are not run."""
        return self.send(calls.resume_schedule(name))

    def workers(self) -> list[WorkerInfo]:
        return self.send(calls.workers())

    def list_workflows(self) -> list[dict[str, JSON]]:
        """The workflow definitions the server loaded at its start, as JSON: name, description,
        on_failure, params, steps (name, depends_on, runs, queue), source."""
        return self.send(calls.workflows())

    def trigger_workflow(self, name: str, params: Mapping[str, str] | None = None) -> WorkflowRun:
        """Start a run of workflow ``name``. WorkflowNotFoundError for an unknown name;
        InvalidWorkflowError names a bad parameter (nothing is started then)."""
        return self.send(calls.trigger_workflow(name, params or {}))

    def get_workflow_run(self, run_id: str) -> WorkflowRun:
        """The run, every step as it is now; WorkflowRunNotFoundError when there is none."""
        return self.send(calls.workflow_run(run_id))

    def list_workflow_runs(
        self, workflow: str | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> RunPage:
        """Runs newest first, of one workflow or of all."""
        return self.send(calls.workflow_runs(workflow=workflow, limit=limit, cursor=cursor))

    def cancel_workflow_run(self, run_id: str) -> WorkflowRun:
        """Cancel the run: its waiting steps at once, its running steps asked to stop."""
        return self.send(calls.cancel_workflow_run(run_id))

    def retry_workflow_step(self, run_id: str, step: str) -> WorkflowRun:
        """Bring failed step ``step`` back; InvalidTransitionError when it cannot be retried."""
        return self.send(calls.retry_workflow_step(run_id, step))

    def ready(self) -> bool:
        return self.send(calls.ready())
