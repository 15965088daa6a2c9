"""The producer API: tasks, options, job handles."""

from __future__ import annotations

from relay.sdk.handle import JobFailedError, JobHandle
from relay.sdk.options import JobOptions
from relay.sdk.tasks import Task, TaskCall

__all__ = ["JobFailedError", "JobHandle", "JobOptions", "Task", "TaskCall"]
