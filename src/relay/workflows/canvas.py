"""The Python canvas: ``chain``, ``group`` and ``chord`` of task calls (or any jobs), made into one
persisted workflow run, as Celery users know them but kept in storage like every run.

>>> flow = chain(fetch.call(url), group(resize.call(1), resize.call(2)), publish.call())  # doctest: +SKIP
>>> run = relay.start(flow)                                                             # doctest: +SKIP
>>> run.wait(timeout=60).state                                                          # doctest: +SKIP
<RunState.COMPLETED: 'completed'>

- ``chain(a, b, c)``: b starts once a completed, c once b did;
- ``group(a, b)``: a and b at once;
- ``chord(group(a, b), c)`` (or ``chord([a, b], c)``): c once a and b completed: ``chain(group(a, b), c)``.

Parts nest freely. A part is a task call (``task.call(...)``, anything with a ``job``), a
:class:`~relay.types.NewJob`, or another canvas. Steps are named by their position and their task or
program: ``1-fetch``, ``2-resize``, ``3-resize``, ``4-publish``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from relay.errors import InvalidWorkflowError
from relay.types import JobKind, NewJob, StepSpec


@runtime_checkable
class HasJob(Protocol):
    job: NewJob


@dataclass(frozen=True, slots=True)
class Canvas:
    kind: str  # "chain", "group"
    parts: tuple[Canvas | NewJob, ...]

    def steps(self) -> list[StepSpec]:
        """The run's steps, in order, with their dependencies."""
        counter = [0]
        steps: list[StepSpec] = []
        _place(self, (), steps, counter)
        return steps

    @property
    def workflow(self) -> str:
        return self.kind


def chain(*parts: Canvas | NewJob | HasJob) -> Canvas:
    return Canvas("chain", _parts(parts))


def group(*parts: Canvas | NewJob | HasJob) -> Canvas:
    return Canvas("group", _parts(parts))


def chord(header: Canvas | Iterable[Canvas | NewJob | HasJob], body: Canvas | NewJob | HasJob) -> Canvas:
    head = header if isinstance(header, Canvas) else group(*header)
    return Canvas("chord", (head, *_parts((body,))))


def _parts(parts: Iterable[Canvas | NewJob | HasJob]) -> tuple[Canvas | NewJob, ...]:
    out: list[Canvas | NewJob] = []
    for part in parts:
        if isinstance(part, Canvas | NewJob):
            out.append(part)
        elif isinstance(part, HasJob):
            out.append(part.job)
        else:
            raise InvalidWorkflowError(
                "steps", f"expected a task call, a job or a canvas, got {type(part).__name__}"
            )
    if not out:
        raise InvalidWorkflowError("steps", "a canvas needs at least one part")
    return tuple(out)


def _place(
    node: Canvas | NewJob, after: tuple[str, ...], steps: list[StepSpec], counter: list[int]
) -> tuple[str, ...]:
    """Add ``node``'s steps, each first one depending on ``after``; returns its last steps' names."""
    if isinstance(node, NewJob):
        counter[0] += 1
        name = f"{counter[0]}-{_label(node)}"
        steps.append(StepSpec(name, replace(node, idempotency_key=None, ordering_key=None), after))
        return (name,)
    if node.kind == "group":
        ends: list[str] = []
        for part in node.parts:
            ends.extend(_place(part, after, steps, counter))
        return tuple(ends)
    ends_so_far = after
    for part in node.parts:  # a chain, or a chord (a group, then its body)
        ends_so_far = _place(part, ends_so_far, steps, counter)
    return ends_so_far


def _label(job: NewJob) -> str:
    payload = job.payload if isinstance(job.payload, dict) else {}
    if job.kind is JobKind.TASK:
        return str(payload.get("task", "task")).rsplit(".", 1)[-1][:60]
    argv = payload.get("argv") or [payload.get("command") or "job"]
    return str(argv[0]).rsplit("/", 1)[-1][:60] or "job"
