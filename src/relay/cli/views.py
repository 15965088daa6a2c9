"""Jobs, queues, workers and log lines as the ``relay`` command shows them: JSON objects and rich tables.

The JSON form of a job is every field of :class:`relay.types.Job` except ``lease_token`` (the fence of
the worker that holds the job: an operator never needs it, and must not be able to forge a worker's
writes with it). Chained jobs are shown as the job documents that would create them.
"""

from __future__ import annotations

import shlex
from dataclasses import fields
from datetime import UTC, datetime
from enum import Enum

import orjson
from rich.console import Group
from rich.table import Table
from rich.text import Text

from relay.cli.output import format_age, format_time
from relay.client.wire import limits_to_json
from relay.jobs.cron import describe_spec
from relay.jobs.document import document_from_job
from relay.jobs.limits import format_rate
from relay.types import (
    JSON,
    AttemptError,
    Backoff,
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
    WorkerInfo,
)

_HIDDEN_FIELDS = frozenset({"lease_token"})
_STATE_STYLES = {
    JobState.PENDING: "cyan",
    JobState.SCHEDULED: "blue",
    JobState.RUNNING: "yellow",
    JobState.COMPLETED: "green",
    JobState.FAILED: "magenta",
    JobState.DEAD: "red",
    JobState.CANCELLED: "dim",
}
SUMMARY_WIDTH = 60
ID_WIDTH = 36  # a job id as relay makes them: never shortened, so that it can be copied
_SUMMARY_LABELS = {JobKind.SHELL: "command", JobKind.TASK: "task", JobKind.EXTERNAL: "payload"}


# -- JSON -------------------------------------------------------------------------------------------


def to_json_value(value: object) -> JSON:
    """A field of a job (or any record of relay.types) as plain JSON."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Backoff):
        return {"kind": value.kind.value, "base": value.base, "max": value.max}
    if isinstance(value, NewJob):
        return document_from_job(value)
    if isinstance(value, AttemptError):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [to_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    return value


def job_to_json(job: Job) -> dict[str, JSON]:
    return {f.name: to_json_value(getattr(job, f.name)) for f in fields(job) if f.name not in _HIDDEN_FIELDS}


def log_line_to_json(line: LogLine) -> dict[str, JSON]:
    return {f.name: to_json_value(getattr(line, f.name)) for f in fields(line)}


def queue_to_json(queue: QueueInfo) -> dict[str, JSON]:
    return {
        "name": queue.name,
        "paused": queue.paused,
        "counts": {state.value: queue.counts.get(state, 0) for state in JobState},
        "oldest_pending_at": to_json_value(queue.oldest_pending_at),
        "limits": limits_to_json(queue.limits),
        "tokens": queue.tokens,
    }


def schedule_to_json(schedule: Schedule) -> dict[str, JSON]:
    out = {f.name: to_json_value(getattr(schedule, f.name)) for f in fields(schedule)}
    out["description"] = describe_schedule(schedule)
    return out


def worker_to_json(worker: WorkerInfo) -> dict[str, JSON]:
    return {f.name: to_json_value(getattr(worker, f.name)) for f in fields(worker)}


# -- one-line summaries -----------------------------------------------------------------------------


def summary(job: Job | NewJob) -> str:
    """What the job runs, in one short line: the command, the task call, or the external payload."""
    payload = job.payload
    if job.kind is JobKind.SHELL and isinstance(payload, dict):
        argv = payload.get("argv")
        if payload.get("shell") or not isinstance(argv, list):
            return str(payload.get("command", ""))
        return shlex.join(str(a) for a in argv)
    if job.kind is JobKind.TASK and isinstance(payload, dict):
        args = [orjson.dumps(a).decode() for a in payload.get("args") or []]
        args += [f"{k}={orjson.dumps(v).decode()}" for k, v in (payload.get("kwargs") or {}).items()]
        return f"{payload.get('task', '?')}({', '.join(args)})"
    return orjson.dumps(payload).decode()


def state_text(state: JobState) -> Text:
    return Text(state.value, style=_STATE_STYLES.get(state, ""))


def attempts(job: Job) -> str:
    """``attempt/most`` where ``most`` is 1 + max_retries: the number of runs the job may get."""
    return f"{job.attempt}/{job.max_retries + 1}"


# -- tables -----------------------------------------------------------------------------------------


def _table(*headers: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=True)
    return table


def jobs_table(jobs: list[Job], now: datetime | None = None) -> Table:
    table = _table("ID", "QUEUE", "KIND", "STATE", "ATTEMPT", "CREATED")
    table.columns[0].min_width = ID_WIDTH
    table.add_column("SUMMARY", no_wrap=True, overflow="ellipsis", max_width=SUMMARY_WIDTH)
    for job in jobs:
        table.add_row(
            job.id,
            Text(job.queue),
            job.kind.value,
            state_text(job.state),
            attempts(job),
            format_age(job.created_at, now),
            Text(summary(job)),
        )
    return table


def dead_jobs_table(jobs: list[Job], now: datetime | None = None) -> Table:
    table = _table("ID", "QUEUE", "KIND", "ATTEMPTS", "DIED")
    table.columns[0].min_width = ID_WIDTH
    table.add_column("LAST ERROR", no_wrap=True, overflow="ellipsis", max_width=SUMMARY_WIDTH)
    table.add_column("SUMMARY", no_wrap=True, overflow="ellipsis", max_width=40)
    for job in jobs:
        last = job.errors[-1] if job.errors else None
        table.add_row(
            job.id,
            Text(job.queue),
            job.kind.value,
            str(job.attempt),
            format_age(job.finished_at or job.updated_at, now),
            Text(f"{last.type}: {last.message}" if last else "-"),
            Text(summary(job)),
        )
    return table


def queues_table(queues: list[QueueInfo]) -> Table:
    table = _table("QUEUE", "PAUSED", *(state.value.upper() for state in JobState))
    for queue in queues:
        counts = [str(queue.counts.get(state, 0)) for state in JobState]
        table.add_row(Text(queue.name), "yes" if queue.paused else "no", *counts)
    return table


def limits_table(queues: list[QueueInfo]) -> Table:
    """``relay queue list``: each queue's limits and what it uses of them now."""
    table = _table("QUEUE", "PAUSED", "RATE", "PER KEY", "RUNNING", "PER KEY RUNNING", "TOKENS", "ON DEAD")
    for queue in queues:
        limits = queue.limits
        running = queue.counts.get(JobState.RUNNING, 0)
        table.add_row(
            Text(queue.name),
            "yes" if queue.paused else "no",
            rate_text(limits.rate),
            rate_text(limits.key_rate),
            f"{running} of {limits.concurrency}" if limits.concurrency is not None else str(running),
            "-" if limits.key_concurrency is None else f"at most {limits.key_concurrency}",
            "-" if queue.tokens is None else f"{queue.tokens:.1f}",
            limits.ordering_dead.value,
        )
    return table


