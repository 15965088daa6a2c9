"""The JSON form of Relay's records on the HTTP API, both ways: the server encodes, the client decodes.

One module for both sides, so that they cannot drift apart. It imports nothing of Relay but
:mod:`relay.types` (the HTTP client must run with nothing else).

A job is every field of :class:`relay.types.Job` except ``lease_token`` (the fence of the worker that
holds the job: an operator never needs it, and must not be able to forge a worker's writes with it).
Datetimes are ISO 8601 strings; chained jobs (``on_success`` / ``on_failure``) are in the canonical form
of :meth:`relay.types.NewJob.to_json`, and so is a schedule's job template.

A workflow run is its fields with its derived ``state`` and ``finished_at``, and its steps as they are
now (``state`` null: the step's job was pruned); a workflow definition is its name, failure policy,
parameters and steps (what each runs, on which queue). ``relay workflow ... --json`` prints the same.

A queue's limits are the flat form the API also accepts (``PUT /api/v1/queues/{name}/limits``): rates
in jobs per second, ``null`` for no limit::

    {"rate": 100.0, "burst": 20, "key_rate": null, "key_burst": null,
     "concurrency": 5, "key_concurrency": null, "ordering_dead": "continue"}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from relay.types import (
    JSON,
    AttemptError,
    Backoff,
    BackoffKind,
    CatchUp,
    FailurePolicy,
    Job,
    JobKind,
    JobState,
    LogLine,
    NewJob,
    OrderingDead,
    QueueInfo,
    QueueLimits,
    RateLimit,
    Schedule,
    UniqueWhile,
    WorkerInfo,
    WorkflowRun,
    WorkflowStep,
)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


_iso_text = _iso


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _chain(value: NewJob | None) -> dict[str, JSON] | None:
    return None if value is None else value.to_json()


def _as_is(value: datetime | None) -> Any:
    return value


def job_to_json(job: Job, *, raw_times: bool = False) -> dict[str, JSON]:
    """The job as the HTTP API shows it. ``raw_times``: times stay datetimes, for a caller that hands
    the dict to orjson at once (which writes them as ``isoformat`` would, several times faster)."""
    _iso = _as_is if raw_times else _iso_text
    return {
        "id": job.id,
        "queue": job.queue,
        "kind": job.kind.value,
        "payload": job.payload,
        "state": job.state.value,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_retries": job.max_retries,
        "backoff": {"kind": job.backoff.kind.value, "base": job.backoff.base, "max": job.backoff.max},
        "timeout": job.timeout,
        "lease": job.lease,
        "run_at": _iso(job.run_at),
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "idempotency_key": job.idempotency_key,
        "on_success": _chain(job.on_success),
        "on_failure": _chain(job.on_failure),
        "tags": list(job.tags),
        "metadata": job.metadata,
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "lease_expires_at": _iso(job.lease_expires_at),
        "worker_id": job.worker_id,
        "cancel_requested": job.cancel_requested,
        "progress": job.progress,
        "checkpoint": job.checkpoint,
        "result": job.result,
        "errors": [error.to_json() for error in job.errors],
        "parent_id": job.parent_id,
        "rate_key": job.rate_key,
        "concurrency_key": job.concurrency_key,
        "ordering_key": job.ordering_key,
        "held": job.held,
        "unique_until": _iso(job.unique_until),
        "unique_while": job.unique_while.value,
        "workflow_run_id": job.workflow_run_id,
        "workflow_step": job.workflow_step,
    }


def job_from_json(d: dict[str, Any]) -> Job:
    backoff = d["backoff"]
    return Job(
        id=d["id"],
        queue=d["queue"],
        kind=JobKind(d["kind"]),
        payload=d.get("payload"),
        state=JobState(d["state"]),
        priority=d["priority"],
        attempt=d["attempt"],
        max_retries=d["max_retries"],
        backoff=Backoff(BackoffKind(backoff["kind"]), backoff["base"], backoff["max"]),
        timeout=d.get("timeout"),
        lease=d["lease"],
        run_at=datetime.fromisoformat(d["run_at"]),
        created_at=datetime.fromisoformat(d["created_at"]),
        updated_at=datetime.fromisoformat(d["updated_at"]),
        idempotency_key=d.get("idempotency_key"),
        on_success=NewJob.from_json(d["on_success"]) if d.get("on_success") else None,
        on_failure=NewJob.from_json(d["on_failure"]) if d.get("on_failure") else None,
        tags=tuple(d.get("tags") or ()),
        metadata=d.get("metadata") or {},
        started_at=_time(d.get("started_at")),
        finished_at=_time(d.get("finished_at")),
        lease_expires_at=_time(d.get("lease_expires_at")),
        worker_id=d.get("worker_id"),
        cancel_requested=bool(d.get("cancel_requested")),
        progress=d.get("progress"),
        checkpoint=d.get("checkpoint"),
        result=d.get("result"),
        errors=tuple(AttemptError.from_json(e) for e in d.get("errors") or ()),
        parent_id=d.get("parent_id"),
        rate_key=d.get("rate_key"),
        concurrency_key=d.get("concurrency_key"),
        ordering_key=d.get("ordering_key"),
        held=bool(d.get("held")),
        unique_until=_time(d.get("unique_until")),
        unique_while=UniqueWhile(d.get("unique_while") or UniqueWhile.STORED),
        workflow_run_id=d.get("workflow_run_id"),
        workflow_step=d.get("workflow_step"),
    )


def log_line_to_json(line: LogLine) -> dict[str, JSON]:
    return {
        "job_id": line.job_id,
        "attempt": line.attempt,
        "seq": line.seq,
        "stream": line.stream,
        "text": line.text,
        "at": line.at.isoformat(),
    }


def log_line_from_json(d: dict[str, Any]) -> LogLine:
    return LogLine(
        d["job_id"], d["attempt"], d["seq"], d["stream"], d["text"], datetime.fromisoformat(d["at"])
    )


def queue_to_json(queue: QueueInfo, now: datetime) -> dict[str, JSON]:
    oldest = queue.oldest_pending_at
    return {
        "name": queue.name,
        "paused": queue.paused,
        "counts": {state.value: queue.counts.get(state, 0) for state in JobState},
        "oldest_pending_at": _iso(oldest),
        # Never negative: a job due "in the future" by clock skew has not waited at all.
        "oldest_pending_age_seconds": None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        "limits": limits_to_json(queue.limits),
        "tokens": queue.tokens,
    }


def queue_from_json(d: dict[str, Any]) -> QueueInfo:
    counts = {JobState(state): int(n) for state, n in (d.get("counts") or {}).items()}
    limits = limits_from_json(d["limits"]) if d.get("limits") else QueueLimits()
    return QueueInfo(
        d["name"], bool(d["paused"]), counts, _time(d.get("oldest_pending_at")), limits, d.get("tokens")
    )


def limits_to_json(limits: QueueLimits) -> dict[str, JSON]:
    rate, key_rate = limits.rate, limits.key_rate
    return {
        "rate": None if rate is None else rate.rate,
        "burst": None if rate is None else rate.burst,
        "key_rate": None if key_rate is None else key_rate.rate,
        "key_burst": None if key_rate is None else key_rate.burst,
        "concurrency": limits.concurrency,
        "key_concurrency": limits.key_concurrency,
        "ordering_dead": limits.ordering_dead.value,
    }


def limits_from_json(d: dict[str, Any]) -> QueueLimits:
    """The limits of a server's answer (trusted: a server checked them; ``relay.jobs.limits`` checks
    what people write)."""
    rate = None if d.get("rate") is None else RateLimit(float(d["rate"]), int(d["burst"]))
    key_rate = None if d.get("key_rate") is None else RateLimit(float(d["key_rate"]), int(d["key_burst"]))
    return QueueLimits(
        rate=rate,
        key_rate=key_rate,
        concurrency=d.get("concurrency"),
        key_concurrency=d.get("key_concurrency"),
        ordering_dead=OrderingDead(d.get("ordering_dead") or OrderingDead.CONTINUE),
    )


def schedule_to_json(schedule: Schedule) -> dict[str, JSON]:
    return {
        "name": schedule.name,
        "schedule": schedule.spec,
        "timezone": schedule.timezone,
        "catch_up": schedule.catch_up.value,
        "paused": schedule.paused,
        "job": schedule.job.to_json(),
        "next_run_at": _iso(schedule.next_run_at),
        "last_run_at": _iso(schedule.last_run_at),
        "last_job_id": schedule.last_job_id,
        "created_at": _iso(schedule.created_at),
        "updated_at": _iso(schedule.updated_at),
    }


def schedule_from_json(d: dict[str, Any]) -> Schedule:
    return Schedule(
        name=d["name"],
        spec=d["schedule"],
        timezone=d["timezone"],
        job=NewJob.from_json(d["job"]),
        catch_up=CatchUp(d["catch_up"]),
        paused=bool(d["paused"]),
        next_run_at=_time(d.get("next_run_at")),
        last_run_at=_time(d.get("last_run_at")),
        last_job_id=d.get("last_job_id"),
        created_at=datetime.fromisoformat(d["created_at"]),
        updated_at=datetime.fromisoformat(d["updated_at"]),
    )


def worker_to_json(worker: WorkerInfo) -> dict[str, JSON]:
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "queues": list(worker.queues),
        "concurrency": worker.concurrency,
        "started_at": worker.started_at.isoformat(),
        "last_heartbeat_at": worker.last_heartbeat_at.isoformat(),
        "running": list(worker.running),
        "running_count": len(worker.running),
    }


def worker_from_json(d: dict[str, Any]) -> WorkerInfo:
    return WorkerInfo(
        id=d["id"],
        host=d["host"],
        pid=d["pid"],
        queues=tuple(d["queues"]),
        concurrency=d["concurrency"],
        started_at=datetime.fromisoformat(d["started_at"]),
        last_heartbeat_at=datetime.fromisoformat(d["last_heartbeat_at"]),
        running=tuple(d.get("running") or ()),
    )


def workflow_definition_to_json(d: Any) -> dict[str, JSON]:
    """``d`` is a :class:`relay.workflows.definitions.WorkflowDefinition`: typed ``Any`` because this
    module must not import ``relay.workflows`` (the client runs with types and errors only). The
    client never decodes a definition: it reads the JSON as it is."""
    return {
        "name": d.name,
        "description": d.description,
        "on_failure": d.policy.value,
        "params": [{"name": p.name, "default": p.default, "required": p.default is None} for p in d.params],
        "steps": [
            {
                "name": s.name,
                "depends_on": list(s.depends_on),
                "runs": s.document.task or s.document.command,
                "queue": s.document.queue or "default",
            }
            for s in d.steps
        ],
        "source": d.source,
    }


def workflow_step_to_json(step: WorkflowStep) -> dict[str, JSON]:
    return {
        "name": step.name,
        "job_id": step.job_id,
        "depends_on": list(step.depends_on),
        "allow_failure": step.allow_failure,
        "state": None if step.state is None else step.state.value,
        "held": step.held,
        "attempt": step.attempt,
        "result": step.result,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
    }


def workflow_run_to_json(run: WorkflowRun) -> dict[str, JSON]:
    return {
        "id": run.id,
        "workflow": run.workflow,
        "state": run.state.value,
        "policy": run.policy.value,
        "params": run.params,
        "cancelled": run.cancelled,
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "steps": [workflow_step_to_json(s) for s in run.steps],
    }


def workflow_step_from_json(d: dict[str, Any]) -> WorkflowStep:
    return WorkflowStep(
        name=d["name"],
        job_id=d["job_id"],
        depends_on=tuple(d["depends_on"]),
        allow_failure=bool(d["allow_failure"]),
        state=None if d.get("state") is None else JobState(d["state"]),
        held=bool(d["held"]),
        attempt=int(d.get("attempt") or 0),
        result=d.get("result"),
        started_at=_time(d.get("started_at")),
        finished_at=_time(d.get("finished_at")),
    )


def workflow_run_from_json(d: dict[str, Any]) -> WorkflowRun:
    """The run (its ``state`` and ``finished_at`` are derived again from the steps)."""
    return WorkflowRun(
        id=d["id"],
        workflow=d["workflow"],
        policy=FailurePolicy(d["policy"]),
        params=dict(d.get("params") or {}),
        cancelled=bool(d["cancelled"]),
        created_at=datetime.fromisoformat(d["created_at"]),
        steps=tuple(workflow_step_from_json(s) for s in d["steps"]),
    )
