"""Maintenance services (reaper, scheduler, pruner, cron), each in its own file; see leader.py for who
runs them."""

from __future__ import annotations

from relay.clock import Clock
from relay.runtime.maintenance.cron import CronScheduler
from relay.runtime.maintenance.leader import MaintenanceRunner
from relay.runtime.maintenance.pruner import JobPruner
from relay.runtime.maintenance.reaper import LeaseReaper
from relay.runtime.maintenance.scheduler import JobScheduler
from relay.runtime.maintenance.service import Service
from relay.storage.base import Storage


def default_services(
    storage: Storage,
    clock: Clock,
    *,
    reaper_interval: float,
    scheduler_interval: float,
    retention: float,
    cron_interval: float = 1.0,
) -> list[Service]:
    """The services every Relay process with maintenance on runs (a worker, ``relay server``)."""
    return [
        LeaseReaper(storage, reaper_interval),
        JobScheduler(storage, scheduler_interval),
        JobPruner(storage, clock, retention),
        CronScheduler(storage, cron_interval),
    ]


__all__ = [
    "CronScheduler",
    "JobPruner",
    "JobScheduler",
    "LeaseReaper",
    "MaintenanceRunner",
    "Service",
    "default_services",
]
