"""Heartbeats from a thread of their own, so that job code cannot starve them.

An async job that blocks the event loop, or a CPU-bound sync job holding the GIL for long stretches,
would delay a heartbeat scheduled on the worker's loop; this thread runs its own loop and still gets
the GIL at every switch interval. Each beat extends the leases of every running job of the worker in
one storage call, and carries progress and checkpoints. Results go back to the worker's loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from relay.runtime.attempt import Attempt
from relay.storage.base import WorkerStorage
from relay.storage.params import HeartbeatItem, HeartbeatResult
from relay.types import WorkerInfo

log = logging.getLogger("relay.worker")

WORKER_BEAT_INTERVAL = 5.0


class RunningSet:
    """The worker's running attempts by job id; shared by the worker's loop and the heartbeat thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[str, Attempt] = {}
        # Set when a job is added that is due for a beat before the heartbeat thread means to wake
        # (``wake_at``): a short-lease job claimed while long-lease jobs run is beaten in time. Most
        # jobs are due later than that, and then the thread is left asleep: waking it (and its scan
        # of every running job) for each of thousands of claims a second cost more than the jobs.
        self.added = threading.Event()
        self._wake_at = 0.0

    def add(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts[attempt.job.id] = attempt
            sooner = attempt.next_beat < self._wake_at
        if sooner:
            self.added.set()

    def plan_wake(self, latest: float) -> float:
        """For the heartbeat thread: the monotonic time of its next wake-up (the earliest beat due,
        at the latest ``latest``); a job added later that is due sooner wakes it through ``added``."""
        with self._lock:
            due = min((a.next_beat for a in self._attempts.values()), default=latest)
            self._wake_at = min(due, latest)
            return self._wake_at

    def remove(self, attempt: Attempt) -> None:
        """Remove this attempt; a newer attempt of the same job (claimed again) stays."""
        with self._lock:
            if self._attempts.get(attempt.job.id) is attempt:
                del self._attempts[attempt.job.id]

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._attempts)


class Heartbeater:
    def __init__(
        self,
        storage: WorkerStorage,
        running: RunningSet,
        deliver: Callable[[HeartbeatResult, dict[str, Attempt]], None],
        worker_info: Callable[[], WorkerInfo],
    ) -> None:
        self._storage = storage
        self._running = running
        # Called in this thread with the result and the attempts it was about (not later ones of the
        # same jobs); it must hand over to the worker's loop itself.
        self._deliver = deliver
        self._worker_info = worker_info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="relay-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._running.added.set()
        self._thread.join(timeout=10)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        next_worker_beat = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                # A job's beat is due a third of its lease after its last one; the worker's own beat
                # comes every WORKER_BEAT_INTERVAL.
                wake_at = self._running.plan_wake(min(now + WORKER_BEAT_INTERVAL, next_worker_beat))
                self._running.added.wait(max(0.0, wake_at - now))
                self._running.added.clear()
                attempts = self._running.snapshot()
                now = time.monotonic()
                if any(a.next_beat <= now for a in attempts):
                    self._beat_jobs(loop, attempts)  # all of them: one round trip either way
                if now >= next_worker_beat:
                    next_worker_beat = now + WORKER_BEAT_INTERVAL
                    self._beat_worker(loop)
        finally:
            loop.close()

    def _beat_jobs(self, loop: asyncio.AbstractEventLoop, attempts: list[Attempt]) -> None:
        items = []
        beaten = {a.job.id: a for a in attempts}
        for attempt in attempts:
            attempt.next_beat = time.monotonic() + attempt.beat_interval
            progress, checkpoint, dirty = attempt.ctx.take_updates()
            items.append(HeartbeatItem(attempt.job.id, attempt.lease_token, progress, checkpoint, dirty))
        try:
            result = loop.run_until_complete(self._storage.job_heartbeat_many(items))
        except Exception:
            log.exception("heartbeat of %d jobs failed; retrying at the next beat", len(items))
            return
        if result.lost or result.cancel_requested:
            self._deliver(result, beaten)

    def _beat_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(self._storage.worker_heartbeat(self._worker_info()))
        except Exception:
            log.exception("worker heartbeat failed")