def rate_text(limit: RateLimit | None) -> str:
    return "-" if limit is None else f"{format_rate(limit.rate)}, burst {limit.burst}"


def limits_text(limits: QueueLimits) -> str:
    """One line for people: "rate 100/s, burst 20; at most 5 running"."""
    parts = []
    if limits.rate is not None:
        parts.append(f"rate {rate_text(limits.rate)}")
    if limits.key_rate is not None:
        parts.append(f"per rate_key {rate_text(limits.key_rate)}")
    if limits.concurrency is not None:
        parts.append(f"at most {limits.concurrency} running")
    if limits.key_concurrency is not None:
        parts.append(f"at most {limits.key_concurrency} running per concurrency_key")
    if limits.ordering_dead is OrderingDead.BLOCK:
        parts.append("a dead job holds its ordering key")
    return "; ".join(parts) or "no limits"


def describe_schedule(schedule: Schedule) -> str:
    return describe_spec(schedule.spec, schedule.timezone)


def schedules_table(schedules: list[Schedule], now: datetime | None = None) -> Table:
    table = _table("SCHEDULE", "WHEN", "TIMEZONE", "RUNS", "NEXT RUN", "LAST RUN", "PAUSED")
    for schedule in schedules:
        table.add_row(
            Text(schedule.name),
            Text(f"{schedule.spec} ({describe_schedule(schedule)})"),
            Text(schedule.timezone),
            Text(f"{schedule.job.queue}: {summary(schedule.job)}"),
            Text("-" if schedule.paused else _when(schedule.next_run_at, now)),
            Text(_when(schedule.last_run_at, now)),
            "yes" if schedule.paused else "no",
        )
    return table


def _when(moment: datetime | None, now: datetime | None) -> str:
    return "-" if moment is None else f"{format_time(moment)} ({format_age(moment, now)})"


