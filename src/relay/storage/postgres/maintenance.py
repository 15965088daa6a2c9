"""The leader's duties: reap expired leases, promote due jobs, prune jobs and full token buckets
(semantics.md rules 6-8).

Each is one statement on a pooled autocommit connection (queries.sql), safe to run again: a second run
finds nothing left to do (the reaper adds a transaction for workflow steps, see :func:`reap_expired`).
Leader election itself is in :mod:`.leader`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from relay.storage.params import PruneParams, ReapResult
from relay.storage.postgres import workflows
from relay.storage.postgres.sql import Q

Conn = AsyncConnection[Any]

LEASE_EXPIRED_TYPE = "LeaseExpired"
LEASE_EXPIRED_MESSAGE = "lease expired: the worker stopped heartbeating"


async def reap_expired(conn: Conn, now: datetime | None) -> ReapResult:
    """Rule 6 in one statement, on_failure chains of the jobs that went dead included; then, if any
    workflow step's lease expired too, those steps in a transaction that locks their runs first and
    applies what their end does to the runs (:mod:`.workflows`)."""
    params = {"now": now, "type": LEASE_EXPIRED_TYPE, "message": LEASE_EXPIRED_MESSAGE}
    cur = await conn.execute(Q["job_reap_expired"], {**params, "runs": None})
    rows = await cur.fetchall()
    cur = await conn.execute(Q["workflow_steps_expired"], {"now": now})
    if run_ids := [run_id for (run_id,) in await cur.fetchall()]:
        async with conn.transaction():
            runs = await workflows.lock_runs(conn, run_ids)
            cur = await conn.execute(Q["job_reap_expired"], {**params, "runs": run_ids})
            steps = await cur.fetchall()
            ended = [(run_id, step) for _, state, _, run_id, step in steps if state != "pending"]
            await workflows.steps_ended(conn, now, runs, ended)
        rows.extend(steps)
    by_state: dict[str, list[str]] = {"pending": [], "dead": [], "cancelled": []}
    for job_id, state, *_ in rows:  # in seq order, steps after the rest
        by_state[state].append(job_id)
    return ReapResult(
        requeued=tuple(by_state["pending"]),
        dead=tuple(by_state["dead"]),
        cancelled=tuple(by_state["cancelled"]),
    )


async def promote_due(conn: Conn, now: datetime | None) -> int:
    """Rule 7; returns how many jobs became pending."""
    cur = await conn.execute(Q["job_promote_due"], {"now": now})
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def prune(conn: Conn, now: datetime | None, p: PruneParams) -> int:
    """Rule 8: at most ``p.limit`` jobs, oldest first, with their logs."""
    params = {
        "finished_before": p.finished_before,
        "states": [s.value for s in p.states],
        "limit": p.limit,
    }
    cur = await conn.execute(Q["job_prune"], params)
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def prune_buckets(conn: Conn, now: datetime | None) -> int:
    """Token buckets full again (the same as none) or of limits removed; returns how many."""
    cur = await conn.execute(Q["rate_buckets_prune"], {"now": now})
    return cur.rowcount
