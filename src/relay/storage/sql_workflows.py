"""What the SQL backends (SQLite, PostgreSQL) share about workflow runs: the run row with its graph
decoded, the checks before a start, and how a run is shown from its steps' jobs.

A run's graph is stored as JSON in definition order, ``[[name, [depends_on...], allow_failure,
job_id], ...]``; each backend decodes its own columns (times, JSON) into a :class:`RunRow` and reads
the steps' jobs its own way, then :func:`run_view` builds what callers see.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from relay.errors import InvalidJobError
from relay.storage.params import WorkflowStart
from relay.storage.workflow_rules import Node
from relay.types import JSON, FailurePolicy, Job, JobState, WorkflowRun, WorkflowStep

#: Above every seq: the first page of a run list.
NO_CURSOR = 2**63 - 1


@dataclass(frozen=True, slots=True)
class RunRow:
    """A stored run, its graph decoded."""

    seq: int
    id: str
    workflow: str
    policy: FailurePolicy
    params: dict[str, JSON]
    cancelled: bool
    created_at: datetime
    nodes: tuple[Node, ...]
    job_ids: dict[str, str]  # step name -> job id, in definition order


def run_row(
    seq: int,
    run_id: str,
    workflow: str,
    policy: str,
    params: dict[str, JSON],
    cancelled: bool,
    created_at: datetime,
    graph: Sequence[Sequence[Any]],
) -> RunRow:
    """From a run's columns, decoded by the backend (``graph``: the stored JSON, loaded)."""
    return RunRow(
        seq=seq,
        id=run_id,
        workflow=workflow,
        policy=FailurePolicy(policy),
        params=params,
        cancelled=bool(cancelled),
        created_at=created_at,
        nodes=tuple(Node(name, tuple(deps), bool(allow)) for name, deps, allow, _ in graph),
        job_ids={name: job_id for name, _, _, job_id in graph},
    )


def graph_json(nodes: Sequence[Node], jobs: Sequence[Job]) -> str:
    return orjson.dumps(
        [[n.name, list(n.depends_on), n.allow_failure, j.id] for n, j in zip(nodes, jobs, strict=True)]
    ).decode()


def checked_start(p: WorkflowStart) -> tuple[tuple[Node, ...], str]:
    """The run's nodes and its params as JSON text, or :class:`InvalidJobError` before anything is
    written: a step cannot have an ordering key (its order is the graph's) nor an idempotency key (the
    run is started once, by its id)."""
    for s in p.steps:
        if s.job.ordering_key is not None:
            raise InvalidJobError(f"steps.{s.name}.ordering_key", "a workflow's step cannot have one")
        if s.job.idempotency_key is not None:
            raise InvalidJobError(f"steps.{s.name}.idempotency_key", "a workflow's step cannot have one")
    try:
        params = orjson.dumps(p.params).decode()
    except orjson.JSONEncodeError as exc:
        raise InvalidJobError("params", f"not a JSON value: {exc}") from exc
    return tuple(Node(s.name, tuple(s.depends_on), s.allow_failure) for s in p.steps), params


@dataclass(frozen=True, slots=True)
class StepJob:
    """What a run shows of a step's job."""

    state: JobState
    held: bool
    attempt: int
    result: JSON
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> StepJob:
        return cls(job.state, job.held, job.attempt, job.result, job.started_at, job.finished_at)


def run_view(run: RunRow, jobs: Mapping[str, StepJob]) -> WorkflowRun:
    """``run`` with its steps as ``jobs`` (by job id; a missing one is gone: pruned or purged)."""
    return WorkflowRun(
        id=run.id,
        workflow=run.workflow,
        policy=run.policy,
        params=run.params,
        cancelled=run.cancelled,
        created_at=run.created_at,
        steps=tuple(_step(n, run.job_ids[n.name], jobs.get(run.job_ids[n.name])) for n in run.nodes),
    )


def _step(node: Node, job_id: str, job: StepJob | None) -> WorkflowStep:
    if job is None:
        return WorkflowStep(node.name, job_id, node.depends_on, node.allow_failure, None, False)
    return WorkflowStep(
        name=node.name,
        job_id=job_id,
        depends_on=node.depends_on,
        allow_failure=node.allow_failure,
        state=job.state,
        held=job.held,
        attempt=job.attempt,
        result=job.result,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def by_run(items: Iterable[tuple[str, ...]]) -> dict[str, list[tuple[str, ...]]]:
    """``items`` grouped by their first field (a run id), each group in the order given."""
    groups: dict[str, list[tuple[str, ...]]] = {}
    for item in items:
        groups.setdefault(item[0], []).append(item[1:])
    return groups


def parse_cursor(cursor: str | None) -> int:
    """A run list's cursor: the seq of the last run of the page before, as a decimal string."""
    if cursor is None:
        return NO_CURSOR
    try:
        return int(cursor)
    except ValueError:
        raise ValueError(f"not a workflow list cursor: {cursor!r}") from None
