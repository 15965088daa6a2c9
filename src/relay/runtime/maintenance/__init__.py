"""Maintenance services (reaper, scheduler, pruner), each in its own file, run by the elected leader."""

from __future__ import annotations

from relay.runtime.maintenance.leader import MaintenanceRunner
from relay.runtime.maintenance.pruner import JobPruner
from relay.runtime.maintenance.reaper import LeaseReaper
from relay.runtime.maintenance.scheduler import JobScheduler
from relay.runtime.maintenance.service import Service

__all__ = ["JobPruner", "JobScheduler", "LeaseReaper", "MaintenanceRunner", "Service"]
