"""What operators use: get, list, cancel, requeue, purge, logs, queues, workers (rules 10-18).

Each function runs on the connection's thread inside one transaction (a write for the changes, a read
snapshot for the rest).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from relay.errors import InvalidTransitionError, JobNotFoundError
from relay.storage.params import JobPage, ListParams, LogParams, PurgeParams, RequeueParams
from relay.storage.sql_rows import dumps
from relay.storage.sqlite import flow, ordering, workflows
from relay.storage.sqlite.rows import (
    SEQ,
    from_us_or_none,
    job_from_row,
    log_line_from_row,
    to_us,
    worker_from_row,
    worker_params,
)
from relay.storage.sqlite.sql import Q
from relay.types import Job, JobState, LogLine, QueueInfo, WorkerInfo

_NO_CURSOR = 2**63 - 1  # above every seq: the first page


def _json_list_or_none(values: Sequence[str]) -> str | None:
    """A filter as a JSON array, or None for "no filter" (an empty sequence)."""
    return dumps([str(v) for v in values]) if values else None


# -- jobs ----------------------------------------------------------------------------------------


def get_job(conn: sqlite3.Connection, now: datetime, job_id: str) -> Job | None:
    row = conn.execute(Q["job_get"], {"id": job_id}).fetchone()
    return None if row is None else job_from_row(row)


def list_jobs(conn: sqlite3.Connection, now: datetime, p: ListParams) -> JobPage:
    """Rule 11. The cursor is the seq of the page's last job, as a decimal string."""
    if p.limit < 1:
        raise ValueError(f"limit must be at least 1, not {p.limit}")
    params = {
        "before_seq": _parse_cursor(p.cursor),
        "states": _json_list_or_none(p.states),
        "queues": _json_list_or_none(p.queues),
        "kinds": _json_list_or_none(p.kinds),
        "text": p.text or None,
        "limit": p.limit + 1,  # one more than a page tells whether another page follows
    }
    rows = conn.execute(Q["job_list"], params).fetchall()
    page = rows[: p.limit]
    cursor = str(page[-1][SEQ]) if len(rows) > p.limit else None
    return JobPage([job_from_row(r) for r in page], cursor)


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return _NO_CURSOR
    try:
        return int(cursor)
    except ValueError:
        raise ValueError(f"not a job list cursor: {cursor!r}") from None


def cancel_job(conn: sqlite3.Connection, now: datetime, job_id: str) -> tuple[Job, list[str]]:
    """Rule 12; also returns the queues of the held jobs released (a waiting job that was first of
    its ordering key lets the next one go; a workflow's step cancelled applies its effects on its
    run)."""
    state = _state_of(conn, job_id)
    if state in JobState.waiting():
        query = Q["job_cancel_waiting"]
    elif state is JobState.RUNNING:
        query = Q["job_cancel_running"]  # its worker learns at its next heartbeat
    else:
        raise InvalidTransitionError(job_id, state.value, "cancel")
    job = job_from_row(conn.execute(query, {"id": job_id, "now": to_us(now)}).fetchone())
    released: list[str] = []
    if job.ordering_key is not None and job.state is JobState.CANCELLED:
        released = ordering.release(conn, [(job.queue, job.ordering_key)])
    if job.workflow_run_id is not None and job.state is JobState.CANCELLED:
        released.extend(workflows.steps_ended(conn, now, [(job.workflow_run_id, job.workflow_step or "")]))
    return job, released


