"""Schedules (relay.storage.base.Schedules): the definitions, and each tick enqueued at most once.

Storage never parses a spec: the tests pass ``next_run_at`` as the runtime would compute it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from relay.clock import ManualClock
from relay.errors import ScheduleNotFoundError
from relay.storage.base import Storage
from relay.storage.params import ScheduleFire, ScheduleParams
from relay.types import CatchUp, JobKind, NewJob, Schedule

from .helpers import T0, get, list_all, new_job, seconds
from .test_concurrency import run_concurrently

TEMPLATE = NewJob(
    kind=JobKind.TASK,
    payload={"task": "reports.send", "args": ["weekly"], "kwargs": {"to": "ops"}},
    queue="reports",
    priority=3,
    max_retries=1,
    tags=("cron",),
)


def params(name: str = "report", **fields: object) -> ScheduleParams:
    values: dict[str, object] = {
        "spec": "*/5 * * * *",
        "timezone": "Europe/Berlin",
        "job": TEMPLATE,
        "catch_up": CatchUp.ONCE,
        "next_run_at": T0 + timedelta(minutes=5),
    }
    values.update(fields)
    return ScheduleParams(name=name, **values)  # type: ignore[arg-type]


def tick_job(name: str, tick: datetime) -> NewJob:
    return new_job(payload={"command": "echo", "args": [tick.isoformat()]}, idempotency_key=f"{name}@{tick}")


async def fire(storage: Storage, schedule: Schedule, job: NewJob | None = None) -> bool:
    assert schedule.next_run_at is not None
    tick = schedule.next_run_at
    p = ScheduleFire(
        schedule.name, tick, tick, tick + timedelta(minutes=5), job or tick_job(schedule.name, tick)
    )
    return (await storage.schedule_fire(p)).fired


async def test_a_schedule_is_stored_as_given(storage: Storage, clock: ManualClock) -> None:
    stored = await storage.schedule_upsert(params())
    assert stored.name == "report"
    assert (stored.spec, stored.timezone, stored.catch_up) == ("*/5 * * * *", "Europe/Berlin", CatchUp.ONCE)
    assert stored.job == TEMPLATE
    assert stored.paused is False
    assert stored.next_run_at == T0 + timedelta(minutes=5)
    assert (stored.last_run_at, stored.last_job_id) == (None, None)
    assert stored.created_at == stored.updated_at == clock.now()
    assert await storage.schedule_get("report") == stored
    assert await storage.schedule_list() == [stored]
    assert await storage.schedule_get("other") is None


async def test_schedules_are_listed_by_name(storage: Storage) -> None:
    for name in ("zeta", "alpha", "mid"):
        await storage.schedule_upsert(params(name))
    assert [s.name for s in await storage.schedule_list()] == ["alpha", "mid", "zeta"]


async def test_redefining_keeps_the_next_run_unless_the_spec_changed(
    storage: Storage, clock: ManualClock
) -> None:
    await storage.schedule_upsert(params())
    clock.advance(60)
    later = T0 + timedelta(hours=1)
    same = await storage.schedule_upsert(params(next_run_at=later, job=new_job(), catch_up=CatchUp.SKIP))
    assert same.next_run_at == T0 + timedelta(minutes=5)  # a tick that may be due is not skipped
    assert same.job == new_job()
    assert same.catch_up is CatchUp.SKIP
    assert same.created_at == T0
    assert same.updated_at == clock.now()
    moved = await storage.schedule_upsert(params(spec="0 * * * *", next_run_at=later))
    assert moved.next_run_at == later
    rezoned = await storage.schedule_upsert(params(spec="0 * * * *", timezone="UTC", next_run_at=T0))
    assert rezoned.next_run_at == T0


async def test_redefining_keeps_paused_and_last_run(storage: Storage, clock: ManualClock) -> None:
    schedule = await storage.schedule_upsert(params(next_run_at=T0))
    assert await fire(storage, schedule)
    await storage.schedule_set_paused("report", True, None)
    again = await storage.schedule_upsert(params(spec="0 * * * *"))
    assert again.paused is True
    assert again.last_run_at == T0
    assert again.last_job_id is not None


async def test_remove(storage: Storage) -> None:
    await storage.schedule_upsert(params())
    assert await storage.schedule_remove("report") is True
    assert await storage.schedule_remove("report") is False
    assert await storage.schedule_list() == []


async def test_due_are_the_unpaused_schedules_whose_time_has_come(
    storage: Storage, clock: ManualClock
) -> None:
    await storage.schedule_upsert(params("now", next_run_at=T0))
    await storage.schedule_upsert(params("earlier", next_run_at=T0 - seconds(30)))
    await storage.schedule_upsert(params("later", next_run_at=T0 + seconds(1)))
    await storage.schedule_upsert(params("paused", next_run_at=T0 - seconds(60)))
    await storage.schedule_set_paused("paused", True, None)
    await storage.schedule_upsert(params("never", next_run_at=None))
    due = await storage.schedule_due()
    assert due.now == clock.now()
    assert [s.name for s in due.schedules] == ["earlier", "now"]
    clock.advance(1)
    assert [s.name for s in (await storage.schedule_due()).schedules] == ["earlier", "now", "later"]
    assert len((await storage.schedule_due(limit=1)).schedules) == 1


async def test_firing_a_tick_enqueues_its_job_once(storage: Storage) -> None:
    schedule = await storage.schedule_upsert(params(next_run_at=T0))
    job = tick_job("report", T0)
    result = await storage.schedule_fire(ScheduleFire("report", T0, T0, T0 + timedelta(minutes=5), job))
    assert result.fired
    assert result.job is not None
    assert result.job.payload == job.payload
    assert result.job.idempotency_key == job.idempotency_key
    again = await storage.schedule_fire(ScheduleFire("report", T0, T0, T0 + timedelta(minutes=5), job))
    assert not again.fired
    assert again.job is None
    after = await storage.schedule_get("report")
    assert after is not None
    assert after.next_run_at == T0 + timedelta(minutes=5)
    assert (after.last_run_at, after.last_job_id) == (T0, result.job.id)
    assert len(await list_all(storage)) == 1
    assert (await get(storage, result.job.id)).id == result.job.id
    assert schedule.last_run_at is None


async def test_a_skipped_tick_moves_on_without_a_job(storage: Storage) -> None:
    await storage.schedule_upsert(params(next_run_at=T0))
    result = await storage.schedule_fire(ScheduleFire("report", T0, T0, T0 + timedelta(minutes=5), None))
    assert result.fired
    assert result.job is None
    after = await storage.schedule_get("report")
    assert after is not None
    assert after.next_run_at == T0 + timedelta(minutes=5)
    assert after.last_run_at is None
    assert await list_all(storage) == []


async def test_a_tick_enqueued_before_is_not_enqueued_again(storage: Storage) -> None:
    """Removed and added again, a schedule meets its earlier tick's job by its idempotency key."""
    schedule = await storage.schedule_upsert(params(next_run_at=T0))
    assert await fire(storage, schedule)
    await storage.schedule_remove("report")
    again = await storage.schedule_upsert(params(next_run_at=T0))
    assert await fire(storage, again)
    assert len(await list_all(storage)) == 1


