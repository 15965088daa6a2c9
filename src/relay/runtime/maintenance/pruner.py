"""Deletes finished jobs older than the retention, so storage does not grow without bound."""

from __future__ import annotations

from datetime import timedelta

from relay.clock import Clock
from relay.storage.base import Maintenance
from relay.storage.params import PruneParams


class JobPruner:
    name = "pruner"

    def __init__(self, storage: Maintenance, clock: Clock, retention: float, interval: float = 60.0) -> None:
        self._storage = storage
        self._clock = clock
        self._retention = retention
        self.interval = interval

    async def run_once(self) -> int:
        cutoff = self._clock.now() - timedelta(seconds=self._retention)
        return await self._storage.job_prune(PruneParams(finished_before=cutoff))
