"""Relay: a distributed, fault-tolerant job queue and job runner for Python.

from relay import Relay

relay = Relay()  # sqlite:///relay.db by default

@relay.task(max_retries=5)
def add(a: int, b: int) -> int:
    return a + b

add.enqueue(1, 2)
"""

from __future__ import annotations

from relay.app import Relay
from relay.runtime.context import JobCancelledError, JobContext, job_context
from relay.sdk import JobFailedError, JobHandle, Task
from relay.sdk.runs import RunHandle, WorkflowFailedError
from relay.types import Job, JobKind, JobState, RunState, WorkflowRun
from relay.workflows.canvas import chain, chord, group

__version__ = "0.1.0"

__all__ = [
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobHandle",
    "JobKind",
    "JobState",
    "Relay",
    "RunHandle",
    "RunState",
    "Task",
    "WorkflowFailedError",
    "WorkflowRun",
    "chain",
    "chord",
    "group",
    "job_context",
]
