"""What a maintenance service is: a name, an interval, and one pass of work."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Service(Protocol):
    name: str
    interval: float  # seconds between passes
    # True: only the elected leader runs it. False: every node does, because storage itself makes
    # the work happen once (the cron scheduler: each tick is a compare-and-set).
    leader_only: bool

    async def run_once(self) -> int:
        """Do one pass; return how many jobs it touched (for logs and metrics)."""
        ...


@dataclass
class ServiceHealth:
    """Liveness of a service: when its last pass ended, and how it went."""

    name: str
    passes: int = 0
    failures: int = 0
    last_run_monotonic: float | None = None
    last_touched: int = 0

    def record(self, touched: int | None) -> None:
        self.passes += 1
        self.last_run_monotonic = time.monotonic()
        if touched is None:
            self.failures += 1
        else:
            self.last_touched = touched