def requeue_jobs(conn: sqlite3.Connection, now: datetime, p: RequeueParams) -> tuple[list[Job], list[str]]:
    """Rule 13 (the caller checked that ``p.states`` are requeueable). A job that was out of its
    ordering key's line (cancelled, dead under ``continue``) rejoins it, held if the key is busy
    (:func:`ordering.rejoin`, decided before the jobs move). A workflow's step back from a final state
    brings back the steps its failure cancelled, or comes back held (:func:`workflows.steps_requeued`,
    from the states before, read with the ordering keys). Returns the jobs and the queues of the
    other steps brought back (to wake besides the jobs')."""
    if p.job_id is not None:
        state = _state_of(conn, p.job_id)
        if state not in JobState.requeueable():
            raise InvalidTransitionError(p.job_id, state.value, "requeue")
        lookup = conn.execute(Q["job_requeue_lookup_one"], {"id": p.job_id}).fetchall()
        held = ordering.rejoin(conn, [r[:4] for r in lookup if r[2] is not None])
        rows = conn.execute(Q["job_requeue_one"], {"id": p.job_id, "now": to_us(now)}).fetchall()
    else:
        params = {"states": dumps([str(s) for s in p.states]), "queue": p.queue, "now": to_us(now)}
        lookup = conn.execute(Q["job_requeue_lookup_many"], params).fetchall()
        held = ordering.rejoin(conn, [r[:4] for r in lookup if r[2] is not None])
        rows = sorted(conn.execute(Q["job_requeue_many"], params).fetchall())  # by seq
    ordering.hold(conn, held)
    jobs = [replace(job_from_row(r), held=True) if r[SEQ] in held else job_from_row(r) for r in rows]
    steps = [(run_id, job_id, step, before) for *_, job_id, before, run_id, step in lookup if run_id]
    if not steps:
        return jobs, []
    step_held, woken = workflows.steps_requeued(conn, now, steps)
    return [replace(j, held=step_held[j.id]) if j.id in step_held else j for j in jobs], woken


def _state_of(conn: sqlite3.Connection, job_id: str) -> JobState:
    row = conn.execute(Q["job_state"], {"id": job_id}).fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    return JobState(row[0])


def purge_jobs(conn: sqlite3.Connection, now: datetime, p: PurgeParams) -> tuple[int, list[str]]:
    """Rule 14 (the caller refused RUNNING): the logs first, while their jobs can still be found.
    Returns how many, and the queues of the held jobs released (a purged job may have held its
    ordering key)."""
    params = {"states": dumps([str(s) for s in p.states]), "queue": p.queue}
    lines = [(queue, key) for queue, key in conn.execute(Q["job_purge_ordered"], params)]
    conn.execute(Q["job_purge_logs"], params)
    purged = conn.execute(Q["job_purge"], params).rowcount
    return purged, ordering.release(conn, lines)


def job_logs(conn: sqlite3.Connection, now: datetime, p: LogParams) -> list[LogLine]:
    """Rule 15."""
    params = {"job_id": p.job_id, "attempt": p.attempt, "after_seq": p.after_seq, "limit": p.limit}
    return [log_line_from_row(r) for r in conn.execute(Q["job_logs"], params)]


# -- queues --------------------------------------------------------------------------------------


def list_queues(conn: sqlite3.Connection, now: datetime) -> list[QueueInfo]:
    """Rule 16: the queues with their limits and the tokens of their own bucket, then the counts of
    all of them in one grouped query."""
    counts: dict[str, dict[JobState, int]] = {}
    for queue, state, n in conn.execute(Q["queue_counts"]):
        counts.setdefault(queue, dict.fromkeys(JobState, 0))[JobState(state)] = n
    infos = []
    for name, paused, oldest, *columns, tokens, at in conn.execute(Q["queue_names"]).fetchall():
        limits = flow.limits_from(*columns)
        infos.append(
            QueueInfo(
                name=name,
                paused=bool(paused),
                counts=counts.get(name) or dict.fromkeys(JobState, 0),
                oldest_pending_at=from_us_or_none(oldest),
                limits=limits,
                tokens=flow.queue_tokens(limits, tokens, at, now),
            )
        )
    return infos


def set_paused(conn: sqlite3.Connection, now: datetime, name: str, paused: bool) -> None:
    """Rule 17: an unknown queue becomes known."""
    conn.execute(Q["queue_set_paused"], {"name": name, "paused": int(paused)})


# -- workers -------------------------------------------------------------------------------------


def upsert_worker(conn: sqlite3.Connection, now: datetime, info: WorkerInfo) -> None:
    params: dict[str, Any] = worker_params(info)
    conn.execute(Q["worker_upsert"], params)


def list_workers(conn: sqlite3.Connection, now: datetime) -> list[WorkerInfo]:
    return [worker_from_row(r) for r in conn.execute(Q["worker_list"])]


def remove_worker(conn: sqlite3.Connection, now: datetime, worker_id: str) -> None:
    conn.execute(Q["worker_remove"], {"id": worker_id})
