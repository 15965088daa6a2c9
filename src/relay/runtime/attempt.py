"""One attempt of one job inside a worker: what runs it, and how to stop it.

Stopping has one entry point, :meth:`Attempt.stop`, whatever the reason (timeout, cancellation,
shutdown, lost lease) and whatever runs the job: an async task is cancelled, a sync task's thread is
interrupted, a shell command's process group is terminated (then killed) by ``run_shell``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from relay.runtime.context import JobContext
from relay.runtime.sync_threads import SyncCall
from relay.types import Job, JobKind


class StopReason(StrEnum):
    TIMEOUT = "timeout"
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"


@dataclass(eq=False)
class Attempt:
    job: Job
    ctx: JobContext
    started: float = field(default_factory=time.monotonic)
    stop_reason: StopReason | None = None
    # Set when a stop is requested; run_shell watches it to terminate the process group.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None  # the coroutine that runs the job's code
    sync_call: SyncCall | None = None  # set while a sync task runs in a pool thread
    next_beat: float = 0.0  # monotonic time its next heartbeat is due (written by the heartbeat thread)
    on_stop: Callable[[], None] | None = None  # the executor's watch: abandons code that does not stop

    def __post_init__(self) -> None:
        self.next_beat = self.started + self.beat_interval

    @property
    def beat_interval(self) -> float:
        """A third of the lease: two beats may be lost before the lease expires."""
        return min(max(self.job.lease / 3, 0.05), 10.0)

    @property
    def lease_token(self) -> str:
        assert self.job.lease_token is not None, "a claimed job always has a lease token"
        return self.job.lease_token

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self, reason: StopReason) -> None:
        """Ask the job's code to stop now; the first reason given is the one recorded."""
        first = self.stop_reason is None
        if first:
            self.stop_reason = reason
        self.stopping.set()
        if first and self.on_stop is not None:
            self.on_stop()
        if self.job.kind is JobKind.SHELL:
            return  # run_shell sees `stopping` and kills the process group itself
        if self.sync_call is not None:
            self.sync_call.interrupt()
        elif self.task is not None:
            self.task.cancel()
