"""What the SQL backends (SQLite, PostgreSQL) share about job rows: the column order and the encoders.

Each backend still decodes its own rows (times are integer microseconds on SQLite, timestamptz on
PostgreSQL; JSON arrives as text on one and parsed on the other); the schema is the same on both.
"""

from __future__ import annotations

from typing import Any

import orjson

from relay.types import JSON, Backoff, BackoffKind, JobKind, JobState, NewJob, UniqueWhile

#: The jobs table's columns, in table order: the shape of every ``SELECT *`` / ``RETURNING *`` row.
JOB_COLUMNS = (
    "seq", "id", "queue", "kind", "state", "priority", "attempt", "max_retries",
    "backoff_kind", "backoff_base", "backoff_max", "timeout", "lease", "run_at", "created_at",
    "updated_at", "started_at", "finished_at", "lease_token", "lease_expires_at", "worker_id",
    "cancel_requested", "progress", "idempotency_key", "parent_id", "payload", "on_success",
    "on_failure", "tags", "metadata", "checkpoint", "result", "errors",
    # flow control (migration 0002 on SQLite, 0003 on PostgreSQL): appended, as ALTER TABLE adds them
    "rate_key", "concurrency_key", "ordering_key", "held", "unique_until", "unique_while",
    # storage's own, not a Job field: a dead job that keeps its ordering key held (it died while its
    # queue's ordering_dead was "block"; decided when it dies)
    "dead_blocks",
    # workflows (issue 13): the run a job is a step of, and the step's name
    "workflow_run_id", "workflow_step",
)  # fmt: skip

Row = tuple[Any, ...]

# Enum lookups by value through a dict: cheaper than calling the enum class for every row.
STATES = {s.value: s for s in JobState}
UNIQUE_WHILE = {u.value: u for u in UniqueWhile}
KINDS = {k.value: k for k in JobKind}
_BACKOFFS: dict[tuple[str, float, float], Backoff] = {}


def backoff(kind: str, base: float, max_: float) -> Backoff:
    # Backoff is frozen, so equal policies share one instance; few distinct policies exist.
    key = (kind, base, max_)
    found = _BACKOFFS.get(key)
    if found is None:
        found = _BACKOFFS[key] = Backoff(BackoffKind(kind), base, max_)
    return found


def dumps(value: JSON) -> str:
    return orjson.dumps(value).decode()


def dumps_or_null(value: JSON) -> str | None:
    """JSON text, or SQL NULL for None (a missing checkpoint or result)."""
    return None if value is None else orjson.dumps(value).decode()


def chain_json(chain: NewJob | None) -> str | None:
    return None if chain is None else orjson.dumps(chain.to_json()).decode()
