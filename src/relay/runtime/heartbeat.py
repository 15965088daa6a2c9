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
from relay.storage.base import Storage
from relay.storage.params import HeartbeatItem, HeartbeatResult
from relay.types import WorkerInfo

log = logging.getLogger("relay.worker")

IDLE_INTERVAL = 0.3  # seconds between checks when nothing runs (a new job's first beat comes this soon)
WORKER_BEAT_INTERVAL = 5.0


class RunningSet:
    """The worker's running attempts by job id; shared by the worker's loop and the heartbeat thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: dict[str, Attempt] = {}

    def add(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts[attempt.job.id] = attempt

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._attempts.pop(job_id, None)

    def get(self, job_id: str) -> Attempt | None:
        with self._lock:
            return self._attempts.get(job_id)

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._attempts)


class Heartbeater:
    def __init__(
        self,
        storage: Storage,
        running: RunningSet,
        deliver: Callable[[HeartbeatResult], None],
        worker_info: Callable[[], WorkerInfo],
    ) -> None:
        self._storage = storage
        self._running = running
        self._deliver = deliver  # called in this thread; must hand over to the worker's loop itself
        self._worker_info = worker_info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="relay-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _interval(self, attempts: list[Attempt]) -> float:
        if not attempts:
            return IDLE_INTERVAL
        shortest = min(a.job.lease for a in attempts)
        return min(max(shortest / 3, 0.05), 10.0)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        next_worker_beat = 0.0
        try:
            while not self._stop.wait(self._interval(self._running.snapshot())):
                attempts = self._running.snapshot()
                if attempts:
                    self._beat_jobs(loop, attempts)
                if time.monotonic() >= next_worker_beat:
                    next_worker_beat = time.monotonic() + WORKER_BEAT_INTERVAL
                    self._beat_worker(loop)
        finally:
            loop.close()

    def _beat_jobs(self, loop: asyncio.AbstractEventLoop, attempts: list[Attempt]) -> None:
        items = []
        for attempt in attempts:
            progress, checkpoint, dirty = attempt.ctx.take_updates()
            items.append(HeartbeatItem(attempt.job.id, attempt.lease_token, progress, checkpoint, dirty))
        try:
            result = loop.run_until_complete(self._storage.job_heartbeat_many(items))
        except Exception:
            log.exception("heartbeat of %d jobs failed; retrying at the next beat", len(items))
            return
        if result.lost or result.cancel_requested:
            self._deliver(result)

    def _beat_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(self._storage.worker_heartbeat(self._worker_info()))
        except Exception:
            log.exception("worker heartbeat failed")
