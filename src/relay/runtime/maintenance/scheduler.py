"""Moves scheduled and retrying jobs whose time has come to pending.

Claims already pick up due scheduled and failed jobs; this keeps what the CLI and dashboard show true.
"""

from __future__ import annotations

from relay.storage.base import Maintenance


class JobScheduler:
    name = "scheduler"
    leader_only = True

    def __init__(self, storage: Maintenance, interval: float) -> None:
        self._storage = storage
        self.interval = interval

    async def run_once(self) -> int:
        return await self._storage.job_promote_due()
