"""Workflow runs on Redis: start, read, list, cancel, retry a step (relay.storage.base.Workflows).

A run is one hash, ``P:run:<id>`` (see :mod:`.keys`): its workflow's name, policy, params, creation
time, seq, the start call's token, the cancelled flag and its graph (JSON: per step in definition
order ``[name, job id, depends_on, allow_failure]``); ``P:runs`` and ``P:runs-of:<workflow>`` list runs
by seq. Its steps are ordinary jobs, each with a ``workflow_run_id`` field; a step with dependencies
is written held, in no ready or waiting set.

The effects of a step's job ending or coming back (``relay.storage.workflow_rules``, ported to Lua in
``workflows()`` of ``scripts/_lib.lua``) are applied by whichever script moves the job (finish, reap,
cancel, requeue, and the scripts here), in the same script: nothing here decides them in Python.

Each function is one script call, run on the backend's private loop inside
:func:`relay.storage.redis.session.run`. A start is prepared once (:class:`StartCall`: ids and token
chosen before), so that a start sent again after a lost reply finds its own run and reports it created.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson

from relay.errors import (
    DuplicateJobError,
    InvalidJobError,
    InvalidTransitionError,
    InvalidWorkflowError,
    WorkflowRunNotFoundError,
)
from relay.storage.params import WorkflowListParams, WorkflowPage, WorkflowStart, WorkflowStarted
from relay.storage.redis.codec import Times, encode_json, from_us, pack_new_job
from relay.storage.redis.session import Session
from relay.storage.workflow_rules import Node, initially_held
from relay.types import FailurePolicy, JobState, WorkflowRun, WorkflowStep, new_job_id, new_job_ids

_STATES = {s.value.encode(): s for s in JobState}


class StartCall:
    """One ``workflow_start``, checked and packed before anything is sent (a step refused, a value JSON
    cannot carry: raised here, nothing written), with its run id, job ids and token chosen once."""

    def __init__(self, p: WorkflowStart) -> None:
        _check(p)
        self.run_id = p.run_id or new_job_id()
        held = initially_held(Node(s.name, tuple(s.depends_on), s.allow_failure) for s in p.steps)
        fresh = new_job_ids(len(p.steps))
        ids = [s.job.id if s.job.id is not None else f for s, f in zip(p.steps, fresh, strict=True)]
        packed, graph = [], []
        for step, job_id in zip(p.steps, ids, strict=True):
            if not job_id:
                raise InvalidJobError(f"steps.{step.name}.id", "a job id must not be empty")
            job = replace(step.job, workflow_run_id=self.run_id, workflow_step=step.name)
            packed.append(pack_new_job(job, job_id, step.name in held))
            graph.append([step.name, job_id, list(step.depends_on), bool(step.allow_failure)])
        self.run = (
            self.run_id,
            p.workflow,
            FailurePolicy(p.policy).value,
            encode_json(p.params, "params"),
            orjson.dumps(graph).decode(),
        )
        self.body = orjson.dumps(packed)
        self.token = secrets.token_hex(8)

    async def run_once(self, s: Session) -> WorkflowStarted:
        reply = await s.scripts.workflow_start(s.now(), s.origin, self.token, self.run, self.body)
        tag = reply[0]
        if tag == b"dup":
            raise DuplicateJobError(reply[1].decode())
        if tag == b"ok":
            s.wake_from(reply[3])
        run = run_from_reply(self.run_id, reply[2])
        assert run is not None  # read by the script that found or wrote it
        return WorkflowStarted(run, created=int(reply[1]) == 1)


def _check(p: WorkflowStart) -> None:
    """What no step may have, and a graph whose names do not add up (relay.workflows checks
    definitions first; this keeps the scripts from ever meeting such a graph)."""
    names: set[str] = set()
    for n, step in enumerate(p.steps):
        for field in ("ordering_key", "idempotency_key"):
            if getattr(step.job, field):
                raise InvalidJobError(f"steps.{step.name}.{field}", "a workflow's step cannot have one")
        if step.name in names:
            raise InvalidWorkflowError(f"steps[{n}].name", f"two steps are named {step.name!r}")
        names.add(step.name)
    for n, step in enumerate(p.steps):
        unknown = [name for name in step.depends_on if name not in names]
        if unknown:
            raise InvalidWorkflowError(f"steps[{n}].depends_on", f"no step named {unknown[0]!r}")


async def get(s: Session, run_id: str) -> WorkflowRun | None:
    [values] = await s.scripts.workflow_read(s.now(), run_id)
    return run_from_reply(run_id, values)


def parse_cursor(cursor: str | None) -> str:
    """The run seq to list below ('' = from the newest): a page's cursor is the seq of its last run."""
    if cursor is None:
        return ""
    if not cursor.isdigit():
        raise ValueError(f"not a workflow list cursor: {cursor!r}")
    return cursor


