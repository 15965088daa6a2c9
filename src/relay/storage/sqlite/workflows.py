"""Workflow runs on SQLite: start, read, list, cancel, retry a step, and the effects of a step's job
ending (or coming back) on the run's other steps.

A run is a ``workflow_runs`` row: its name, policy, params, cancelled flag and its graph (``steps``, JSON
in definition order: name, depends_on, allow_failure, job id). Its steps are ordinary jobs with
``workflow_run_id`` / ``workflow_step`` set, inserted by :func:`relay.storage.sqlite.writes.insert_jobs`;
a step waiting for its dependencies is ``held``, the flag the claim already skips (ordering keys use it
too; a step has no ordering key).

The rules are :mod:`relay.storage.workflow_rules`, applied in Python as the memory backend applies them:
every write runs in one ``BEGIN IMMEDIATE`` transaction, so the graph and the steps' states read here
stay true until the transaction that ended a step commits. The places where a job reaches a final
state or comes back from one call the two hooks, and only for rows whose ``workflow_run_id`` is set
(their statements return it, so a job outside a workflow costs no statement more):

- :func:`steps_ended`: finish (``writes.finish_jobs``), the reaper (``maintenance.reap_expired``) and
  ``job_cancel`` of a waiting job (``admin.cancel_job``);
- :func:`steps_requeued`: ``job_requeue`` (``admin.requeue_jobs``), which ``workflow_retry_step`` uses.

Each function runs on the connection's thread inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import orjson

from relay.errors import (
    InvalidTransitionError,
    InvalidWorkflowError,
    WorkflowRunNotFoundError,
)
from relay.storage.params import WorkflowListParams, WorkflowPage, WorkflowStart, WorkflowStarted
from relay.storage.sql_rows import STATES as _STATES
from relay.storage.sql_rows import Row, dumps
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
from relay.storage.sqlite.rows import from_us, from_us_or_none, to_us
from relay.storage.sqlite.sql import Q
from relay.storage.workflow_rules import (
    StepNow,
    initially_held,
    settle_ended,
    settle_requeued,
    to_retry,
)
from relay.types import WorkflowRun, new_job_id

_GONE = StepNow(None, False)


def _run_from_row(r: Row) -> RunRow:
    """From ``seq, id, workflow, policy, params, cancelled, created_at, steps`` (JSON as text, times in
    microseconds)."""
    return run_row(r[0], r[1], r[2], r[3], orjson.loads(r[4]), r[5], from_us(r[6]), orjson.loads(r[7]))


def _load(conn: sqlite3.Connection, run_id: str) -> RunRow | None:
    row = conn.execute(Q["workflow_run_get"], {"id": run_id}).fetchone()
    return None if row is None else _run_from_row(row)


def _run(conn: sqlite3.Connection, run_id: str) -> RunRow:
    run = _load(conn, run_id)
    if run is None:
        raise WorkflowRunNotFoundError(run_id)
    return run


# -- start -----------------------------------------------------------------------------------------


def start(conn: sqlite3.Connection, now: datetime, p: WorkflowStart) -> tuple[WorkflowStarted, list[str]]:
    """The run and one job per step (held when it has dependencies), in this transaction; a taken
    client id raises :class:`DuplicateJobError` from the insert, and the transaction writes nothing.
    Returns the result and the queues of the steps that may run now (the roots)."""
    # Imported here: writes imports this module for its hook.
    from relay.storage.sqlite.writes import insert_jobs

    if p.run_id is not None:
        existing = _load(conn, p.run_id)
        if existing is not None:
            return WorkflowStarted(_read(conn, [existing])[0], created=False), []
    nodes, params = checked_start(p)
    run_id = p.run_id or new_job_id()
    held = initially_held(nodes)
    specs = [replace(s.job, workflow_run_id=run_id, workflow_step=s.name) for s in p.steps]
    inserted = insert_jobs(conn, now, specs, held_steps=held)
    jobs = [r.job for r in inserted]  # every one created: a step has no idempotency key
    now_us = to_us(now)
    conn.execute(
        Q["workflow_run_insert"],
        {
            "id": run_id,
            "workflow": p.workflow,
            "policy": str(p.policy),
            "params": params,
            "now": now_us,
            "steps": graph_json(nodes, jobs),
        },
    )
    job_ids = {n.name: j.id for n, j in zip(nodes, jobs, strict=True)}
    run = RunRow(
        0, run_id, p.workflow, p.policy, orjson.loads(params), False, from_us(now_us), nodes, job_ids
    )
    view = run_view(run, {j.id: StepJob.of(j) for j in jobs})
    return WorkflowStarted(view, created=True), list(dict.fromkeys(j.queue for j in jobs if not j.held))


# -- read ------------------------------------------------------------------------------------------


def _read(conn: sqlite3.Connection, runs: Sequence[RunRow]) -> list[WorkflowRun]:
    """``runs`` with their steps as their jobs are now, the jobs of all read in one query."""
    ids = [job_id for run in runs for job_id in run.job_ids.values()]
    jobs = {r[0]: _step_job(r) for r in conn.execute(Q["workflow_steps_read"], {"ids": dumps(ids)})}
    return [run_view(run, jobs) for run in runs]


def _step_job(r: Row) -> StepJob:
    """From ``id, state, held, attempt, result, started_at, finished_at``."""
    result = None if r[4] is None else orjson.loads(r[4])
    return StepJob(_STATES[r[1]], bool(r[2]), r[3], result, from_us_or_none(r[5]), from_us_or_none(r[6]))


def get(conn: sqlite3.Connection, now: datetime, run_id: str) -> WorkflowRun | None:
    run = _load(conn, run_id)
    return None if run is None else _read(conn, [run])[0]


def list_runs(conn: sqlite3.Connection, now: datetime, p: WorkflowListParams) -> WorkflowPage:
    """Newest first; the cursor is the seq of the page's last run, as a decimal string (runs started
    later have higher seqs, so they never shift a page)."""
    if p.limit < 1:
        raise ValueError(f"limit must be at least 1, got {p.limit}")
    params = {"before_seq": parse_cursor(p.cursor), "limit": p.limit + 1, "workflow": p.workflow}
    query = Q["workflow_run_list"] if p.workflow is None else Q["workflow_run_list_of"]
    found = [_run_from_row(r) for r in conn.execute(query, params)]
    page = found[: p.limit]
    cursor = str(page[-1].seq) if len(found) > p.limit else None
    return WorkflowPage(_read(conn, page), cursor)


# -- operators -------------------------------------------------------------------------------------


def cancel(conn: sqlite3.Connection, now: datetime, run_id: str) -> WorkflowRun:
    """The run's cancelled flag, then its waiting steps cancelled and its running steps asked to stop
    (as job_cancel does to each); nothing cascades in a cancelled run."""
    run = _run(conn, run_id)
    conn.execute(Q["workflow_run_set_cancelled"], {"id": run_id, "cancelled": 1})
    params = {"ids": dumps(list(run.job_ids.values())), "now": to_us(now)}
    conn.execute(Q["workflow_steps_cancel"], params)
    conn.execute(Q["workflow_steps_cancel_running"], params)
    return _read(conn, [replace(run, cancelled=True)])[0]


def retry_target(conn: sqlite3.Connection, run_id: str, step: str) -> str:
    """The job to requeue to retry ``step`` of run ``run_id`` (the requeue applies
    :func:`steps_requeued`). Raises WorkflowRunNotFoundError, InvalidWorkflowError (no such step) or
    InvalidTransitionError (``workflow_rules.to_retry`` refuses)."""
    run = _run(conn, run_id)
    job_id = run.job_ids.get(step)
    if job_id is None:
        raise InvalidWorkflowError("step", f"run {run_id!r} has no step named {step!r}")
    steps, _ = _steps_now(conn, run)
    state = steps[step].state
    if state is None:
        raise InvalidTransitionError(job_id, "gone", "retry")
    if to_retry(run.nodes, steps, step) is None:
        raise InvalidTransitionError(job_id, state.value, "retry")
    return job_id


# -- the hooks -------------------------------------------------------------------------------------


def _steps_now(conn: sqlite3.Connection, run: RunRow) -> tuple[dict[str, StepNow], dict[str, str]]:
    """Each step of ``run`` as the rules see it, and each existing step's queue."""
    names = {job_id: name for name, job_id in run.job_ids.items()}
    steps = dict.fromkeys(run.job_ids, _GONE)
    queues: dict[str, str] = {}
    for job_id, state, held, queue in conn.execute(Q["workflow_steps_now"], {"ids": dumps(list(names))}):
        name = names[job_id]
        steps[name] = StepNow(_STATES[state], bool(held))
        queues[name] = queue
    return steps, queues


