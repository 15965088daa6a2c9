"""Workflow runs on PostgreSQL: start, read, list, cancel, and the effects of a step's job ending (or
coming back) on the run's other steps.

A run is a ``relay.workflow_runs`` row (name, policy, params, cancelled flag, and its graph in
``steps``); its steps are ordinary jobs with ``workflow_run_id`` / ``workflow_step`` set, and a step
waiting for its dependencies is ``held``, the flag the claim already skips. The rules are
:mod:`relay.storage.workflow_rules`, applied here in Python as on SQLite and memory, so that one
statement of them serves three backends.

Why that is safe with many writers: every transaction that changes steps because another ended or came
back first locks the rows of the runs concerned (``workflow_runs_lock``, ``FOR UPDATE``, in id order),
then changes jobs, and reads the steps' states after the lock, each statement with a fresh snapshot
(READ COMMITTED, forced on every connection). Two workers finishing the two parents of a fan-in thus
take turns, and the second one sees the first one's outcome: the child is released exactly once. The
only other writers of step rows are claims (which lock a pending row for one statement and wait for
nothing) and operators' one-statement changes, so the order "run, then its jobs" leaves no cycle among
Relay's own transactions but those of operators racing a finish (PostgreSQL detects the deadlock, and
:class:`relay.storage.postgres.database.Database` retries the loser).

The hot path stays one statement for jobs outside workflows: ``job_finish`` answers a step with the
state ``step`` instead of finishing it, and :func:`relay.storage.postgres.writes.finish_jobs` finishes
those in a transaction of their own (lock the runs, finish, :func:`steps_ended`). The reaper, cancel and
requeue do the same for the steps they meet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, errors

from relay.errors import (
    DuplicateJobError,
    InvalidTransitionError,
    InvalidWorkflowError,
    WorkflowRunNotFoundError,
)
from relay.storage.params import WorkflowListParams, WorkflowPage, WorkflowStart, WorkflowStarted
from relay.storage.postgres.inserts import InsertBatch
from relay.storage.postgres.notifier import notify_payload
from relay.storage.postgres.rows import insert_params, job_from_row, json_array, utc
from relay.storage.postgres.sql import Q
from relay.storage.sql_rows import STATES as _STATES
from relay.storage.sql_rows import Row
from relay.storage.sql_workflows import (
    RunRow,
    StepJob,
    by_run,
    checked_start,
    graph_json,
    parse_cursor,
    run_row,
    run_view,
)
from relay.storage.workflow_rules import (
    StepNow,
    initially_held,
    settle_ended,
    settle_requeued,
    to_retry,
)
from relay.types import WorkflowRun, new_job_id

Conn = AsyncConnection[Any]

_GONE = StepNow(None, False)


def _run_from_row(r: Row) -> RunRow:
    """From ``seq, id, workflow, policy, params, cancelled, created_at, steps`` (json loaded)."""
    return run_row(r[0], r[1], r[2], r[3], r[4], r[5], utc(r[6]), r[7])


async def _load(conn: Conn, run_id: str) -> RunRow | None:
    cur = await conn.execute(Q["workflow_run_get"], {"id": run_id})
    row = await cur.fetchone()
    return None if row is None else _run_from_row(row)


async def lock_runs(conn: Conn, run_ids: Iterable[str]) -> dict[str, RunRow]:
    """Lock the rows of these runs (in a transaction), and return those that exist."""
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    cur = await conn.execute(Q["workflow_runs_lock"], {"ids": ids})
    return {run.id: run for run in map(_run_from_row, await cur.fetchall())}


async def notify(conn: Conn, queues: Sequence[str]) -> None:
    """Wake the workers of ``queues`` when the transaction commits."""
    if queues:
        await conn.execute(Q["notify"], {"payload": notify_payload(queues)})


# -- start -----------------------------------------------------------------------------------------


async def start(conn: Conn, now: datetime | None, p: WorkflowStart) -> tuple[WorkflowStarted, list[str]]:
    """The run and one job per step (held when it has dependencies), in one transaction. A taken
    client id raises :class:`DuplicateJobError` and nothing is written; a taken ``run_id`` returns the
    run that has it. Returns the result and the queues of the steps that may run now (the roots)."""
    if p.run_id is not None and (existing := await _load(conn, p.run_id)) is not None:
        return WorkflowStarted((await _read(conn, [existing]))[0], created=False), []
    nodes, params = checked_start(p)
    run_id = p.run_id or new_job_id()
    held = initially_held(nodes)
    batch = InsertBatch.of([s.job for s in p.steps])  # ids, and a client id repeated in the run
    columns = {
        **insert_params(batch.specs, batch.ids, flow=True),
        "held": json_array([s.name in held for s in p.steps]),
        "run_id": json_array([run_id] * len(p.steps)),
        "step": json_array([s.name for s in p.steps]),
    }
    try:
        async with conn.transaction():
            cur = await conn.execute(Q["workflow_steps_insert"], {"now": now, **columns})
            by_id = {job.id: job for job in map(job_from_row, await cur.fetchall())}
            jobs = [by_id[job_id] for job_id in batch.ids]
            created_at = jobs[0].created_at if jobs else (now or datetime.now(UTC))
            await conn.execute(
                Q["workflow_run_insert"],
                {
                    "id": run_id,
                    "workflow": p.workflow,
                    "policy": str(p.policy),
                    "params": params,
                    "created_at": created_at,
                    "steps": graph_json(nodes, jobs),
                },
            )
            roots = list(dict.fromkeys(j.queue for j in jobs if not j.held))
            await notify(conn, roots)
    except errors.UniqueViolation as exc:  # rolled back: nothing of the run is stored
        if exc.diag.constraint_name == "workflow_runs_id_key" and p.run_id is not None:
            existing = await _load(conn, p.run_id)  # another start of the same run won the race
            if existing is not None:
                return WorkflowStarted((await _read(conn, [existing]))[0], created=False), []
        raise await _duplicate(conn, batch.ids) from None
    job_ids = {n.name: j.id for n, j in zip(nodes, jobs, strict=True)}
    run = RunRow(0, run_id, p.workflow, p.policy, orjson.loads(params), False, created_at, nodes, job_ids)
    return WorkflowStarted(run_view(run, {j.id: StepJob.of(j) for j in jobs}), created=True), roots


async def _duplicate(conn: Conn, ids: list[str]) -> DuplicateJobError:
    cur = await conn.execute(Q["job_ids_taken"], {"ids": ids})
    taken = {r[0] for r in await cur.fetchall()}
    return DuplicateJobError(next((i for i in ids if i in taken), ids[0]))


# -- read ------------------------------------------------------------------------------------------


async def _read(conn: Conn, runs: Sequence[RunRow]) -> list[WorkflowRun]:
    """``runs`` with their steps as their jobs are now, the jobs of all read in one query."""
    ids = [job_id for run in runs for job_id in run.job_ids.values()]
    cur = await conn.execute(Q["workflow_steps_read"], {"ids": ids})
    jobs = {r[0]: _step_job(r) for r in await cur.fetchall()}
    return [run_view(run, jobs) for run in runs]


def _step_job(r: Row) -> StepJob:
    """From ``id, state, held, attempt, result, started_at, finished_at``."""
    started, finished = r[5], r[6]
    return StepJob(
        _STATES[r[1]],
        r[2],
        r[3],
        r[4],
        None if started is None else utc(started),
        None if finished is None else utc(finished),
    )


async def get(conn: Conn, now: datetime | None, run_id: str) -> WorkflowRun | None:
    run = await _load(conn, run_id)
    return None if run is None else (await _read(conn, [run]))[0]


async def list_runs(conn: Conn, now: datetime | None, p: WorkflowListParams) -> WorkflowPage:
    """Newest first; the cursor is the seq of the page's last run, as a decimal string."""
    if p.limit < 1:
        raise ValueError(f"limit must be at least 1, got {p.limit}")
    params = {"before_seq": parse_cursor(p.cursor), "limit": p.limit + 1, "workflow": p.workflow}
    cur = await conn.execute(Q["workflow_run_list"], params)
    found = [_run_from_row(r) for r in await cur.fetchall()]
    page = found[: p.limit]
    cursor = str(page[-1].seq) if len(found) > p.limit else None
    return WorkflowPage(await _read(conn, page), cursor)


