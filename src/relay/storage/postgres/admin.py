"""What operators use: get, list, cancel, requeue, purge, logs, queues, limits, workers (rules 10-18).

Each function runs on the backend's loop with a pooled autocommit connection; every change is one
statement. Where a change is refused (cancel of a final job, requeue of a running one) the statement
changes nothing and returns nothing, and a read of the job's state says why. Cancel, requeue and purge
keep the ordering rule in the same statement (relay.release_next, see queries.sql). A workflow's
step is cancelled or requeued in a transaction that locks its run first (:mod:`.workflows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from relay.errors import InvalidTransitionError, JobNotFoundError, WorkflowRunNotFoundError
from relay.storage.flow_control import Bucket, tokens_now
from relay.storage.params import JobPage, ListParams, LogParams, PurgeParams, RequeueParams
from relay.storage.postgres import workflows
from relay.storage.postgres.rows import (
    SEQ,
    TABLE_COLUMNS,
    job_from_row,
    log_line_from_row,
    utc,
    worker_from_row,
    worker_params,
)
from relay.storage.postgres.sql import Q
from relay.storage.sql_rows import Row
from relay.types import (
    Job,
    JobState,
    LogLine,
    OrderingDead,
    QueueInfo,
    QueueLimits,
    RateLimit,
    WorkerInfo,
    WorkflowRun,
)

Conn = AsyncConnection[Any]

_NO_CURSOR = 2**63 - 1  # above every seq: the first page


def _filter(values: Sequence[str]) -> list[str] | None:
    """A filter as an array, or None for "no filter" (an empty sequence)."""
    return [str(v) for v in values] if values else None


# -- jobs ----------------------------------------------------------------------------------------


async def get_job(conn: Conn, now: datetime | None, job_id: str) -> Job | None:
    cur = await conn.execute(Q["job_get"], {"id": job_id})
    row = await cur.fetchone()
    return None if row is None else job_from_row(row)


async def list_jobs(conn: Conn, now: datetime | None, p: ListParams) -> JobPage:
    """Rule 11. The cursor is the seq of the page's last job, as a decimal string."""
    if p.limit < 1:
        raise ValueError(f"limit must be at least 1, not {p.limit}")
    params = {
        "before_seq": _parse_cursor(p.cursor),
        "states": _filter(p.states),
        "queues": _filter(p.queues),
        "kinds": _filter(p.kinds),
        "text": p.text or None,
        "limit": p.limit + 1,  # one more than a page tells whether another page follows
    }
    cur = await conn.execute(Q["job_list"], params)
    rows = await cur.fetchall()
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


async def cancel_job(conn: Conn, now: datetime | None, job_id: str) -> Job:
    """Rule 12. A workflow's step is cancelled in a transaction that locks its run first and applies
    what its end does to the run (:mod:`.workflows`)."""
    if not await _steps_of(conn, [job_id]):
        return await _cancel_one(conn, now, job_id)
    async with conn.transaction():
        steps = await _steps_of(conn, [job_id])  # again, now that the run is about to be locked
        runs = await workflows.lock_runs(conn, [run_id for _, _, run_id, _ in steps])
        job = await _cancel_one(conn, now, job_id)
        if job.state is JobState.CANCELLED and job.workflow_run_id is not None:
            await workflows.steps_ended(conn, now, runs, [(job.workflow_run_id, job.workflow_step or "")])
        return job


async def _cancel_one(conn: Conn, now: datetime | None, job_id: str) -> Job:
    cur = await conn.execute(Q["job_cancel"], {"id": job_id, "now": now})
    row = await cur.fetchone()
    if row is None:
        raise InvalidTransitionError(job_id, (await _state_of(conn, job_id)).value, "cancel")
    return job_from_row(row)


async def _steps_of(conn: Conn, job_ids: list[str]) -> list[Row]:
    """``id, state, workflow_run_id, workflow_step`` of those of ``job_ids`` that are workflow steps."""
    cur = await conn.execute(Q["job_workflow_lookup"], {"ids": job_ids})
    return await cur.fetchall()