async def test_a_paused_or_missing_schedule_does_not_fire(storage: Storage) -> None:
    schedule = await storage.schedule_upsert(params(next_run_at=T0))
    await storage.schedule_set_paused("report", True, None)
    assert not await fire(storage, schedule)
    await storage.schedule_remove("report")
    assert not await fire(storage, schedule)
    assert await list_all(storage) == []


async def test_pause_and_resume(storage: Storage, clock: ManualClock) -> None:
    await storage.schedule_upsert(params(next_run_at=T0))
    paused = await storage.schedule_set_paused("report", True, None)
    assert paused.paused is True
    assert paused.next_run_at == T0
    assert (await storage.schedule_due()).schedules == []
    clock.advance(3600)
    resumed = await storage.schedule_set_paused("report", False, T0 + timedelta(hours=2))
    assert resumed.paused is False
    assert resumed.next_run_at == T0 + timedelta(hours=2)
    with pytest.raises(ScheduleNotFoundError):
        await storage.schedule_set_paused("nope", True, None)


async def test_nodes_firing_at_once_enqueue_each_tick_exactly_once(
    storage: Storage, shared_url: str | None
) -> None:
    """3 participants (processes where the backend allows) walk the same 20 ticks at once."""
    ticks = [T0 + timedelta(minutes=n) for n in range(20)]
    await storage.schedule_upsert(params("every-minute", spec="* * * * *", next_run_at=ticks[0]))
    results = await run_concurrently(
        storage, shared_url, "fire", 3, name="every-minute", ticks=[t.isoformat() for t in ticks]
    )
    fired = sorted(t for r in results for t in r["fired"])
    assert fired == sorted(t.isoformat() for t in ticks)  # each tick fired by exactly one participant
    jobs = await list_all(storage)
    assert sorted(job.payload["tick"] for job in jobs) == fired
