"""The hot path: insert, claim, heartbeat, finish, log append (semantics.md rules 1 to 5).

Each function runs on the backend's loop with a pooled autocommit connection, and each operation is one
statement (see queries.sql): it is its own transaction, atomic, and costs one round trip whatever the
batch size (a workflow's step takes a transaction of its own: :func:`_finish_steps`). Python only
shapes parameters and maps rows back. The batches of the hot path go as one JSON
array per column (:func:`.rows.json_array`): orjson writes each in one call, where psycopg would adapt a
list element by element, and guess its type first, at every execution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from relay.storage.params import (
    ClaimedJobs,
    ClaimParams,
    FinishItem,
    FinishResult,
    HeartbeatItem,
    HeartbeatResult,
    InsertResult,
    LogAppend,
)
from relay.storage.postgres import workflows
from relay.storage.postgres.inserts import IdTaken, InsertBatch, duplicate_async, insert_async
from relay.storage.postgres.rows import SEQ, claim_order, job_from_row, json_array, log_text
from relay.storage.postgres.sql import Q
from relay.types import JobState, Outcome

Conn = AsyncConnection[Any]


async def insert_jobs(conn: Conn, now: datetime | None, batch: InsertBatch) -> list[InsertResult]:
    """Rule 1 in one statement (plus a lookup when an idempotency key was already taken)."""
    try:
        return await insert_async(conn, now, batch)
    except IdTaken:
        # Autocommit: the failed statement is rolled back already, nothing of the batch is stored.
        raise await duplicate_async(conn, batch) from None


#: A claim through relay.claim_limited passes over at most this many due jobs that a key's limit refuses
#: (key_concurrency, key_rate) before it stops and returns what it took. Jobs of a queue whose own
#: limit is spent are not read at all (the walk leaves the queue out).
MAX_PASSED = 1000
_MAX_HINTS = 1024  # queue lists remembered as limited (a process serves a handful)


async def claim_jobs(
    conn: Conn, now: datetime | None, p: ClaimParams, limited: set[tuple[str, ...]]
) -> ClaimedJobs:
    """Rule 2: one statement picks (SKIP LOCKED), marks and returns the jobs; sorted here, since
    RETURNING promises no order.

    A list of queues of which one is limited is claimed by ``job_claim_limited`` instead, which
    ``job_claim`` says (claiming nothing) when it meets one. ``limited`` remembers such lists, so that
    their next claims go there at once (one round trip); ``job_claim_limited`` says when a list is no
    longer limited, and it is forgotten. Either way the database decides: this is only a shortcut.
    """
    queues = list(dict.fromkeys(p.queues))  # a repeated queue would be walked twice
    params = {
        "now": now,
        "queues": json_array(queues),
        "kinds": json_array([k.value for k in p.kinds]),
        "limit": p.limit,
        "worker_id": p.worker_id,
    }
    hint = tuple(queues)
    if hint not in limited:
        cur = await conn.execute(Q["job_claim"], params)
        rows = await cur.fetchall()
        if not rows[0][-1]:  # no limited queue named (the flag of every row)
            if rows[0][SEQ] is None:  # the one row of a claim that took nothing
                return ClaimedJobs()
            rows.sort(key=claim_order)
            return ClaimedJobs([job_from_row(r) for r in rows])
        if len(limited) < _MAX_HINTS:
            limited.add(hint)
    cur = await conn.execute(Q["job_claim_limited"], {**params, "max_passed": MAX_PASSED})
    rows = await cur.fetchall()
    *claimed, last = rows  # the last row: no job, the retry_after and whether a queue was limited
    if not last[-1]:
        limited.discard(hint)
    claimed.sort(key=claim_order)
    return ClaimedJobs([job_from_row(r) for r in claimed], last[-2])


async def heartbeat_jobs(conn: Conn, now: datetime | None, items: Sequence[HeartbeatItem]) -> HeartbeatResult:
    """Rule 3: one statement for the whole batch; an item the statement did not return is lost."""
    unique = list({item.job_id: item for item in reversed(items)}.values())  # first item per job wins
    params = {
        "now": now,
        "id": json_array([i.job_id for i in unique]),
        "lease_token": json_array([i.lease_token for i in unique]),
        "progress": json_array([i.progress for i in unique]),
        "save_checkpoint": json_array([i.save_checkpoint or i.checkpoint is not None for i in unique]),
        "checkpoint": json_array([i.checkpoint for i in unique]),
    }
    cur = await conn.execute(Q["job_heartbeat"], params)
    rows = await cur.fetchall()
    extended = frozenset(job_id for job_id, _ in rows)
    return HeartbeatResult(
        extended=extended,
        lost=frozenset(item.job_id for item in items if item.job_id not in extended),
        cancel_requested=frozenset(job_id for job_id, cancel in rows if cancel),
    )


async def finish_jobs(conn: Conn, now: datetime | None, items: Sequence[FinishItem]) -> list[FinishResult]:
    """Rule 4: one statement records every outcome and inserts the chains. A job listed twice in one
    batch is finished by its first item; the repeat finds no lease. Workflow steps, which the statement
    answers as ``step``, are finished by :func:`_finish_steps`."""
    first: dict[str, FinishItem] = {}
    for item in items:
        first.setdefault(item.job_id, item)
    unique = list(first.values())
    cur = await conn.execute(Q["job_finish"], {**_finish_params(now, unique), "steps": False})
    states: dict[str, JobState] = {}
    steps: dict[str, str] = {}  # job id -> its run, for the steps not finished yet
    for job_id, state, _, run_id, _ in await cur.fetchall():
        if state == "step":
            steps[job_id] = run_id
        else:
            states[job_id] = JobState(state)
    if steps:
        states.update(await _finish_steps(conn, now, [first[i] for i in steps], steps.values()))
    return [
        FinishResult(item.job_id, states.get(item.job_id) if first[item.job_id] is item else None)
        for item in items
    ]


async def _finish_steps(
    conn: Conn, now: datetime | None, items: Sequence[FinishItem], run_ids: Iterable[str]
) -> dict[str, JobState]:
    """The outcomes of workflow steps, with their effects on their runs, in one transaction that locks
    the runs first (the lock order of :mod:`.workflows`). A lease lost since the first statement fenced
    it is lost here too: the fence runs again."""
    async with conn.transaction():
        runs = await workflows.lock_runs(conn, run_ids)
        cur = await conn.execute(Q["job_finish"], {**_finish_params(now, items), "steps": True})
        rows = await cur.fetchall()
        ended = [(run_id, step) for _, state, _, run_id, step in rows if JobState(state) in _FINAL]
        await workflows.steps_ended(conn, now, runs, ended)
    return {job_id: JobState(state) for job_id, state, *_ in rows}


_FINAL = JobState.final()


def _finish_params(now: datetime | None, items: Sequence[FinishItem]) -> dict[str, Any]:
    return {
        "now": now,
        "id": json_array([i.job_id for i in items]),
        "lease_token": json_array([i.lease_token for i in items]),
        "outcome": json_array([i.outcome.value for i in items]),
        "result": json_array([i.result if i.outcome is Outcome.COMPLETED else None for i in items]),
        "error": json_array([None if i.error is None else i.error.to_json() for i in items]),
        "retry_delay": json_array([i.retry_delay for i in items]),
        "retryable": json_array([i.retryable for i in items]),
    }


async def append_logs(conn: Conn, now: datetime | None, lines: Sequence[LogAppend]) -> None:
    """Rule 5: one statement; lines are numbered in append order by one identity sequence."""
    params = {
        "now": now,
        "job_id": [ln.job_id for ln in lines],
        "attempt": [ln.attempt for ln in lines],
        "stream": [ln.stream for ln in lines],
        "text": [log_text(ln.text) for ln in lines],
    }
    await conn.execute(Q["job_log_append"], params)