# -- operators -------------------------------------------------------------------------------------


async def cancel(conn: Conn, now: datetime | None, run_id: str) -> WorkflowRun:
    """The run's cancelled flag, then its waiting steps cancelled and its running steps asked to stop
    (as job_cancel does to each); nothing cascades in a cancelled run."""
    async with conn.transaction():
        run = (await lock_runs(conn, [run_id])).get(run_id)
        if run is None:
            raise WorkflowRunNotFoundError(run_id)
        await conn.execute(Q["workflow_run_set_cancelled"], {"id": run_id, "cancelled": True})
        params = {"ids": list(run.job_ids.values()), "now": now}
        await conn.execute(Q["workflow_steps_cancel"], params)
        await conn.execute(Q["workflow_steps_cancel_running"], params)
        return (await _read(conn, [replace(run, cancelled=True)]))[0]


async def retry_target(conn: Conn, run: RunRow, step: str) -> str:
    """The job to requeue to retry ``step`` of ``run`` (locked by the caller; the requeue applies
    :func:`steps_requeued`). Raises InvalidWorkflowError (no such step) or InvalidTransitionError
    (``workflow_rules.to_retry`` refuses)."""
    job_id = run.job_ids.get(step)
    if job_id is None:
        raise InvalidWorkflowError("step", f"run {run.id!r} has no step named {step!r}")
    steps, _ = await _steps_now(conn, run)
    state = steps[step].state
    if state is None:
        raise InvalidTransitionError(job_id, "gone", "retry")
    if to_retry(run.nodes, steps, step) is None:
        raise InvalidTransitionError(job_id, state.value, "retry")
    return job_id


