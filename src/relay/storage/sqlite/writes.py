"""The hot path: insert, claim, heartbeat, finish, log append (semantics.md rules 1 to 5).

Each function runs on the connection's thread inside one ``BEGIN IMMEDIATE`` transaction
(:meth:`Database.write`): whatever it reads stays true until it commits, so a fence read first and
written after is still a fence. Batches are one ``executemany`` per statement, never a round trip per
job, and the per-job Python work is a tuple or a dict of parameters.

Flow control stays off the path of jobs and queues that do not use it: a claim of queues without
limits is the one job_claim statement (a claim of limited ones is :mod:`.flow`'s), an insert looks
ordering keys up only for jobs that have one (:mod:`.ordering`), and a finish releases held jobs
only for jobs with an ordering key. Workflows likewise: a finish applies a step's effects on its run
(:mod:`.workflows`) only for the jobs its fence row shows to be steps.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Container, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from relay.errors import DuplicateJobError
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
from relay.storage.sql_rows import Row, dumps, dumps_or_null
from relay.storage.sqlite import flow, ordering, workflows
from relay.storage.sqlite.rows import (
    IDEMPOTENCY_KEY,
    INSERT_QUERIES,
    SEQ,
    claim_order,
    from_us,
    job_from_row,
    key_holds,
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
    held_steps: Container[str] = frozenset(),
) -> list[InsertResult]:
    """Insert ``specs`` (rule 1). A taken client id raises :class:`DuplicateJobError` before anything
    is written, or, with ``skip_taken_ids`` (chained jobs), leaves that job out as already enqueued.
    A workflow's step (``workflow_step`` set, by :func:`workflows.start`) is held when its name is in
    ``held_steps``.

    An idempotency key is looked up before the id (a job not inserted collides with nothing): held by
    a stored job (:func:`key_holds`) or by a job earlier in the batch, it returns that job; lapsed, it
    passes to the new job, the stored one's key cleared first (the column is UNIQUE)."""
    now_us = to_us(now)
    stamp = from_us(now_us)
    stored = _existing_by_key(conn, specs)
    batch: dict[str, Job] = {}  # idempotency key -> the job of this batch that took it
    lapsed: list[int] = []  # seqs of stored jobs whose key passes to a new job
    taken = _stored_ids(conn, specs)  # client ids in use, stored and then of this batch
    busy = _blocked_keys(conn, specs)  # ordering keys with an unheld blocking job: stored, then batch
    results: list[InsertResult] = []
    rows: list[Row] = []
    queues: dict[str, None] = {}
    fresh = iter(new_job_ids(sum(1 for spec in specs if spec.id is None)))
    for spec, parent in zip(specs, parents or [None] * len(specs), strict=True):
        key = spec.idempotency_key
        old: Row | None = None
        if key is not None:
            holder, old = _key_holder(key, batch, stored, now_us)
            if holder is not None:
                results.append(InsertResult(holder, created=False))
                continue
        if spec.id is None:
            job_id = next(fresh)
        elif spec.id in taken:
            if skip_taken_ids:
                continue
            raise DuplicateJobError(spec.id)
        else:
            job_id = spec.id
            taken.add(job_id)
        held = spec.ordering_key is not None and _joins_busy_key(spec.queue, spec.ordering_key, busy)
        if spec.workflow_step is not None and spec.workflow_step in held_steps:
            held = True
        row, job = new_job(spec, job_id, now, now_us, stamp, parent, held)
        if key is not None:
            batch[key] = job  # a later job of this batch with the same key gets this one
            if old is not None:
                lapsed.append(old[SEQ])
        rows.append(row)
        results.append(InsertResult(job, created=True))
        queues[spec.queue] = None
    if lapsed:
        conn.execute(Q["idempotency_keys_release"], {"seqs": dumps(lapsed)})
    # Consecutive rows of one shape go in one executemany; never reordered, so seq follows the batch.
    for size, same_shape in itertools.groupby(rows, key=len):
        conn.executemany(Q[INSERT_QUERIES[size]], same_shape)
    conn.executemany(Q["queue_register"], [(q,) for q in queues])
    return results


def _key_holder(
    key: str, batch: dict[str, Job], stored: dict[str, Row], now_us: int
) -> tuple[Job | None, Row | None]:
    """(the job that holds ``key``, None) if one does, else (None, the stored row whose key lapsed,
    if any)."""
    if key in batch:
        return batch[key], None
    old = stored.get(key)
    if old is not None and key_holds(old, now_us):
        return job_from_row(old), None
    return None, old


def _joins_busy_key(queue: str, ordering_key: str, busy: set[ordering.Pair]) -> bool:
    """Whether a new job of this ordering key is held; it makes the key busy for the later ones."""
    pair = (queue, ordering_key)
    if pair in busy:
        return True
    busy.add(pair)
    return False


def _existing_by_key(conn: sqlite3.Connection, specs: Sequence[NewJob]) -> dict[str, Row]:
    """The stored jobs (rows) that have one of the batch's idempotency keys, by key."""
    keys = [s.idempotency_key for s in specs if s.idempotency_key is not None]
    if not keys:
        return {}
    rows = conn.execute(Q["job_by_idempotency_keys"], {"keys": dumps(keys)}).fetchall()
    return {row[IDEMPOTENCY_KEY]: row for row in rows}


