"""job_prune, job_purge and job_promote_due (semantics.md rules 7, 8 and 14)."""

from __future__ import annotations

import pytest

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import LogAppend, LogParams, PruneParams, PurgeParams
from relay.types import JobState

from .helpers import T0, claim, get, insert_one, job_in_state, list_all, seconds


async def test_prune_removes_only_final_jobs_finished_before_the_cutoff(
    storage: Storage, clock: ManualClock
) -> None:
    old = [await job_in_state(storage, clock, state) for state in JobState.final()]
    for job in old:
        await storage.job_log_append([LogAppend(job.id, 1, "stdout", "old output")])
    clock.advance(100)
    at_cutoff = await job_in_state(storage, clock, JobState.COMPLETED)
    clock.advance(100)
    recent = await job_in_state(storage, clock, JobState.DEAD)
    living = [await job_in_state(storage, clock, state) for state in (JobState.RUNNING, JobState.FAILED)]
    living += [await job_in_state(storage, clock, state) for state in (JobState.PENDING, JobState.SCHEDULED)]
    clock.advance(10_000)  # every job is old now; only finished_at counts

    pruned = await storage.job_prune(PruneParams(finished_before=T0 + seconds(100)))
    assert pruned == 3
    remaining = {job.id for job in await list_all(storage)}
    assert remaining == {at_cutoff.id, recent.id, *(job.id for job in living)}
    for job in old:
        assert await storage.job_get(job.id) is None
        assert await storage.job_logs(LogParams(job.id)) == []


async def test_prune_by_states_and_limit(storage: Storage, clock: ManualClock) -> None:
    completed = [await job_in_state(storage, clock, JobState.COMPLETED) for _ in range(5)]
    dead = await job_in_state(storage, clock, JobState.DEAD)
    clock.advance(60)
    cutoff = clock.now()
    assert await storage.job_prune(PruneParams(cutoff, states=(JobState.DEAD,))) == 1
    assert await storage.job_get(dead.id) is None
    assert await storage.job_prune(PruneParams(cutoff, limit=2)) == 2
    assert await storage.job_prune(PruneParams(cutoff, limit=2)) == 2
    assert await storage.job_prune(PruneParams(cutoff, limit=2)) == 1
    assert await storage.job_prune(PruneParams(cutoff)) == 0
    assert [await storage.job_get(job.id) for job in completed] == [None] * 5


async def test_purge_empties_the_dead_letter_queue(storage: Storage, clock: ManualClock) -> None:
    dead = [await job_in_state(storage, clock, JobState.DEAD, queue=q) for q in ("a", "a", "b")]
    await storage.job_log_append([LogAppend(dead[0].id, 1, "stderr", "traceback")])
    survivors = [
        await job_in_state(storage, clock, s, queue="a") for s in (JobState.COMPLETED, JobState.PENDING)
    ]

    assert await storage.job_purge(PurgeParams(queue="b")) == 1
    assert await storage.job_get(dead[2].id) is None
    assert await storage.job_purge(PurgeParams()) == 2
    assert await storage.job_purge(PurgeParams()) == 0
    assert await storage.job_logs(LogParams(dead[0].id)) == []
    assert {job.id for job in await list_all(storage)} == {job.id for job in survivors}


async def test_purge_of_other_states(storage: Storage, clock: ManualClock) -> None:
    cancelled = await job_in_state(storage, clock, JobState.CANCELLED)
    failed = await job_in_state(storage, clock, JobState.FAILED)
    pending = await job_in_state(storage, clock, JobState.PENDING)
    assert await storage.job_purge(PurgeParams(states=(JobState.CANCELLED, JobState.FAILED))) == 2
    assert [job.id for job in await list_all(storage)] == [pending.id]
    assert await storage.job_get(cancelled.id) is None
    assert await storage.job_get(failed.id) is None


async def test_purge_refuses_running_jobs(storage: Storage, clock: ManualClock) -> None:
    running = await job_in_state(storage, clock, JobState.RUNNING)
    dead = await job_in_state(storage, clock, JobState.DEAD)
    with pytest.raises(ValueError):
        await storage.job_purge(PurgeParams(states=(JobState.DEAD, JobState.RUNNING)))
    assert await get(storage, running.id) == running
    assert await get(storage, dead.id) == dead


async def test_promote_due_moves_due_scheduled_and_failed_jobs_to_pending(
    storage: Storage, clock: ManualClock
) -> None:
    scheduled = await insert_one(storage, delay=60.0)
    later = await insert_one(storage, delay=600.0)
    failed = await job_in_state(storage, clock, JobState.FAILED)  # retry in an hour
    assert await storage.job_promote_due() == 0
    clock.advance(60)
    assert await storage.job_promote_due() == 1
    stored = await get(storage, scheduled.id)
    assert stored.state is JobState.PENDING
    assert stored.run_at == scheduled.run_at
    assert (await get(storage, later.id)).state is JobState.SCHEDULED
    clock.advance(3600)
    assert await storage.job_promote_due() == 2
    assert (await get(storage, failed.id)).state is JobState.PENDING
    assert (await get(storage, later.id)).state is JobState.PENDING
    assert await storage.job_promote_due() == 0
    assert [job.id for job in await claim(storage)] == [scheduled.id, later.id, failed.id]
