"""Deletes finished jobs older than the retention, so storage does not grow without bound, and the token
buckets of rate limits that are full again (a full bucket and no bucket mean the same)."""

from __future__ import annotations

from datetime import timedelta

from relay.clock import Clock
from relay.storage.base import Maintenance
from relay.storage.params import PruneParams


class JobPruner:
    name = "pruner"
    leader_only = True

    def __init__(self, storage: Maintenance, clock: Clock, retention: float, interval: float = 60.0) -> None:
        self._storage = storage
        self._clock = clock
        self._retention = retention
        self.interval = interval
        self.batch = 10_000
        self.max_batches = 100  # a pass ends after 1,000,000 jobs; the next one goes on

    async def run_once(self) -> int:
        """Prune in batches (each one short transaction) until a batch comes back short, so a fleet
        that finishes more than a batch per interval never outgrows the retention. A retention of 0
        keeps every job."""
        total = await self._storage.rate_buckets_prune()
        if self._retention <= 0:
            return total
        cutoff = self._clock.now() - timedelta(seconds=self._retention)
        params = PruneParams(finished_before=cutoff, limit=self.batch)
        for _ in range(self.max_batches):
            pruned = await self._storage.job_prune(params)
            total += pruned
            if pruned < self.batch:
                break
        return total