# -- the hooks (in the caller's transaction, the runs locked) -------------------------------------


async def _steps_now(conn: Conn, run: RunRow) -> tuple[dict[str, StepNow], dict[str, str]]:
    """Each step of ``run`` as the rules see it, and each existing step's queue."""
    names = {job_id: name for name, job_id in run.job_ids.items()}
    steps = dict.fromkeys(run.job_ids, _GONE)
    queues: dict[str, str] = {}
    cur = await conn.execute(Q["workflow_steps_now"], {"ids": list(names)})
    for job_id, state, held, queue in await cur.fetchall():
        name = names[job_id]
        steps[name] = StepNow(_STATES[state], held)
        queues[name] = queue
    return steps, queues


async def steps_ended(
    conn: Conn, now: datetime | None, runs: dict[str, RunRow], ended: Sequence[tuple[str, str]]
) -> list[str]:
    """Steps ``(run_id, step)`` whose jobs just reached a final state (already written), of ``runs``
    (locked): in each run not cancelled, ``workflow_rules.settle_ended``, then the steps to release or
    to cancel written. Sends the wake-up of the released steps' queues, and returns them."""
    woken: list[str] = []
    for run_id, items in by_run(ended).items():
        run = runs.get(run_id)
        if run is None or run.cancelled:
            continue
        steps, queues = await _steps_now(conn, run)
        settled = settle_ended(run.nodes, steps, [name for (name,) in items], run.policy)
        if settled.cancel:
            ids = [run.job_ids[name] for name in settled.cancel]
            await conn.execute(Q["workflow_steps_cancel"], {"ids": ids, "now": now})
        if settled.release:
            await conn.execute(
                Q["workflow_steps_release"], {"ids": [run.job_ids[n] for n in settled.release]}
            )
            woken.extend(queues[name] for name in settled.release)
    await notify(conn, woken)
    return woken


async def steps_requeued(
    conn: Conn, now: datetime | None, runs: dict[str, RunRow], requeued: Sequence[tuple[str, str, str, str]]
) -> tuple[dict[str, bool], list[str]]:
    """Steps ``(run_id, job_id, step, state before)``, by seq, that a requeue just moved back to
    pending (already written), of ``runs`` (locked): ``workflow_rules.settle_requeued`` per run, then
    the steps it brings back written with their held flags, and a cancelled run's flag cleared when
    one came back from a final state. Returns the held flag of the requeued jobs it decided (by job
    id), and the queues of the steps that may run now (woken here)."""
    held: dict[str, bool] = {}
    woken: list[str] = []
    for run_id, items in by_run(requeued).items():
        run = runs.get(run_id)
        if run is None:
            continue
        steps, queues = await _steps_now(conn, run)
        settled = settle_requeued(run.nodes, steps, [(j, n, _STATES[b]) for j, n, b in items])
        held.update(settled.held)
        if settled.back and run.cancelled:
            await conn.execute(Q["workflow_run_set_cancelled"], {"id": run_id, "cancelled": False})
        if settled.revive:
            params = {
                "id": json_array([run.job_ids[n] for n in settled.revive]),
                "held": json_array(list(settled.revive.values())),
                "now": now,
            }
            await conn.execute(Q["workflow_step_revive"], params)
            woken.extend(queues[n] for n, h in settled.revive.items() if not h and n in queues)
    await notify(conn, woken)
    return held, woken
