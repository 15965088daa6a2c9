"""The leader's duties: reap expired leases, promote due jobs, prune, elect (semantics.md rules 6-9);
pruning the token buckets is :func:`relay.storage.sqlite.flow.prune_buckets`.

Each function runs on the connection's thread inside one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

import orjson

from relay.storage.params import LeaderParams, PruneParams, ReapResult
from relay.storage.sql_rows import dumps
from relay.storage.sqlite import ordering, workflows
from relay.storage.sqlite.rows import to_us
from relay.storage.sqlite.sql import Q
from relay.storage.sqlite.writes import insert_jobs
from relay.types import JobState, NewJob

LEASE_EXPIRED_TYPE = "LeaseExpired"
LEASE_EXPIRED_MESSAGE = "lease expired: the worker stopped heartbeating"


def reap_expired(conn: sqlite3.Connection, now: datetime) -> tuple[ReapResult, list[str]]:
    """Rule 6, in one UPDATE; then the on_failure chains of the jobs that went dead.

    A workflow's step that went dead or cancelled applies its effects on its run (:mod:`.workflows`).
    Returns the result and the queues to wake: those that got a waiting job, a free slot under a
    concurrency limit, or a released held job (of an ordering key or a workflow)."""
    params = {
        "now": to_us(now),
        "at": now.isoformat(),
        "type": LEASE_EXPIRED_TYPE,
        "message": LEASE_EXPIRED_MESSAGE,
    }
    rows = sorted(conn.execute(Q["job_reap_expired"], params).fetchall())  # by seq
    by_state: dict[str, list[str]] = {s: [] for s in ("pending", "dead", "cancelled")}
    woken: list[str] = []
    chains: list[NewJob] = []
    parents: list[str] = []
    lines: list[ordering.Pair] = []  # ordering keys whose job left its line
    ended: list[tuple[str, str]] = []  # (run, step) of the workflow steps that ended
    for _seq, job_id, state, queue, on_failure, ordering_key, run_id, step in rows:
        by_state[state].append(job_id)
        if state == JobState.PENDING:
            woken.append(queue)
        elif state == JobState.DEAD and on_failure is not None:
            chains.append(NewJob.from_json(orjson.loads(on_failure)))
            parents.append(job_id)
        if ordering_key is not None and state != JobState.PENDING:
            lines.append((queue, ordering_key))
        if run_id is not None and state != JobState.PENDING:
            ended.append((run_id, step))
    if rows:  # every reaped job left running: a slot is free where the queue counts them
        reaped = dumps(list(dict.fromkeys(row[3] for row in rows)))
        woken.extend(name for (name,) in conn.execute(Q["queues_concurrency_limited"], {"queues": reaped}))
    woken.extend(ordering.release(conn, lines))
    if ended:
        woken.extend(workflows.steps_ended(conn, now, ended))
    if chains:
        inserted = insert_jobs(conn, now, chains, parents, skip_taken_ids=True)
        woken.extend(r.job.queue for r in inserted if r.created)
    result = ReapResult(
        requeued=tuple(by_state["pending"]),
        dead=tuple(by_state["dead"]),
        cancelled=tuple(by_state["cancelled"]),
    )
    return result, woken


def promote_due(conn: sqlite3.Connection, now: datetime) -> list[str]:
    """Rule 7; returns the queue of each promoted job."""
    return [queue for (queue,) in conn.execute(Q["job_promote_due"], {"now": to_us(now)})]


def prune(conn: sqlite3.Connection, now: datetime, p: PruneParams) -> tuple[int, list[str]]:
    """Rule 8: at most ``p.limit`` jobs, then the logs of exactly those. Returns how many, and the
    queues of the held jobs released (a pruned dead job may have held its ordering key)."""
    params = {
        "finished_before": to_us(p.finished_before),
        "states": _states(p.states),
        "limit": p.limit,
    }
    rows = conn.execute(Q["job_prune"], params).fetchall()
    if rows:
        conn.execute(Q["job_logs_delete"], {"ids": dumps([job_id for job_id, _, _ in rows])})
    released = ordering.release(conn, ((queue, key) for _, queue, key in rows if key is not None))
    return len(rows), released


def leader_elect(conn: sqlite3.Connection, now: datetime, p: LeaderParams) -> bool:
    """Rule 9."""
    params = {
        "name": p.name,
        "holder": p.holder,
        "now": to_us(now),
        "expires_at": to_us(now + timedelta(seconds=p.ttl)),
    }
    return conn.execute(Q["leader_elect"], params).fetchone() is not None


def leader_resign(conn: sqlite3.Connection, now: datetime, p: LeaderParams) -> None:
    conn.execute(Q["leader_resign"], {"name": p.name, "holder": p.holder})


def _states(states: Sequence[JobState]) -> str:
    return dumps([str(s) for s in states])
