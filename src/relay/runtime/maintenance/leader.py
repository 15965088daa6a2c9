"""Runs the maintenance services: most on exactly one node, the elected leader.

Every worker process runs a MaintenanceRunner; each tries to become (or stay) leader every third of
the leader term. Only the leader runs the ``leader_only`` services. If it dies, its term lapses and
another takes over within ``ttl``; the reaper's delay in the worst case is therefore ``ttl + reaper
interval``. Services that storage makes safe to run everywhere (the cron scheduler) run on every node,
so that no tick waits for an election.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from relay.runtime.maintenance.service import Service, ServiceHealth
from relay.storage.base import Maintenance
from relay.storage.params import LeaderParams

log = logging.getLogger("relay.maintenance")

LEADER_NAME = "maintenance"


class MaintenanceRunner:
    def __init__(self, storage: Maintenance, holder: str, services: Sequence[Service], ttl: float) -> None:
        self._storage = storage
        self._params = LeaderParams(LEADER_NAME, holder, ttl)
        self._services = list(services)
        self.health = {s.name: ServiceHealth(s.name) for s in services}
        self.is_leader = False

    async def run(self, stop: asyncio.Event) -> None:
        next_due = {s.name: 0.0 for s in self._services}
        next_election = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_election:
                    await self._elect()
                    next_election = now + self._params.ttl / 3
                active = [s for s in self._services if self.is_leader or not s.leader_only]
                for service in active:
                    if time.monotonic() >= next_due[service.name]:
                        await self._run_service(service)
                        next_due[service.name] = time.monotonic() + service.interval
                wake_at = min([next_election, *(next_due[s.name] for s in active)])
                await _wait(stop, max(0.0, wake_at - time.monotonic()))
        finally:
            if self.is_leader:
                await self._resign()

    async def _elect(self) -> None:
        try:
            leader = await self._storage.leader_elect(self._params)
        except Exception:
            log.exception("leader election failed")
            leader = False
        if leader != self.is_leader:
            log.info(
                "%s maintenance leadership",
                "took" if leader else "lost",
                extra={"relay": {"event": "leader", "leader": leader}},
            )
        self.is_leader = leader

    async def _run_service(self, service: Service) -> None:
        try:
            touched: int | None = await service.run_once()
        except Exception:
            log.exception("maintenance service %s failed", service.name)
            touched = None
        self.health[service.name].record(touched)

    async def _resign(self) -> None:
        try:
            await self._storage.leader_resign(self._params)
        except Exception:
            log.exception("could not resign leadership")
        self.is_leader = False


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
