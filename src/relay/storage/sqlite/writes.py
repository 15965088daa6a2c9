"""The hot path: insert, claim, heartbeat, finish, log append (semantics.md rules 1 to 5).

Each function runs on the connection's thread inside one ``BEGIN IMMEDIATE`` transaction
(:meth:`Database.write`): whatever it reads stays true until it commits, so a fence read first and
written after is still a fence. Batches are one ``executemany`` per statement, never a round trip per
job, and the per-job Python work is a tuple or a dict of parameters.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from relay.errors import DuplicateJobError
from relay.storage.params import (
    ClaimParams,
    FinishItem,
    FinishResult,
    HeartbeatItem,
    HeartbeatResult,
    InsertResult,
    LogAppend,
)
from relay.storage.sql_rows import Row, dumps, dumps_or_null
from relay.storage.sqlite.rows import (
    IDEMPOTENCY_KEY,
    INSERT_QUERIES,
    claim_order,
    from_us,
    job_from_row,
    new_job,
    to_us,
)
from relay.storage.sqlite.sql import Q
from relay.types import Job, JobState, NewJob, Outcome, new_job_ids

# -- insert --------------------------------------------------------------------------------------


def insert_jobs(
    conn: sqlite3.Connection,
    now: datetime,
    specs: Sequence[NewJob],
    parents: Sequence[str | None] | None = None,
    *,
    skip_taken_ids: bool = False,
) -> list[InsertResult]:
    """Insert ``specs`` (rule 1). A taken client id raises :class:`DuplicateJobError` before anything
    is written, or, with ``skip_taken_ids`` (chained jobs), leaves that job out as already enqueued."""
    now_us = to_us(now)
    stamp = from_us(now_us)
    existing = _existing_by_key(conn, specs)
    results: list[InsertResult] = []
    rows: list[Row] = []
    created: list[Job] = []  # the job of each row, same positions
    fresh = iter(new_job_ids(sum(1 for spec in specs if spec.id is None)))
    for spec, parent in zip(specs, parents or [None] * len(specs), strict=True):
        key = spec.idempotency_key
        if key is not None and key in existing:
            results.append(InsertResult(existing[key], created=False))
            continue
        row, job = new_job(spec, spec.id or next(fresh), now, now_us, stamp, parent)
        if key is not None:
            existing[key] = job  # a later job of this batch with the same key gets this one
        rows.append(row)
        results.append(InsertResult(job, created=True))
        created.append(job)
    taken = _taken_rows(conn, specs, created)
    if taken and not skip_taken_ids:
        raise DuplicateJobError(created[min(taken)].id)
    if taken:
        dropped = {id(created[i]) for i in taken}
        rows = [row for i, row in enumerate(rows) if i not in taken]
        created = [job for i, job in enumerate(created) if i not in taken]
        results = [r for r in results if not r.created or id(r.job) not in dropped]
    # Consecutive rows of one shape go in one executemany; never reordered, so seq follows the batch.
    for size, same_shape in itertools.groupby(rows, key=len):
        conn.executemany(Q[INSERT_QUERIES[size]], same_shape)
    conn.executemany(Q["queue_register"], [(q,) for q in dict.fromkeys(job.queue for job in created)])
    return results


def _existing_by_key(conn: sqlite3.Connection, specs: Sequence[NewJob]) -> dict[str, Job]:
    keys = [s.idempotency_key for s in specs if s.idempotency_key is not None]
    if not keys:
        return {}
    rows = conn.execute(Q["job_by_idempotency_keys"], {"keys": dumps(keys)}).fetchall()
    return {row[IDEMPOTENCY_KEY]: job_from_row(row) for row in rows}


def _taken_rows(conn: sqlite3.Connection, specs: Sequence[NewJob], created: list[Job]) -> set[int]:
    """Positions in ``created`` whose client-chosen id is already stored or came earlier in the batch.

    Generated ids are unique by construction, so a batch without client ids costs no query."""
    if all(s.id is None for s in specs):
        return set()
    chosen = {s.id for s in specs if s.id is not None}
    ids = [job.id for job in created if job.id in chosen]
    stored = {r[0] for r in conn.execute(Q["job_ids_taken"], {"ids": dumps(ids)})}
    seen: set[str] = set()
    taken: set[int] = set()
    for i, job in enumerate(created):
        if job.id in stored or job.id in seen:
            taken.add(i)
        seen.add(job.id)
    return taken


# -- claim ---------------------------------------------------------------------------------------


def claim_jobs(conn: sqlite3.Connection, now: datetime, p: ClaimParams) -> list[Job]:
    """Rule 2: due scheduled / failed jobs of these queues become pending, then one UPDATE ...
    RETURNING claims (see queries.sql for why the promotion comes first)."""
    queues = dumps(list(dict.fromkeys(p.queues)))  # a repeated queue would count twice
    now_us = to_us(now)
    conn.execute(Q["job_claim_promote"], {"now": now_us, "queues": queues})
    params = {
        "now": now_us,
        "worker_id": p.worker_id,
        "limit": p.limit,
        "queues": queues,
        "kinds": dumps([str(k) for k in p.kinds]),
    }
    rows = conn.execute(Q["job_claim"], params).fetchall()
    rows.sort(key=claim_order)
    return [job_from_row(r) for r in rows]


# -- heartbeat and finish ------------------------------------------------------------------------


# Positions in a job_running_fence row.
_TOKEN, _CANCEL, _ATTEMPT, _MAX_RETRIES, _QUEUE, _ON_SUCCESS, _ON_FAILURE = range(1, 8)


def _running(conn: sqlite3.Connection, ids: list[str]) -> dict[str, Row]:
    """``id -> job_running_fence row`` of the running jobs among ``ids``: what the lease-token fence
    (and the choice between retry and dead) decides on."""
    rows = conn.execute(Q["job_running_fence"], {"ids": dumps(ids)}).fetchall()
    return {row[0]: row for row in rows}


def heartbeat_jobs(
    conn: sqlite3.Connection, now: datetime, items: Sequence[HeartbeatItem]
) -> HeartbeatResult:
    """Rule 3."""
    running = _running(conn, [item.job_id for item in items])
    extended: set[str] = set()
    lost: set[str] = set()
    cancel: set[str] = set()
    updates: list[dict[str, Any]] = []
    now_us = to_us(now)
    for item in items:
        fence = running.get(item.job_id)
        if fence is None or fence[_TOKEN] != item.lease_token:
            lost.add(item.job_id)
            continue
        extended.add(item.job_id)
        if fence[_CANCEL]:
            cancel.add(item.job_id)
        save = item.save_checkpoint or item.checkpoint is not None
        updates.append(
            {
                "now": now_us,
                "progress": item.progress,
                "save_checkpoint": save,
                "checkpoint": dumps_or_null(item.checkpoint) if save else None,
                "id": item.job_id,
                "lease_token": item.lease_token,
            }
        )
    conn.executemany(Q["job_heartbeat"], updates)
    return HeartbeatResult(frozenset(extended), frozenset(lost), frozenset(cancel))


def finish_jobs(
    conn: sqlite3.Connection, now: datetime, items: Sequence[FinishItem]
) -> tuple[list[FinishResult], list[str]]:
    """Rule 4; returns the results and the queues that got a waiting job (for the notifier)."""
    running = _running(conn, [item.job_id for item in items])
    now_us = to_us(now)
    results: list[FinishResult] = []
    updates: list[dict[str, Any]] = []
    chains: list[NewJob] = []
    parents: list[str] = []
    woken: list[str] = []
    for item in items:
        # pop: a job listed twice in one batch is finished once; the repeat finds no lease.
        fence = running.pop(item.job_id, None)
        if fence is None or fence[_TOKEN] != item.lease_token:
            results.append(FinishResult(item.job_id, None))
            continue
        state, update = _finish_update(item, fence, now, now_us)
        updates.append(update)
        results.append(FinishResult(item.job_id, state))
        chain = {JobState.COMPLETED: fence[_ON_SUCCESS], JobState.DEAD: fence[_ON_FAILURE]}.get(state)
        if chain is not None:
            chains.append(NewJob.from_json(orjson.loads(chain)))
            parents.append(item.job_id)
        if state is JobState.PENDING:
            woken.append(fence[_QUEUE])
    conn.executemany(Q["job_finish"], updates)
    if chains:
        inserted = insert_jobs(conn, now, chains, parents, skip_taken_ids=True)
        woken.extend(r.job.queue for r in inserted if r.created)
    return results, woken


def _finish_update(
    item: FinishItem, fence: Row, now: datetime, now_us: int
) -> tuple[JobState, dict[str, Any]]:
    """The new state of a fenced job and the parameters of ``job_finish`` that record it."""
    attempt, max_retries = fence[_ATTEMPT], fence[_MAX_RETRIES]
    run_at: int | None = None
    finished_at: int | None = now_us
    error = None if item.error is None else dumps(item.error.to_json())
    outcome = item.outcome
    if fence[_CANCEL] and outcome in (Outcome.FAILED, Outcome.RELEASED):
        outcome = Outcome.CANCELLED  # asked to cancel: a failure or release must not run it again
    if outcome is Outcome.COMPLETED:
        state, error = JobState.COMPLETED, None
    elif outcome is Outcome.FAILED and item.retryable and attempt <= max_retries:
        state, finished_at = JobState.FAILED, None
        run_at = to_us(now + timedelta(seconds=item.retry_delay))
    elif outcome is Outcome.FAILED:
        state = JobState.DEAD
    elif outcome is Outcome.CANCELLED:
        state = JobState.CANCELLED
    else:  # RELEASED: back to pending, the attempt given back, run_at and errors untouched
        state, finished_at, error = JobState.PENDING, None, None
    return state, {
        "state": state.value,
        "result": dumps_or_null(item.result) if state is JobState.COMPLETED else None,
        "run_at": run_at,
        "finished_at": finished_at,
        "give_back": 1 if state is JobState.PENDING else 0,
        "error": error,
        "now": now_us,
        "id": item.job_id,
        "lease_token": item.lease_token,
    }


# -- logs ----------------------------------------------------------------------------------------


def append_logs(conn: sqlite3.Connection, now: datetime, lines: Sequence[LogAppend]) -> None:
    """Rule 5: one executemany; each line is numbered after the lines before it (same statement)."""
    now_us = to_us(now)
    conn.executemany(
        Q["job_log_append"],
        [
            {"job_id": ln.job_id, "attempt": ln.attempt, "stream": ln.stream, "text": ln.text, "now": now_us}
            for ln in lines
        ],
    )
