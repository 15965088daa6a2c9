"""Records attempts' outcomes in batches: one ``job_finish_many`` round trip for many jobs.

While a flush is in flight, new outcomes gather for the next one, so batches grow with the load and
an idle worker still records an outcome at once. A failed flush is retried with backoff, keeping the
outcomes; the jobs stay in the worker's running set meanwhile, so their leases keep being extended.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from relay.errors import RelayError
from relay.runtime.attempt import Attempt
from relay.runtime.logs import LogWriter
from relay.storage.base import WorkerStorage
from relay.storage.params import FinishItem, FinishResult

log = logging.getLogger("relay.worker")

FINAL_FLUSH_SECONDS = 30.0

Recorded = Callable[[Attempt, FinishItem, FinishResult], None]


class Completer:
    """Owned by the worker's event loop."""

    def __init__(
        self, storage: WorkerStorage, logs: LogWriter, on_recorded: Recorded, *, batch: int = 1000
    ) -> None:
        self._storage = storage
        self._logs = logs
        self._on_recorded = on_recorded
        self._batch = batch
        self._pending: list[tuple[Attempt, FinishItem]] = []
        self._wake = asyncio.Event()

    def submit(self, attempt: Attempt, item: FinishItem) -> None:
        self._pending.append((attempt, item))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush whenever outcomes wait; after ``stop``, flush what is left (for at most
        ``FINAL_FLUSH_SECONDS`` of storage outage) and return."""
        deadline: float | None = None
        while True:
            if stop.is_set() and deadline is None:
                deadline = time.monotonic() + FINAL_FLUSH_SECONDS
            if not self._pending:
                if stop.is_set():
                    return
                stop_wait = asyncio.ensure_future(stop.wait())
                wake_wait = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stop_wait, wake_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                wake_wait.cancel()
                self._wake.clear()
                continue
            await self.flush(deadline)

    async def flush(self, deadline: float | None = None) -> None:
        """Record the next batch. Past ``deadline`` (a monotonic time, at shutdown) a storage outage
        stops the retries: those jobs stay running in storage, and the reaper returns them."""
        batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
        if not batch:
            return
        await self._logs.flush()  # a job's output is stored before its outcome
        try:
            results = await self._finish_with_retry([item for _, item in batch], deadline)
        except Exception:
            # Not a storage outage: some item the storage refuses. Record the others one by one,
            # so one bad outcome never stops the worker from recording the rest.
            log.exception("could not record %d outcomes; recording them one by one", len(batch))
            results = [await self._finish_alone(item, deadline) for _, item in batch]
        for (attempt, item), result in zip(batch, results, strict=True):
            self._on_recorded(attempt, item, result)

    async def _finish_alone(self, item: FinishItem, deadline: float | None) -> FinishResult:
        try:
            [result] = await self._finish_with_retry([item], deadline)
            return result
        except Exception:
            log.exception(
                "dropped the outcome of job %s: its lease expires and the reaper retries it", item.job_id
            )
            return FinishResult(item.job_id, None)

    async def _finish_with_retry(self, items: list[FinishItem], deadline: float | None) -> list[FinishResult]:
        delay = 0.05
        while True:
            try:
                return await self._storage.job_finish_many(items)
            except (RelayError, OSError) as exc:
                if deadline is not None and time.monotonic() > deadline:
                    raise
                log.warning("could not record %d outcomes (%s); retrying in %.2fs", len(items), exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 5.0)