def workers_table(workers: list[WorkerInfo], now: datetime | None = None) -> Table:
    table = _table("WORKER", "QUEUES", "SLOTS", "RUNNING", "STARTED", "LAST HEARTBEAT")
    for worker in workers:
        table.add_row(
            Text(worker.id),
            Text(",".join(worker.queues)),
            str(worker.concurrency),
            str(len(worker.running)),
            format_age(worker.started_at, now),
            format_age(worker.last_heartbeat_at, now),
        )
    return table


# -- one job in full --------------------------------------------------------------------------------


def job_details(job: Job) -> Group:
    """``relay status ID``: the job's fields, then its errors per attempt."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for name, value in _detail_rows(job):
        grid.add_row(name, value)
    parts: list[Table | Text] = [grid]
    if job.errors:
        parts.append(Text("\nerrors", style="bold"))
        parts.extend(_error_text(error) for error in job.errors)
    return Group(*parts)


def _detail_rows(job: Job) -> list[tuple[str, Text]]:
    now = datetime.now(UTC)
    rows = [
        ("id", Text(job.id)),
        ("state", state_text(job.state)),
        ("queue", Text(job.queue)),
        ("kind", Text(job.kind.value)),
        (_SUMMARY_LABELS[job.kind], Text(summary(job))),
        ("attempt", Text(f"{job.attempt} of at most {job.max_retries + 1} (max_retries {job.max_retries})")),
        ("priority", Text(str(job.priority))),
        ("created", Text(f"{format_time(job.created_at)} ({format_age(job.created_at, now)})")),
        ("run at", Text(f"{format_time(job.run_at)} ({format_age(job.run_at, now)})")),
        ("started", Text(format_time(job.started_at))),
        ("finished", Text(format_time(job.finished_at))),
    ]
    rows += [(name, value) for name, value in _optional_rows(job) if value is not None]
    return rows


def _optional_rows(job: Job) -> list[tuple[str, Text | None]]:
    def maybe(value: object) -> Text | None:
        return None if value in (None, "", (), {}, False) else Text(_compact(value))

    return [
        ("worker", maybe(job.worker_id)),
        ("lease until", maybe(job.lease_expires_at and format_time(job.lease_expires_at))),
        ("cancel", maybe(job.cancel_requested and "requested; its worker stops it at its next heartbeat")),
        ("progress", maybe(job.progress is not None and f"{job.progress:g}")),
        ("timeout", maybe(job.timeout is not None and f"{job.timeout:g}s")),
        ("backoff", Text(f"{job.backoff.kind.value} (base {job.backoff.base:g}s, max {job.backoff.max:g}s)")),
        ("idempotency key", maybe(job.idempotency_key)),
        ("unique", maybe(_unique_text(job))),
        ("rate key", maybe(job.rate_key)),
        ("concurrency key", maybe(job.concurrency_key)),
        ("ordering key", maybe(job.ordering_key and _ordering_text(job))),
        ("parent", maybe(job.parent_id)),
        ("tags", maybe(", ".join(job.tags))),
        ("metadata", maybe(job.metadata)),
        ("on success", maybe(job.on_success and document_from_job(job.on_success))),
        ("on failure", maybe(job.on_failure and document_from_job(job.on_failure))),
        ("result", maybe(job.result)),
    ]


def _unique_text(job: Job) -> str | None:
    if job.idempotency_key is None or (job.unique_until is None and job.unique_while.value == "stored"):
        return None
    parts = []
    if job.unique_until is not None:
        parts.append(f"until {format_time(job.unique_until)}")
    if job.unique_while.value == "active":
        parts.append("while pending, scheduled, running or failed")
    return "the key holds " + " and ".join(parts)


def _ordering_text(job: Job) -> str:
    assert job.ordering_key is not None
    return job.ordering_key + (" (held: waits for an earlier job of its key)" if job.held else "")


def _compact(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def _error_text(error: AttemptError) -> Text:
    text = Text("  ")
    text.append(f"attempt {error.attempt}", style="bold")
    text.append(f"  {format_time(error.at)}  ")
    text.append(error.type, style="red")
    text.append(f": {error.message}")
    if error.exit_code is not None:
        text.append(f" (exit code {error.exit_code})")
    _append_tail(text, "stderr", error.stderr_tail)
    _append_tail(text, "traceback", error.traceback)
    return text


def _append_tail(text: Text, label: str, block: str | None, lines: int = 10) -> None:
    if not block or not block.strip():
        return
    tail = block.rstrip("\n").splitlines()[-lines:]
    text.append(f"\n    {label} (last lines):\n", style="dim")
    text.append("\n".join(f"      {line}" for line in tail))