async def requeue_jobs(conn: Conn, now: datetime | None, p: RequeueParams) -> tuple[list[Job], list[str]]:
    """Rule 13 (the caller checked that ``p.states`` are requeueable). Workflow steps among the jobs:
    in a transaction that locks their runs first, their states before the requeue read, and
    :func:`workflows.steps_requeued` applied (a step back from a final state brings back the steps
    its failure cancelled, or comes back held). Returns the jobs and the queues of the other steps
    brought back (woken)."""
    if not await _requeued_steps(conn, p):
        return await _requeue(conn, now, p), []
    async with conn.transaction():
        steps = await _requeued_steps(conn, p)  # the states before, read once the runs are locked
        runs = await workflows.lock_runs(conn, [run_id for _, _, run_id, _ in steps])
        jobs = await _requeue(conn, now, p)
        moved = {job.id for job in jobs}
        items = [(run_id, job_id, step, before) for job_id, before, run_id, step in steps if job_id in moved]
        held, woken = await workflows.steps_requeued(conn, now, runs, items)
    return [replace(j, held=held[j.id]) if j.id in held else j for j in jobs], woken


async def _requeued_steps(conn: Conn, p: RequeueParams) -> list[Row]:
    if p.job_id is not None:
        return await _steps_of(conn, [p.job_id])
    params = {"states": [s.value for s in p.states], "queue": p.queue}
    cur = await conn.execute(Q["job_workflow_lookup_states"], params)
    return await cur.fetchall()


async def _requeue(conn: Conn, now: datetime | None, p: RequeueParams) -> list[Job]:
    if p.job_id is not None:
        cur = await conn.execute(Q["job_requeue_one"], {"id": p.job_id, "now": now})
        row = await cur.fetchone()
        if row is None:
            raise InvalidTransitionError(p.job_id, (await _state_of(conn, p.job_id)).value, "requeue")
        return _requeued([row])
    params = {"states": [s.value for s in p.states], "queue": p.queue, "now": now}
    cur = await conn.execute(Q["job_requeue_many"], params)
    return _requeued(await cur.fetchall())  # by seq


async def retry_step(
    conn: Conn, now: datetime | None, run_id: str, step: str
) -> tuple[WorkflowRun, list[str]]:
    """Retry ``step`` of run ``run_id``: its job requeued (:func:`requeue_jobs`, which brings back what
    its failure cancelled), in one transaction under the run's lock."""
    async with conn.transaction():
        run = (await workflows.lock_runs(conn, [run_id])).get(run_id)
        if run is None:
            raise WorkflowRunNotFoundError(run_id)
        job_id = await workflows.retry_target(conn, run, step)
        jobs, woken = await requeue_jobs(conn, now, RequeueParams(job_id=job_id))
        found = await workflows.get(conn, now, run_id)
        assert found is not None  # locked in this transaction
    return found, [*(job.queue for job in jobs), *woken]


_RELEASED = len(TABLE_COLUMNS)  # after the job's columns: the ids of the jobs the statement released


def _requeued(rows: list[Row]) -> list[Job]:
    """Requeued jobs as they end up: held in line, unless the statement released them at once."""
    released = set(rows[0][_RELEASED] or ()) if rows else set()
    jobs = [job_from_row(r) for r in rows]
    return [replace(job, held=False) if job.held and job.id in released else job for job in jobs]


async def _state_of(conn: Conn, job_id: str) -> JobState:
    cur = await conn.execute(Q["job_state"], {"id": job_id})
    row = await cur.fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    return JobState(row[0])


