"""Helpers for testing code that uses Relay.

from relay.testing import assert_enqueued, inline_mode, memory_relay

relay = memory_relay()              # in-memory storage, nothing on disk

def test_signup():
    signup("ada@example.com")       # your code enqueues send_welcome
    assert_enqueued(relay, task=send_welcome, args=["ada@example.com"])
    relay.drain()                   # run every due job, here and now

def test_signup_inline():
    with inline_mode(relay):        # each enqueue runs its job at once
        handle = send_welcome.enqueue("ada@example.com")
    assert handle.job.state == "completed"
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from relay.app import Relay
from relay.clock import Clock
from relay.sdk.tasks import Task
from relay.settings import Settings
from relay.storage.params import ListParams
from relay.types import Job, JobKind, JobState

__all__ = ["assert_enqueued", "enqueued_jobs", "inline_mode", "memory_relay", "refute_enqueued"]


def memory_relay(clock: Clock | None = None) -> Relay:
    """A Relay on in-memory storage: fast, isolated, gone when the process ends."""
    return Relay(settings=Settings(database_url="memory://"), clock=clock)


@contextmanager
def inline_mode(relay: Relay) -> Iterator[Relay]:
    """Within the block, every enqueue runs its job (and the jobs it chains) before returning."""
    previous, relay.inline = relay.inline, True
    try:
        yield relay
    finally:
        relay.inline = previous


def enqueued_jobs(
    relay: Relay,
    *,
    task: Task[Any, Any] | str | None = None,
    queue: str | None = None,
    states: Sequence[JobState] = (JobState.PENDING, JobState.SCHEDULED),
) -> list[Job]:
    """Jobs waiting to run (oldest first), optionally of one task or queue."""
    jobs: list[Job] = []
    cursor: str | None = None
    while True:
        page = relay.call(
            relay.storage.job_list(
                ListParams(states=states, queues=[queue] if queue else [], limit=500, cursor=cursor)
            )
        )
        jobs.extend(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    name = task.name if isinstance(task, Task) else task
    if name is not None:
        jobs = [j for j in jobs if j.kind is JobKind.TASK and j.payload.get("task") == name]
    return list(reversed(jobs))


def _matches(job: Job, args: Sequence[Any] | None, kwargs: dict[str, Any] | None) -> bool:
    if args is not None and job.payload.get("args") != list(args):
        return False
    return kwargs is None or job.payload.get("kwargs") == kwargs


def assert_enqueued(
    relay: Relay,
    *,
    task: Task[Any, Any] | str | None = None,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
) -> Job:
    """Assert that a matching job waits to run, and return it."""
    jobs = enqueued_jobs(relay, task=task, queue=queue)
    for job in jobs:
        if _matches(job, args, kwargs):
            return job
    seen = "\n".join(f"  {j.queue} {j.payload}" for j in jobs) or "  (none)"
    raise AssertionError(
        f"no enqueued job matches task={task!r} args={args!r} kwargs={kwargs!r}; enqueued:\n{seen}"
    )


def refute_enqueued(
    relay: Relay,
    *,
    task: Task[Any, Any] | str | None = None,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
) -> None:
    """Assert that no matching job waits to run."""
    found = [j for j in enqueued_jobs(relay, task=task, queue=queue) if _matches(j, args, kwargs)]
    if found:
        raise AssertionError(f"{len(found)} enqueued job(s) match, expected none: {[j.id for j in found]}")
