"""Schedules in memory: the definitions, and the compare-and-set that enqueues each tick once.

Runs with the backend's lock held, like every function of :mod:`.store`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from relay.errors import ScheduleNotFoundError
from relay.storage.memory.store import MemoryStore
from relay.storage.params import ScheduleFire, ScheduleFireResult, ScheduleParams
from relay.types import Schedule


def upsert(store: MemoryStore, p: ScheduleParams, now: datetime) -> Schedule:
    old = store.schedules.get(p.name)
    if old is None:
        schedule = Schedule(
            name=p.name,
            spec=p.spec,
            timezone=p.timezone,
            job=p.job,
            catch_up=p.catch_up,
            paused=False,
            next_run_at=p.next_run_at,
            last_run_at=None,
            last_job_id=None,
            created_at=now,
            updated_at=now,
        )
    else:
        moved = old.spec != p.spec or old.timezone != p.timezone
        schedule = replace(
            old,
            spec=p.spec,
            timezone=p.timezone,
            job=p.job,
            catch_up=p.catch_up,
            next_run_at=p.next_run_at if moved else old.next_run_at,
            updated_at=now,
        )
    store.schedules[p.name] = schedule
    return schedule


def set_paused(
    store: MemoryStore, name: str, paused: bool, next_run_at: datetime | None, now: datetime
) -> Schedule:
    old = store.schedules.get(name)
    if old is None:
        raise ScheduleNotFoundError(name)
    schedule = replace(old, paused=paused, updated_at=now)
    if not paused:
        schedule = replace(schedule, next_run_at=next_run_at)
    store.schedules[name] = schedule
    return schedule


def due(store: MemoryStore, now: datetime, limit: int) -> list[Schedule]:
    ready = [
        s
        for s in store.schedules.values()
        if not s.paused and s.next_run_at is not None and s.next_run_at <= now
    ]
    ready.sort(key=lambda s: (s.next_run_at, s.name))
    return ready[: max(0, limit)]


def fire(store: MemoryStore, p: ScheduleFire, now: datetime) -> ScheduleFireResult:
    old = store.schedules.get(p.name)
    if old is None or old.paused or old.next_run_at != p.expected_next:
        return ScheduleFireResult(fired=False)
    job = None
    if p.job is not None:
        [(record, _created)] = store.insert_batch([p.job], now)
        job = record.to_job()
    schedule = replace(old, next_run_at=p.next_run_at, updated_at=now)
    if job is not None:
        schedule = replace(schedule, last_run_at=p.tick, last_job_id=job.id)
    store.schedules[p.name] = schedule
    return ScheduleFireResult(fired=True, job=job)