async def purge_jobs(conn: Conn, now: datetime | None, p: PurgeParams) -> int:
    """Rule 14 (the caller refused RUNNING): jobs and their logs in one statement."""
    cur = await conn.execute(Q["job_purge"], {"states": [s.value for s in p.states], "queue": p.queue})
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def job_logs(conn: Conn, now: datetime | None, p: LogParams) -> list[LogLine]:
    """Rule 15."""
    params = {"job_id": p.job_id, "attempt": p.attempt, "after_seq": p.after_seq, "limit": p.limit}
    cur = await conn.execute(Q["job_logs"], params)
    return [log_line_from_row(r) for r in await cur.fetchall()]


# -- queues --------------------------------------------------------------------------------------


async def list_queues(conn: Conn, now: datetime | None) -> list[QueueInfo]:
    """Rule 16: one row per (queue, state) present, folded into one QueueInfo per queue, with its limits
    and what its queue-wide bucket holds now (the same maths as every other backend's)."""
    cur = await conn.execute(Q["queue_list"], {"now": now})
    infos: dict[str, QueueInfo] = {}
    for row in await cur.fetchall():
        name, paused, state, n, oldest_pending = row[:5]
        info = infos.get(name)
        if info is None:
            limits = _limits_of(row)
            counts = dict.fromkeys(JobState, 0)
            info = infos[name] = QueueInfo(name, paused, counts, None, limits, _tokens(row, limits))
        if state is not None:
            info.counts[JobState(state)] = n
        if oldest_pending is not None:
            infos[name] = replace(info, oldest_pending_at=utc(oldest_pending))
    return list(infos.values())


def _limits_of(row: Row) -> QueueLimits:
    """From queue_list's ``rate, rate_burst, key_rate, key_rate_burst, concurrency, key_concurrency,
    ordering_dead`` (columns 5 to 11)."""
    rate, burst, key_rate, key_burst, concurrency, key_concurrency, ordering_dead = row[5:12]
    return QueueLimits(
        rate=None if rate is None else RateLimit(rate, burst),
        key_rate=None if key_rate is None else RateLimit(key_rate, key_burst),
        concurrency=concurrency,
        key_concurrency=key_concurrency,
        ordering_dead=OrderingDead(ordering_dead),
    )


def _tokens(row: Row, limits: QueueLimits) -> float | None:
    """What the queue-wide bucket holds at the query's now (columns 12 to 14: tokens, at, now)."""
    if limits.rate is None:
        return None
    tokens, at, when = row[12:15]
    return tokens_now(None if tokens is None else Bucket(tokens, at), limits.rate, when)


async def set_paused(conn: Conn, now: datetime | None, name: str, paused: bool) -> None:
    """Rule 17: an unknown queue becomes known."""
    await conn.execute(Q["queue_set_paused"], {"name": name, "paused": paused})


async def set_limits(conn: Conn, now: datetime | None, name: str, limits: QueueLimits) -> None:
    """An unknown queue becomes known; ``NO_LIMITS`` clears them (every column NULL but ordering_dead)."""
    params = {
        "name": name,
        "rate": None if limits.rate is None else limits.rate.rate,
        "rate_burst": None if limits.rate is None else limits.rate.burst,
        "key_rate": None if limits.key_rate is None else limits.key_rate.rate,
        "key_rate_burst": None if limits.key_rate is None else limits.key_rate.burst,
        "concurrency": limits.concurrency,
        "key_concurrency": limits.key_concurrency,
        "ordering_dead": limits.ordering_dead.value,
    }
    await conn.execute(Q["queue_limits_set"], params)


# -- workers -------------------------------------------------------------------------------------


async def upsert_worker(conn: Conn, now: datetime | None, info: WorkerInfo) -> None:
    await conn.execute(Q["worker_upsert"], worker_params(info))


async def list_workers(conn: Conn, now: datetime | None) -> list[WorkerInfo]:
    cur = await conn.execute(Q["worker_list"])
    return [worker_from_row(r) for r in await cur.fetchall()]


async def remove_worker(conn: Conn, now: datetime | None, worker_id: str) -> None:
    await conn.execute(Q["worker_remove"], {"id": worker_id})
