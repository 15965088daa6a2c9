"""The cron scheduler (relay.runtime.maintenance.cron) on the embedded backends, with an injected clock:
which tick it fires, once per tick across nodes, catch-up, DST, pause and resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay import Relay
from relay.app import storage_from_url
from relay.clock import ManualClock
from relay.runtime.maintenance.cron import CronScheduler
from relay.runtime.schedules import define, save, set_paused
from relay.settings import Settings
from relay.storage.base import Storage
from relay.storage.params import ListParams
from relay.types import Job, JobKind, NewJob

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ECHO = NewJob(JobKind.SHELL, {"command": "echo", "args": ["tick"], "argv": ["echo", "tick"]}, queue="cron")


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/relay.db"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def storage(url: str, clock: ManualClock) -> AsyncIterator[Storage]:
    store = storage_from_url(url, clock=clock)
    await store.open()
    yield store
    await store.close()


async def jobs(storage: Storage) -> list[Job]:
    return list(reversed((await storage.job_list(ListParams(limit=1000))).jobs))


async def define_now(storage: Storage, clock: ManualClock, spec: str, **kwargs: object) -> None:
    definition = define("tick", spec, ECHO, **kwargs)  # type: ignore[arg-type]
    await save(storage, [definition], clock.now())


async def test_a_tick_on_time_is_enqueued_once(storage: Storage, clock: ManualClock) -> None:
    await define_now(storage, clock, "* * * * *")
    scheduler = CronScheduler(storage)
    assert await scheduler.run_once() == 0  # the first tick is a minute away
    clock.advance(60)
    assert await scheduler.run_once() == 1
    assert await scheduler.run_once() == 0
    [job] = await jobs(storage)
    assert job.queue == "cron"
    assert job.payload["argv"] == ["echo", "tick"]
    assert job.metadata == {"schedule": "tick", "tick": "2026-01-01T00:01:00+00:00"}
    schedule = await storage.schedule_get("tick")
    assert schedule is not None
    assert (schedule.last_run_at, schedule.last_job_id) == (T0 + timedelta(minutes=1), job.id)
    assert schedule.next_run_at == T0 + timedelta(minutes=2)


async def test_three_nodes_enqueue_each_of_twenty_ticks_once(url: str, clock: ManualClock) -> None:
    nodes = [storage_from_url(url, clock=clock) for _ in range(3)] if url != "memory://" else []
    first = nodes[0] if nodes else storage_from_url(url, clock=clock)
    nodes = nodes or [first, first, first]  # memory cannot be opened twice: three schedulers share it
    for node in {id(n): n for n in nodes}.values():
        await node.open()
    try:
        await define_now(first, clock, "* * * * *")
        schedulers = [CronScheduler(node) for node in nodes]
        for _ in range(20):
            clock.advance(60)
            fired = await asyncio.gather(*(s.run_once() for s in schedulers))
            assert sum(fired) == 1
        ticks = [job.metadata["tick"] for job in await jobs(first)]
        assert ticks == [(T0 + timedelta(minutes=n)).isoformat() for n in range(1, 21)]
    finally:
        for node in {id(n): n for n in nodes}.values():
            await node.close()


async def test_missed_ticks_once_enqueues_one_job_for_the_latest(
    storage: Storage, clock: ManualClock
) -> None:
    await define_now(storage, clock, "*/10 * * * *", catch_up="once")
    clock.advance(3 * 3600 + 5 * 60)  # everything was down for three hours
    assert await CronScheduler(storage).run_once() == 1
    [job] = await jobs(storage)
    assert job.metadata["tick"] == (T0 + timedelta(hours=3)).isoformat()
    schedule = await storage.schedule_get("tick")
    assert schedule is not None
    assert schedule.next_run_at == T0 + timedelta(hours=3, minutes=10)


async def test_missed_ticks_skip_enqueues_nothing(storage: Storage, clock: ManualClock) -> None:
    await define_now(storage, clock, "*/10 * * * *", catch_up="skip")
    clock.advance(3 * 3600 + 5 * 60)
    assert await CronScheduler(storage).run_once() == 0
    assert await jobs(storage) == []
    schedule = await storage.schedule_get("tick")
    assert schedule is not None
    assert schedule.next_run_at == T0 + timedelta(hours=3, minutes=10)
    clock.advance(5 * 60)  # the next tick comes on time: it runs
    assert await CronScheduler(storage).run_once() == 1


async def test_a_tick_a_little_late_is_on_time_even_with_skip(storage: Storage, clock: ManualClock) -> None:
    await define_now(storage, clock, "*/10 * * * *", catch_up="skip")
    clock.advance(10 * 60 + 30)  # 30 s late: within the grace
    assert await CronScheduler(storage, grace=60).run_once() == 1


async def test_a_daily_time_fires_once_per_day_across_a_dst_change(
    storage: Storage, clock: ManualClock
) -> None:
    clock.set(datetime(2026, 10, 23, 12, 0, tzinfo=UTC))
    await define_now(storage, clock, "30 2 * * *", timezone="Europe/Berlin")
    scheduler = CronScheduler(storage)
    for _ in range(4 * 24 * 4):  # four days, every 15 minutes
        clock.advance(15 * 60)
        await scheduler.run_once()
    ticks = [job.metadata["tick"] for job in await jobs(storage)]
    assert ticks == [
        "2026-10-24T00:30:00+00:00",  # 02:30 CEST
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST, the night the clocks go back: once
        "2026-10-26T01:30:00+00:00",  # 02:30 CET
        "2026-10-27T01:30:00+00:00",
    ]


async def test_a_paused_schedule_fires_nothing_and_resumes_from_the_next_tick(
    storage: Storage, clock: ManualClock
) -> None:
    await define_now(storage, clock, "* * * * *")
    scheduler = CronScheduler(storage)
    await set_paused(storage, "tick", True, clock.now())
    clock.advance(600)
    assert await scheduler.run_once() == 0
    resumed = await set_paused(storage, "tick", False, clock.now())
    assert resumed.next_run_at == T0 + timedelta(minutes=11)  # the ten missed while paused are gone
    assert await scheduler.run_once() == 0
    clock.advance(60)
    assert await scheduler.run_once() == 1


async def test_a_worker_defines_its_relays_schedules_at_start(url: str, tmp_path: Path) -> None:
    relay = Relay(settings=Settings(database_url=url, poll_interval=0.05))
    try:

        @relay.task(queue="reports")
        def build(kind: str) -> str:
            return kind

        relay.schedule("0 3 * * *", build, "nightly", timezone="Europe/Berlin")
        relay.schedule("@hourly", ["/bin/echo", "hourly"], name="echo", queue="ops")
        with pytest.raises(Exception, match="two schedules named"):
            relay.schedule("@daily", build, "again")
        await relay.worker(burst=True, maintenance=False).run()
        stored = {s.name: s for s in await relay.storage.schedule_list()}
        assert sorted(stored) == sorted([build.name, "echo"])
        nightly = stored[build.name]
        assert (nightly.spec, nightly.timezone) == ("0 3 * * *", "Europe/Berlin")
        assert nightly.job.payload == {"task": build.name, "args": ["nightly"], "kwargs": {}}
        assert nightly.job.queue == "reports"
        assert stored["echo"].job.queue == "ops"
        assert stored["echo"].job.payload["argv"] == ["/bin/echo", "hourly"]
    finally:
        relay.close()


async def test_resuming_a_schedule_that_runs_keeps_its_due_tick(storage: Storage, clock: ManualClock) -> None:
    await define_now(storage, clock, "* * * * *")
    clock.advance(90)  # the first tick (00:01) is due and not fired yet
    resumed = await set_paused(storage, "tick", False, clock.now())
    assert resumed.next_run_at == T0 + timedelta(minutes=1)
    assert await CronScheduler(storage).run_once() == 1


async def test_a_fractional_interval_fires_each_tick_once(storage: Storage, clock: ManualClock) -> None:
    await define_now(storage, clock, "every 1.1s")
    scheduler = CronScheduler(storage)
    for _ in range(30):
        clock.advance(1.1)
        assert await scheduler.run_once() == 1  # not the same tick again, and again
        assert await scheduler.run_once() == 0
    assert len(await jobs(storage)) == 30
