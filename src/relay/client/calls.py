"""Every request of the HTTP API as data: method, path, parameters, body, and how to decode the answer.

The sync and the async client (:mod:`relay.client.sync`, :mod:`relay.client.aio`) only send these, so
that the two cannot drift apart and neither holds any knowledge of the API of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from relay.client.errors import IdempotencyConflictError, error_from_response
from relay.client.wire import (
    job_from_json,
    log_line_from_json,
    queue_from_json,
    schedule_from_json,
    worker_from_json,
    workflow_run_from_json,
)
from relay.types import JSON, Job, LogLine, QueueInfo, Schedule, WorkerInfo, WorkflowRun

T = TypeVar("T")
API = "/api/v1"


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    decode: Callable[[Any], T]
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    has_body: bool = False
    job_id: str | None = None  # the job the call is about: names it in a not-found error


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of workflow runs, newest first; pass ``next_cursor`` back for the next page."""

    runs: list[WorkflowRun]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One enqueued job: ``created`` is False (``duplicate`` True) when an idempotency key returned an
    existing job."""

    job: Job
    created: bool

    @property
    def duplicate(self) -> bool:
        return not self.created


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a job listing, newest first; pass ``next_cursor`` back for the next page."""

    jobs: list[Job]
    next_cursor: str | None


def _job_path(job_id: str, suffix: str = "") -> str:
    # safe="": a "/" inside an id is escaped; the server's routes accept it back.
    return f"{API}/jobs/{quote(job_id, safe='')}{suffix}"


def _queue_path(name: str, suffix: str = "") -> str:
    return f"{API}/queues/{quote(name, safe='')}{suffix}"


def _schedule_path(name: str, suffix: str = "") -> str:
    return f"{API}/schedules/{quote(name, safe='')}{suffix}"


def _run_path(run_id: str, suffix: str = "") -> str:
    return f"{API}/workflow-runs/{quote(run_id, safe='')}{suffix}"


def _params(**values: object) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, list | tuple) else [value]
        out += [(name, str(item)) for item in items]
    return out


def _page(body: Any) -> Page:
    return Page([job_from_json(j) for j in body["jobs"]], body.get("next_cursor"))


def _enqueued(body: Any) -> list[Enqueued]:
    results = [
        None if item.get("job") is None else Enqueued(job_from_json(item["job"]), bool(item["created"]))
        for item in body["jobs"]
    ]
    conflicts = [item["error"] for item in body["jobs"] if item.get("error")]
    if conflicts:
        # The batch committed all the same: the error says so, and carries what was enqueued.
        fields = ", ".join(str(c.get("field")) for c in conflicts)
        message = (
            f"{len(conflicts)} of {len(results)} documents reuse an idempotency key with different "
            f"content ({fields}); the other {len(results) - len(conflicts)} were enqueued"
        )
        raise IdempotencyConflictError(409, "idempotency_conflict", message, results=results)
    return [r for r in results if r is not None]


def enqueue(document: Mapping[str, Any]) -> Call[Enqueued]:
    def decode(body: Any) -> Enqueued:
        return Enqueued(job_from_json(body["job"]), bool(body["created"]))

    return Call("POST", f"{API}/jobs", decode, json=dict(document), has_body=True)


def enqueue_many(documents: Iterable[Mapping[str, Any]]) -> Call[list[Enqueued]]:
    return Call("POST", f"{API}/jobs/batch", _enqueued, json=[dict(d) for d in documents], has_body=True)


def get(job_id: str) -> Call[Job]:
    return Call("GET", _job_path(job_id), job_from_json, job_id=job_id)