async def list_runs(s: Session, p: WorkflowListParams) -> WorkflowPage:
    """Runs newest first (the caller checked the limit and the cursor)."""
    reply = await s.scripts.workflow_list(s.now(), p.workflow, parse_cursor(p.cursor), p.limit)
    runs: list[WorkflowRun] = []
    last_seq = ""
    for x in range(1, len(reply), 2):
        run = run_from_reply(reply[x].decode(), reply[x + 1])
        if run is not None:
            runs.append(run)
            last_seq = reply[x + 1][5].decode()
    return WorkflowPage(runs, last_seq if int(reply[0]) == 1 and runs else None)


async def cancel(s: Session, run_id: str) -> WorkflowRun:
    reply = await s.scripts.workflow_cancel(s.now(), s.origin, run_id)
    if reply[0] == b"missing":
        raise WorkflowRunNotFoundError(run_id)
    s.wake_from(reply[2])
    run = run_from_reply(run_id, reply[1])
    assert run is not None
    return run


async def retry_step(s: Session, run_id: str, step: str) -> WorkflowRun:
    reply = await s.scripts.workflow_retry(s.now(), s.origin, run_id, step)
    tag = reply[0]
    if tag == b"missing":
        raise WorkflowRunNotFoundError(run_id)
    if tag == b"nostep":
        raise InvalidWorkflowError("step", f"run {run_id!r} has no step named {step!r}")
    if tag == b"invalid":
        raise InvalidTransitionError(reply[1].decode(), reply[2].decode(), "retry")
    s.wake_from(reply[2])
    run = run_from_reply(run_id, reply[1])
    assert run is not None
    return run


def run_from_reply(run_id: str, values: Sequence[Any] | None) -> WorkflowRun | None:
    """A run from ``workflows().read()`` (``_lib.lua``): workflow, policy, params, cancelled,
    created_at, seq, graph, then per step its job's fields (:func:`_step`)."""
    if not values:
        return None
    workflow, policy, params, cancelled, created_at, _seq, graph, steps = values
    times: Times = {}
    return WorkflowRun(
        id=run_id,
        workflow=workflow.decode(),
        policy=FailurePolicy(policy.decode()),
        params=orjson.loads(params),
        cancelled=cancelled == b"1",
        created_at=from_us(created_at),
        steps=tuple(_step(node, v, times) for node, v in zip(orjson.loads(graph), steps, strict=True)),
    )


def _step(node: list[Any], values: Sequence[bytes | None], times: Times) -> WorkflowStep:
    """A step from its graph entry (name, job id, depends_on, allow_failure) and its job's state, held,
    attempt, result, started_at, finished_at (all None: the job is gone)."""
    name, job_id, depends_on, allow_failure = node
    state, held, attempt, result, started_at, finished_at = values
    return WorkflowStep(
        name=name,
        job_id=job_id,
        depends_on=tuple(depends_on),
        allow_failure=bool(allow_failure),
        state=None if state is None else _STATES[state],
        held=held == b"1",
        attempt=0 if attempt is None else int(attempt),
        result=None if result is None else orjson.loads(result),
        started_at=_time(times, started_at),
        finished_at=_time(times, finished_at),
    )


def _time(times: Times, value: bytes | None) -> datetime | None:
    if value is None:
        return None
    found = times.get(value)
    if found is None:
        found = times[value] = from_us(value)
    return found
