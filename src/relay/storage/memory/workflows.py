"""Workflow runs in memory: start, read, list, cancel, retry a step. The effects of a step's job ending
(or coming back) on the other steps are kept by ``MemoryStore.set_state`` itself, whatever changed it.

Runs with the backend's lock held, like every function of :mod:`.store`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from itertools import islice

from relay.errors import (
    InvalidJobError,
    InvalidTransitionError,
    InvalidWorkflowError,
    WorkflowRunNotFoundError,
)
from relay.storage.memory import operations
from relay.storage.memory.store import MemoryStore, RunRecord, decode_json, encode_json
from relay.storage.params import WorkflowListParams, WorkflowPage, WorkflowStart, WorkflowStarted
from relay.storage.workflow_rules import Node, initially_held, to_retry
from relay.types import JobState, WorkflowRun, WorkflowStep, new_job_id


def start(store: MemoryStore, p: WorkflowStart, now: datetime) -> WorkflowStarted:
    if p.run_id is not None and p.run_id in store.runs:
        return WorkflowStarted(read(store, store.runs[p.run_id]), created=False)
    for step in p.steps:  # checked before anything is written
        if step.job.ordering_key is not None:
            raise InvalidJobError(f"steps.{step.name}.ordering_key", "a workflow's step cannot have one")
        if step.job.idempotency_key is not None:
            raise InvalidJobError(f"steps.{step.name}.idempotency_key", "a workflow's step cannot have one")
    run_id = p.run_id or new_job_id()
    nodes = tuple(Node(s.name, tuple(s.depends_on), s.allow_failure) for s in p.steps)
    held = initially_held(nodes)
    jobs = [replace(s.job, workflow_run_id=run_id, workflow_step=s.name) for s in p.steps]
    params = encode_json(p.params, "params")
    inserted = store.insert_batch(jobs, now)  # all or nothing: a taken id raises before any write
    for step, (record, _created) in zip(p.steps, inserted, strict=True):
        record.held = step.name in held
    store.last_run_seq += 1
    run = RunRecord(
        seq=store.last_run_seq,
        id=run_id,
        workflow=p.workflow,
        policy=p.policy,
        params=params,
        created_at=now,
        nodes=nodes,
        job_ids={step.name: record.id for step, (record, _) in zip(p.steps, inserted, strict=True)},
    )
    store.runs[run_id] = run
    store.wakeups.update(record.queue for record, _ in inserted if not record.held)
    return WorkflowStarted(read(store, run), created=True)


def read(store: MemoryStore, run: RunRecord) -> WorkflowRun:
    steps = []
    for node in run.nodes:
        job = store.jobs.get(run.job_ids[node.name])
        steps.append(
            WorkflowStep(
                name=node.name,
                job_id=run.job_ids[node.name],
                depends_on=node.depends_on,
                allow_failure=node.allow_failure,
                state=None if job is None else job.state,
                held=False if job is None else job.held,
                attempt=0 if job is None else job.attempt,
                result=None if job is None else decode_json(job.result),
                started_at=None if job is None else job.started_at,
                finished_at=None if job is None else job.finished_at,
            )
        )
    return WorkflowRun(
        id=run.id,
        workflow=run.workflow,
        policy=run.policy,
        params=decode_json(run.params),
        cancelled=run.cancelled,
        created_at=run.created_at,
        steps=tuple(steps),
    )


def get(store: MemoryStore, run_id: str) -> WorkflowRun | None:
    run = store.runs.get(run_id)
    return None if run is None else read(store, run)


def list_runs(store: MemoryStore, p: WorkflowListParams) -> WorkflowPage:
    if p.limit < 1:
        raise ValueError(f"limit must be at least 1, got {p.limit}")
    before = _cursor(p.cursor)
    matching = (
        run
        for run in sorted(store.runs.values(), key=lambda r: -r.seq)
        if (before is None or run.seq < before) and (p.workflow is None or run.workflow == p.workflow)
    )
    found = list(islice(matching, p.limit + 1))
    page = found[: p.limit]
    cursor = str(page[-1].seq) if len(found) > p.limit else None
    return WorkflowPage([read(store, run) for run in page], cursor)


def cancel(store: MemoryStore, run_id: str, now: datetime) -> WorkflowRun:
    run = _run(store, run_id)
    run.cancelled = True
    for job_id in run.job_ids.values():
        job = store.jobs.get(job_id)
        if job is not None and job.state not in JobState.final():
            job.held = False
            operations.cancel(store, job_id, now)
    return read(store, run)


def retry_step(store: MemoryStore, run_id: str, step: str, now: datetime) -> WorkflowRun:
    run = _run(store, run_id)
    if step not in run.job_ids:
        raise InvalidWorkflowError("step", f"run {run_id!r} has no step named {step!r}")
    job = store.jobs.get(run.job_ids[step])
    if job is None:
        raise InvalidTransitionError(run.job_ids[step], "gone", "retry")
    if to_retry(run.nodes, store.steps_now(run), step) is None:
        raise InvalidTransitionError(job.id, job.state.value, "retry")
    operations.requeue_one(store, job.id, now)  # set_state brings back what the failure cancelled
    return read(store, run)


def _run(store: MemoryStore, run_id: str) -> RunRecord:
    run = store.runs.get(run_id)
    if run is None:
        raise WorkflowRunNotFoundError(run_id)
    return run


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        raise ValueError(f"not a workflow list cursor: {cursor!r}") from None
