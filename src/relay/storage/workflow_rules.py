"""What a workflow run's steps do to each other, as pure functions of the run's graph and its steps'
states: one statement of the rules, used by the backends that decide in Python (memory, SQLite,
PostgreSQL, each under its own lock of the run); Redis (Lua) keeps the same rules, and the conformance
suite holds all four.

A step *succeeded* when its job completed, or when it died or was cancelled and the step has
``allow_failure`` (``relay.types.step_succeeded``). A step is *waiting* while its job is pending,
scheduled or failed (a retry is due), or held (its job waits for the steps it depends on).

- When a step's job ends (completed, dead, cancelled) and the step succeeded: each step depending on it
  whose dependencies have all succeeded is released (no longer held).
- When it ends and failed: with the ``stop`` policy every waiting step of the run is cancelled; with
  ``continue`` every step that depends on it, directly or not, is cancelled (they can never run), and
  the other branches go on. Steps cancelled this way cascade no further: the set is computed at once.
- Running steps are never touched by a failure elsewhere: they end by themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from relay.types import FailurePolicy, JobState, step_succeeded

_WAITING = frozenset({JobState.PENDING, JobState.SCHEDULED, JobState.FAILED})
_RETRYABLE = frozenset({JobState.DEAD, JobState.CANCELLED, JobState.FAILED})
_FINAL = JobState.final()


@dataclass(frozen=True, slots=True)
class Node:
    """A step as the rules see it."""

    name: str
    depends_on: tuple[str, ...]
    allow_failure: bool


@dataclass(frozen=True, slots=True)
class StepNow:
    """A step's job as it is now (``state`` None: the job is gone)."""

    state: JobState | None
    held: bool


@dataclass(frozen=True, slots=True)
class Effects:
    release: tuple[str, ...] = ()  # held steps that may run now
    cancel: tuple[str, ...] = ()  # waiting steps that can no longer run


def initially_held(nodes: Iterable[Node]) -> set[str]:
    """At start, every step with dependencies waits for them."""
    return {node.name for node in nodes if node.depends_on}


def after_step_ended(
    nodes: Iterable[Node], now: Mapping[str, StepNow], ended: str, policy: FailurePolicy
) -> Effects:
    """The effects of step ``ended`` reaching a final state (``now`` already shows it ended)."""
    graph = {node.name: node for node in nodes}
    node = graph[ended]
    if _succeeded(graph[ended], now):
        ready = [
            child.name
            for child in graph.values()
            if ended in child.depends_on
            and now[child.name].held
            and now[child.name].state in _WAITING
            and all(_succeeded(graph[parent], now) for parent in child.depends_on)
        ]
        return Effects(release=tuple(ready))
    if policy is FailurePolicy.STOP:
        doomed = [name for name in graph if name != node.name and _waiting(now[name])]
    else:
        doomed = [name for name in _descendants(graph, ended) if _waiting(now[name])]
    return Effects(cancel=tuple(doomed))


def to_retry(nodes: Iterable[Node], now: Mapping[str, StepNow], step: str) -> dict[str, bool] | None:
    """Retrying ``step`` (its job dead, cancelled or failed, and each of its dependencies succeeded or
    back too): the steps to bring back to pending, each with whether it is held. The step itself, and
    every cancelled step of the run whose dependencies have succeeded or come back with it (those its
    failure cancelled). None if ``step`` cannot be retried: its job has not failed, or a step it
    depends on failed and is not coming back (retry that one)."""
    graph = {node.name: node for node in nodes}
    if now[step].state not in _RETRYABLE:
        return None
    back = {step}
    changed = True
    while changed:  # the cancelled steps whose every dependency has succeeded or comes back
        changed = False
        for name, node in graph.items():
            if name in back or now[name].state is not JobState.CANCELLED:
                continue
            if all(p in back or _succeeded(graph[p], now) for p in node.depends_on):
                back.add(name)
                changed = True
    if not all(p in back or _succeeded(graph[p], now) for p in graph[step].depends_on):
        return None
    return {
        name: any(p in back or not _succeeded(graph[p], now) for p in graph[name].depends_on)
        for name in graph
        if name in back
    }


def _succeeded(node: Node, now: Mapping[str, StepNow]) -> bool:
    step = now[node.name]
    return step_succeeded(step.state, node.allow_failure)


def _waiting(step: StepNow) -> bool:
    return step.state in _WAITING


def _descendants(graph: Mapping[str, Node], root: str) -> list[str]:
    found: list[str] = []
    frontier = [root]
    while frontier:
        current = frontier.pop()
        for node in graph.values():
            if current in node.depends_on and node.name not in found:
                found.append(node.name)
                frontier.append(node.name)
    return found


# -- batches: several steps of one run ending or coming back in one write ----------------------------


@dataclass(slots=True)
class Settled:
    """What the storage writes after :func:`settle_ended` or :func:`settle_requeued`."""

    release: list[str] = field(default_factory=list)  # held steps that may run now
    cancel: list[str] = field(default_factory=list)  # waiting steps that can no longer run
    revive: dict[str, bool] = field(default_factory=dict)  # steps back to pending, with their held flag
    held: dict[str, bool] = field(default_factory=dict)  # requeued job id -> its held flag
    back: bool = False  # a step came back from a final state (a cancelled run is not cancelled any more)


def settle_ended(
    nodes: Sequence[Node], steps: MutableMapping[str, StepNow], ended: Iterable[str], policy: FailurePolicy
) -> Settled:
    """Steps ``ended`` just reached a final state (``steps`` shows it): :func:`after_step_ended` for each
    in turn, ``steps`` updated between them as if they had ended one after another."""
    release: dict[str, None] = {}
    cancel: dict[str, None] = {}
    for name in ended:
        if name not in steps:  # not a step of this run's graph (a job forged through the seam)
            continue
        effects = after_step_ended(nodes, steps, name, policy)
        for other in effects.release:
            steps[other] = StepNow(steps[other].state, False)
            release[other] = None
        for other in effects.cancel:  # no cascade: the set was computed at once
            steps[other] = StepNow(JobState.CANCELLED, False)
            cancel[other] = None
    return Settled(release=[n for n in release if n not in cancel], cancel=list(cancel))


def settle_requeued(
    nodes: Sequence[Node], steps: MutableMapping[str, StepNow], requeued: Sequence[tuple[str, str, JobState]]
) -> Settled:
    """Steps ``(job_id, name, state before)`` that a requeue just moved back to pending, by seq; ``steps``
    shows the run as written, which this overrides with the states before. Each in turn, as if they were
    requeued one after another: a step back from a final state gets :func:`to_retry` (None: it comes back
    held, since a step it depends on failed and stays failed); a step brought back by an earlier one's
    retry is not coming back from a final state any more; a failed job requeued keeps its held flag."""
    requeued = [item for item in requeued if item[1] in steps]  # see settle_ended
    for _job_id, name, before in requeued:
        steps[name] = StepNow(before, False)  # held steps are never requeueable
    out = Settled()
    for job_id, name, before in requeued:
        if name in out.revive:  # brought back already, by the retry of a step before it
            out.held[job_id] = steps[name].held
            continue
        if before not in _FINAL:
            steps[name] = StepNow(JobState.PENDING, steps[name].held)
            continue
        out.back = True
        plan = to_retry(nodes, steps, name) or {name: True}
        for other, other_held in plan.items():
            steps[other] = StepNow(JobState.PENDING, other_held)
            out.revive[other] = other_held
        out.held[job_id] = plan[name]
    return out