def _stored_ids(conn: sqlite3.Connection, specs: Sequence[NewJob]) -> set[str]:
    """The batch's client-chosen ids that are stored already. Generated ids are unique by
    construction, so a batch without client ids costs no query."""
    ids = [s.id for s in specs if s.id is not None]
    if not ids:
        return set()
    return {r[0] for r in conn.execute(Q["job_ids_taken"], {"ids": dumps(ids)})}


def _blocked_keys(conn: sqlite3.Connection, specs: Sequence[NewJob]) -> set[ordering.Pair]:
    """The batch's ordering keys that have an unheld blocking job stored: one lookup, and none for a
    batch without ordering keys."""
    return ordering.blocked(conn, ((s.queue, s.ordering_key) for s in specs if s.ordering_key is not None))


# -- claim ---------------------------------------------------------------------------------------


def claim_jobs(conn: sqlite3.Connection, now: datetime, p: ClaimParams) -> ClaimedJobs:
    """Rule 2: due scheduled / failed jobs of these queues become pending, then one UPDATE ...
    RETURNING claims (see queries.sql for why the promotion comes first), unless a queue is limited:
    then :func:`flow.claim_limited` decides.

    Which queues are limited is read in this transaction (another process may have just set limits).
    A claim of one queue reads it only when job_claim, which leaves limited queues out, took nothing:
    a claim that took jobs from its only queue knows the queue has no limits, so the hot path of one
    queue costs no statement more than before flow control."""
    wanted = list(dict.fromkeys(p.queues))  # a repeated queue would count twice
    queues = dumps(wanted)
    now_us = to_us(now)
    conn.execute(Q["job_claim_promote"], {"now": now_us, "queues": queues})
    if len(wanted) == 1:
        claimed = _claim_unlimited(conn, now_us, p, queues)
        if claimed:
            return claimed
        special = flow.claimed_queues(conn, queues)
        return flow.claim_limited(conn, now, p, wanted, special) if flow.any_limited(special) else claimed
    special = flow.claimed_queues(conn, queues)
    if flow.any_limited(special):
        return flow.claim_limited(conn, now, p, wanted, special)
    return _claim_unlimited(conn, now_us, p, queues)


def _claim_unlimited(conn: sqlite3.Connection, now_us: int, p: ClaimParams, queues: str) -> ClaimedJobs:
    """The one statement of job_claim: it skips paused and limited queues by itself."""
    params = {
        "now": now_us,
        "worker_id": p.worker_id,
        "limit": p.limit,
        "queues": queues,
        "kinds": dumps([str(k) for k in p.kinds]),
    }
    rows = conn.execute(Q["job_claim"], params).fetchall()
    rows.sort(key=claim_order)
    return ClaimedJobs([job_from_row(r) for r in rows])


# -- heartbeat and finish ------------------------------------------------------------------------


# Positions in a job_running_fence row, and the four more of a job_finish_fence row.
_TOKEN, _CANCEL, _ATTEMPT, _MAX_RETRIES, _QUEUE, _ON_SUCCESS, _ON_FAILURE = range(1, 8)
_ORDERING_KEY, _SLOTS, _RUN, _STEP = 8, 9, 10, 11
# Outcomes after which a job no longer holds its ordering key (a dead one still does where the queue
# says block: ordering_release checks that itself).
_OUT_OF_LINE = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.DEAD})
_FINAL = JobState.final()


def _running(conn: sqlite3.Connection, ids: list[str], query: str = "job_running_fence") -> dict[str, Row]:
    """``id -> job_running_fence row`` of the running jobs among ``ids``: what the lease-token fence
    (and the choice between retry and dead) decides on."""
    rows = conn.execute(Q[query], {"ids": dumps(ids)}).fetchall()
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
    """Rule 4; returns the results and the queues to wake: those that got a waiting job, whose
    concurrency limit got a free slot, or whose held job was released (by an ordering key or a
    workflow's step that ended)."""
    running = _running(conn, [item.job_id for item in items], "job_finish_fence")
    now_us = to_us(now)
    results: list[FinishResult] = []
    updates: list[dict[str, Any]] = []
    chains: list[NewJob] = []
    parents: list[str] = []
    woken: list[str] = []
    lines: list[ordering.Pair] = []  # ordering keys whose job left its line
    ended: list[tuple[str, str]] = []  # (run, step) of the workflow steps that ended
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
        if state is JobState.PENDING or fence[_SLOTS]:
            woken.append(fence[_QUEUE])
        if fence[_ORDERING_KEY] is not None and state in _OUT_OF_LINE:
            lines.append((fence[_QUEUE], fence[_ORDERING_KEY]))
        if fence[_RUN] is not None and state in _FINAL:
            ended.append((fence[_RUN], fence[_STEP]))
    conn.executemany(Q["job_finish"], updates)
    if lines:
        woken.extend(ordering.release(conn, lines))
    if ended:
        woken.extend(workflows.steps_ended(conn, now, ended))
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