def list_jobs(
    *,
    states: Sequence[str] = (),
    queues: Sequence[str] = (),
    kinds: Sequence[str] = (),
    text: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Call[Page]:
    params = _params(state=list(states), queue=list(queues), kind=list(kinds), text=text, limit=limit)
    return Call("GET", f"{API}/jobs", _page, params + _params(cursor=cursor))


def logs(
    job_id: str, *, attempt: int | None = None, after_seq: int = 0, limit: int = 10_000
) -> Call[list[LogLine]]:
    def decode(body: Any) -> list[LogLine]:
        return [log_line_from_json(line) for line in body["lines"]]

    params = _params(attempt=attempt, after_seq=after_seq, limit=limit)
    return Call("GET", _job_path(job_id, "/logs"), decode, params, job_id=job_id)


def cancel(job_id: str) -> Call[Job]:
    return Call("POST", _job_path(job_id, "/cancel"), job_from_json, job_id=job_id)


def retry(job_id: str) -> Call[Job]:
    return Call("POST", _job_path(job_id, "/retry"), job_from_json, job_id=job_id)


def dlq_list(*, queues: Sequence[str] = (), limit: int = 50, cursor: str | None = None) -> Call[Page]:
    return Call("GET", f"{API}/dlq", _page, _params(queue=list(queues), limit=limit, cursor=cursor))


def dlq_requeue(job_id: str) -> Call[Job]:
    return Call("POST", f"{API}/dlq/{quote(job_id, safe='')}/requeue", job_from_json, job_id=job_id)


def dlq_requeue_all(queue: str | None = None) -> Call[list[str]]:
    return Call("POST", f"{API}/dlq/requeue", lambda body: list(body["jobs"]), _params(queue=queue))


def dlq_purge(queue: str | None = None) -> Call[int]:
    return Call("DELETE", f"{API}/dlq", lambda body: int(body["purged"]), _params(queue=queue))


def queues() -> Call[list[QueueInfo]]:
    return Call("GET", f"{API}/queues", lambda body: [queue_from_json(q) for q in body["queues"]])


def queue(name: str) -> Call[QueueInfo]:
    return Call("GET", _queue_path(name), queue_from_json)


def pause_queue(name: str) -> Call[None]:
    return Call("POST", _queue_path(name, "/pause"), lambda body: None)


def resume_queue(name: str) -> Call[None]:
    return Call("POST", _queue_path(name, "/resume"), lambda body: None)


def set_queue_limits(name: str, limits: Mapping[str, Any]) -> Call[QueueInfo]:
    """Replace the queue's limits with the flat limits document (``{}`` clears them)."""
    return Call("PUT", _queue_path(name, "/limits"), queue_from_json, json=dict(limits), has_body=True)


def schedules() -> Call[list[Schedule]]:
    return Call("GET", f"{API}/schedules", lambda body: [schedule_from_json(s) for s in body["schedules"]])


def schedule(name: str) -> Call[Schedule]:
    return Call("GET", _schedule_path(name), schedule_from_json)


def put_schedule(name: str, document: Mapping[str, Any]) -> Call[Schedule]:
    """Create or redefine the schedule from a schedule document (its ``name`` may be left out)."""
    return Call("PUT", _schedule_path(name), schedule_from_json, json=dict(document), has_body=True)


def remove_schedule(name: str) -> Call[None]:
    return Call("DELETE", _schedule_path(name), lambda body: None)


def pause_schedule(name: str) -> Call[Schedule]:
    return Call("POST", _schedule_path(name, "/pause"), schedule_from_json)


def resume_schedule(name: str) -> Call[Schedule]:
    return Call("POST", _schedule_path(name, "/resume"), schedule_from_json)


def workers() -> Call[list[WorkerInfo]]:
    return Call("GET", f"{API}/workers", lambda body: [worker_from_json(w) for w in body["workers"]])


def workflows() -> Call[list[dict[str, JSON]]]:
    """The server's workflow definitions, as JSON (``relay.client.wire.workflow_definition_to_json``)."""
    return Call("GET", f"{API}/workflows", lambda body: list(body["workflows"]))


def trigger_workflow(name: str, params: Mapping[str, str]) -> Call[WorkflowRun]:
    path = f"{API}/workflows/{quote(name, safe='')}/runs"
    return Call("POST", path, workflow_run_from_json, json={"params": dict(params)}, has_body=True)


def workflow_run(run_id: str) -> Call[WorkflowRun]:
    return Call("GET", _run_path(run_id), workflow_run_from_json)


def workflow_runs(
    *, workflow: str | None = None, limit: int = 50, cursor: str | None = None
) -> Call[RunPage]:
    def decode(body: Any) -> RunPage:
        return RunPage([workflow_run_from_json(r) for r in body["runs"]], body.get("next_cursor"))

    params = _params(workflow=workflow, limit=limit, cursor=cursor)
    return Call("GET", f"{API}/workflow-runs", decode, params)


def cancel_workflow_run(run_id: str) -> Call[WorkflowRun]:
    return Call("POST", _run_path(run_id, "/cancel"), workflow_run_from_json)


def retry_workflow_step(run_id: str, step: str) -> Call[WorkflowRun]:
    path = _run_path(run_id, f"/steps/{quote(step, safe='')}/retry")
    return Call("POST", path, workflow_run_from_json)


def ready() -> Call[bool]:
    return Call("GET", "/readyz", lambda body: True)


def result(call: Call[T], status: int, body: Any) -> T:
    """What ``call`` returns for a response with ``status`` and its decoded JSON ``body``."""
    if status >= 400:
        raise error_from_response(status, body, call.job_id)
    return call.decode(body)