def steps_ended(conn: sqlite3.Connection, now: datetime, ended: Sequence[tuple[str, str]]) -> list[str]:
    """Steps ``(run_id, step)`` whose jobs just reached a final state (already written): in each run
    not cancelled, ``workflow_rules.settle_ended``, then the steps to release or to cancel written, one
    statement each per run. Returns the queues of the released steps (to wake)."""
    woken: list[str] = []
    for run_id, items in by_run(ended).items():
        run = _load(conn, run_id)
        if run is None or run.cancelled:
            continue
        steps, queues = _steps_now(conn, run)
        settled = settle_ended(run.nodes, steps, [name for (name,) in items], run.policy)
        if settled.cancel:
            ids = [run.job_ids[name] for name in settled.cancel]
            conn.execute(Q["workflow_steps_cancel"], {"ids": dumps(ids), "now": to_us(now)})
        if settled.release:
            ids = [run.job_ids[name] for name in settled.release]
            conn.execute(Q["workflow_steps_release"], {"ids": dumps(ids)})
            woken.extend(queues[name] for name in settled.release)
    return woken


def steps_requeued(
    conn: sqlite3.Connection, now: datetime, requeued: Sequence[tuple[str, str, str, str]]
) -> tuple[dict[str, bool], list[str]]:
    """Steps ``(run_id, job_id, step, state before)``, by seq, that a requeue just moved back to
    pending (already written): ``workflow_rules.settle_requeued`` per run, then the steps it brings
    back written with their held flags, and a cancelled run's flag cleared when one came back from a
    final state. Returns the held flag of the requeued jobs it decided (by job id), and the queues of
    the steps that may run now (to wake)."""
    held: dict[str, bool] = {}
    woken: list[str] = []
    for run_id, items in by_run(requeued).items():
        run = _load(conn, run_id)
        if run is None:
            continue
        steps, queues = _steps_now(conn, run)
        settled = settle_requeued(run.nodes, steps, [(j, n, _STATES[b]) for j, n, b in items])
        held.update(settled.held)
        if settled.back and run.cancelled:
            conn.execute(Q["workflow_run_set_cancelled"], {"id": run_id, "cancelled": 0})
        if settled.revive:
            now_us = to_us(now)
            conn.executemany(
                Q["workflow_step_revive"],
                [{"id": run.job_ids[n], "held": int(h), "now": now_us} for n, h in settled.revive.items()],
            )
            woken.extend(queues[n] for n, h in settled.revive.items() if not h and n in queues)
    return held, woken
