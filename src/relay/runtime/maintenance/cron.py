"""Enqueues each schedule's ticks: exactly one job per tick, whatever the number of nodes running this.

Every worker with maintenance on runs it, not only the leader: a tick is a compare-and-set in storage
(``schedule_fire`` succeeds only while the schedule's ``next_run_at`` is still the one read), and the
tick's job carries the (schedule, tick) idempotency key, so the nodes that lose the race enqueue
nothing. Running everywhere means no tick waits for a leader election after the leader died.

Which tick to fire is decided by the storage's clock (``ScheduleDue.now``), never a node's own:

- the latest tick at or before now is *on time* if it is at most ``grace`` old: it is enqueued (the
  ticks between the schedule's next run and it, if any, were missed and are covered by it);
- otherwise every due tick was missed (nothing ran for a while): ``catch_up=once`` enqueues one job for
  the latest of them, ``catch_up=skip`` none;
- either way the schedule moves on to the first tick after that one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from relay.jobs.cron import parse_spec
from relay.runtime.schedules import tick_job
from relay.storage.base import Schedules
from relay.storage.params import ScheduleFire
from relay.types import CatchUp, Schedule

log = logging.getLogger("relay.cron")

DEFAULT_GRACE = 60.0  # seconds a tick may be late and still count as on time


class CronScheduler:
    name = "cron"
    leader_only = False

    def __init__(self, storage: Schedules, interval: float = 1.0, grace: float = DEFAULT_GRACE) -> None:
        self._storage = storage
        self.interval = interval
        self._grace = timedelta(seconds=grace)

    async def run_once(self) -> int:
        """Fire what is due; returns how many jobs this node enqueued."""
        due = await self._storage.schedule_due()
        enqueued = 0
        for schedule in due.schedules:
            try:
                enqueued += await self._fire(schedule, due.now)
            except Exception:  # one broken schedule must not hold the others back
                log.exception("schedule %s could not fire", schedule.name)
        return enqueued

    async def _fire(self, schedule: Schedule, now: datetime) -> int:
        assert schedule.next_run_at is not None  # schedule_due returns only schedules with a next run
        spec = parse_spec(schedule.spec, schedule.timezone)
        tick = max(spec.latest_at_or_before(now) or schedule.next_run_at, schedule.next_run_at)
        on_time = now - tick <= self._grace
        job = tick_job(schedule, tick) if on_time or schedule.catch_up is CatchUp.ONCE else None
        fire = ScheduleFire(schedule.name, schedule.next_run_at, tick, spec.next_after(tick), job)
        result = await self._storage.schedule_fire(fire)
        if not result.fired:
            return 0  # another node fired it first
        event = "enqueued" if job is not None else "skipped"
        log.info(
            "schedule %s: tick %s %s%s",
            schedule.name,
            tick.isoformat(),
            event,
            "" if on_time else " (late)",
            extra={
                "relay": {"event": f"schedule_{event}", "schedule": schedule.name, "tick": tick.isoformat()}
            },
        )
        return 1 if result.job is not None else 0
