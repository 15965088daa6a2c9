"""Returns jobs whose lease expired (their worker died or stalled) to the queue, or to the DLQ."""

from __future__ import annotations

import logging

from relay.storage.base import Maintenance

log = logging.getLogger("relay.maintenance")


class LeaseReaper:
    name = "reaper"
    leader_only = True

    def __init__(self, storage: Maintenance, interval: float) -> None:
        self._storage = storage
        self.interval = interval

    async def run_once(self) -> int:
        result = await self._storage.job_reap_expired()
        touched = len(result.requeued) + len(result.dead) + len(result.cancelled)
        if touched:
            log.info(
                "reaped %d expired leases: %d requeued, %d dead, %d cancelled",
                touched,
                len(result.requeued),
                len(result.dead),
                len(result.cancelled),
                extra={
                    "relay": {
                        "event": "reaped",
                        "requeued": list(result.requeued),
                        "dead": list(result.dead),
                        "cancelled": list(result.cancelled),
                    }
                },
            )
        return touched
