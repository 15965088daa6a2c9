"""Per-job options shared by tasks, shell jobs and raw documents.

Options become a job document and go through ``relay.jobs.document``: one place validates every job,
whichever door it comes in by. A task validates its options once, into a template; each call then only
fills in the payload.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.jobs.document import parse_job_document
from relay.types import JSON, Backoff, NewJob

Duration = float | int | str | timedelta
Chain = NewJob | dict[str, Any]


def _duration(value: Duration) -> float | str:
    return value.total_seconds() if isinstance(value, timedelta) else value


@dataclass(frozen=True)
class JobOptions:
    """How a job is enqueued; ``None`` leaves the default (the task's, then Relay's)."""

    queue: str | None = None
    priority: int | None = None
    delay: Duration | None = None
    run_at: datetime | None = None
    max_retries: int | None = None
    backoff: str | Backoff | None = None
    backoff_base: Duration | None = None
    backoff_max: Duration | None = None
    timeout: Duration | None = None
    lease: Duration | None = None
    idempotency_key: str | None = None
    unique_for: Duration | None = None
    unique_while: str | None = None  # "stored" or "active"
    rate_key: str | None = None
    concurrency_key: str | None = None
    ordering_key: str | None = None
    tags: tuple[str, ...] | list[str] | None = None
    metadata: dict[str, JSON] | None = None
    on_success: Chain | None = None
    on_failure: Chain | None = None
    id: str | None = None

    def merged(self, overrides: JobOptions) -> JobOptions:
        """These options, with every option that ``overrides`` sets."""
        chosen = {f.name: getattr(overrides, f.name) for f in fields(overrides)}
        return replace(self, **{k: v for k, v in chosen.items() if v is not None})

    def document(self, kind: str, payload: JSON) -> dict[str, Any]:
        """The job document these options describe."""
        doc: dict[str, Any] = {"type": kind, "payload": payload}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, NewJob):
                continue
            if f.name in ("delay", "timeout", "lease", "backoff_base", "backoff_max", "unique_for"):
                value = _duration(value)
            elif f.name == "run_at":
                value = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
            elif f.name == "backoff" and isinstance(value, Backoff):
                doc["backoff_base"], doc["backoff_max"] = value.base, value.max
                value = value.kind.value
            elif f.name == "tags":
                value = list(value)
            doc[f.name] = value
        return doc

    def build(self, kind: str, payload: JSON) -> NewJob:
        """A validated NewJob (raises ``InvalidJobError`` naming the field)."""
        job = parse_job_document(self.document(kind, payload))
        if isinstance(self.on_success, NewJob):
            job = replace(job, on_success=self.on_success)
        if isinstance(self.on_failure, NewJob):
            job = replace(job, on_failure=self.on_failure)
        return job
