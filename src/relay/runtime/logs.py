"""Buffered job output: lines are appended to storage in batches, not one round trip per line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from relay.storage.base import WorkerStorage
from relay.storage.params import LogAppend

log = logging.getLogger("relay.worker")

OutputSink = Callable[[str, str], Awaitable[None]]


class LogWriter:
    """Collects log lines from running jobs and writes them to storage in batches.

    Owned by the worker's event loop: ``append`` and ``flush`` are only called from it.
    """

    def __init__(self, storage: WorkerStorage, *, batch: int = 500) -> None:
        self._storage = storage
        self._batch = batch
        self._pending: list[LogAppend] = []
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()

    def append(self, job_id: str, attempt: int, stream: str, text: str) -> None:
        self._pending.append(LogAppend(job_id, attempt, stream, text))
        self._wake.set()

    def sink_for(self, job_id: str, attempt: int) -> OutputSink:
        async def sink(stream: str, text: str) -> None:
            self.append(job_id, attempt, stream, text)
            if len(self._pending) >= self._batch:
                await self.flush()

        return sink

    async def flush(self) -> None:
        async with self._flushing:
            while self._pending:
                lines, self._pending = self._pending[: self._batch], self._pending[self._batch :]
                try:
                    await self._storage.job_log_append(lines)
                except Exception:
                    # Output is worth less than the job's outcome: log the loss, never block the worker.
                    log.exception("could not store %d log lines", len(lines))

    async def run(self, stop: asyncio.Event, interval: float = 0.2) -> None:
        """Flush at most every ``interval`` while lines arrive; flush the rest after ``stop``."""
        while not stop.is_set():
            await _first_of(self._wake, stop)
            self._wake.clear()
            await self.flush()
            await _first_of(stop, timeout=interval)
        await self.flush()


async def _first_of(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Wait until one of ``events`` is set (or ``timeout`` passes)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
