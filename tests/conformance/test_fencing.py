"""Fencing by lease token (DESIGN.md guarantee 2; semantics.md rules 3, 4 and 6).

The scene of every test: worker A claims a job and stalls, the reaper returns the job to the queue, worker
B claims it. Everything A still sends with its stale token must change nothing.
"""

from __future__ import annotations

import pytest

from relay.clock import ManualClock
from relay.storage.base import Storage
from relay.storage.params import HeartbeatItem
from relay.types import Job, JobState, Outcome

from .helpers import (
    attempt_error,
    claim_this,
    complete,
    finish,
    get,
    heartbeat,
    insert_one,
    list_all,
    new_job,
)


async def stale_and_current(storage: Storage, clock: ManualClock, **overrides: object) -> tuple[Job, Job]:
    """(A's claim, B's claim) of the same job, A's lease having expired and been reaped in between."""
    job = await insert_one(storage, lease=10.0, **overrides)
    stale = await claim_this(storage, job, worker_id="worker-a")
    clock.advance(11)
    assert (await storage.job_reap_expired()).requeued == (job.id,)
    current = await claim_this(storage, job, worker_id="worker-b")
    assert current.lease_token != stale.lease_token
    return stale, current


async def test_stale_heartbeat_is_lost_and_changes_nothing(storage: Storage, clock: ManualClock) -> None:
    stale, current = await stale_and_current(storage, clock)
    clock.advance(2)
    before = await get(storage, current.id)
    result = await heartbeat(storage, stale, progress=0.99, checkpoint={"from": "a"})
    assert result.lost == {stale.id}
    assert result.extended == frozenset()
    assert await get(storage, current.id) == before


@pytest.mark.parametrize("outcome", list(Outcome), ids=[o.value for o in Outcome])
async def test_stale_finish_changes_nothing(storage: Storage, clock: ManualClock, outcome: Outcome) -> None:
    stale, current = await stale_and_current(storage, clock, max_retries=1)
    clock.advance(2)
    before = await get(storage, current.id)
    state = await finish(storage, stale, outcome, result={"from": "a"}, error=attempt_error(stale, clock))
    assert state is None
    assert await get(storage, current.id) == before


async def test_stale_finish_enqueues_no_chain(storage: Storage, clock: ManualClock) -> None:
    chains = {"on_success": new_job(queue="next"), "on_failure": new_job(queue="next")}
    stale, current = await stale_and_current(storage, clock, max_retries=1, **chains)
    assert await complete(storage, stale, "late") is None
    assert await finish(storage, stale, Outcome.FAILED, retryable=False) is None
    assert await list_all(storage, queues=["next"]) == []
    # The current holder still finishes normally, and only its outcome chains.
    assert await complete(storage, current, "on time") is JobState.COMPLETED
    [chained] = await list_all(storage, queues=["next"])
    assert chained.parent_id == current.id
    assert (await get(storage, current.id)).result == "on time"


async def test_current_holder_is_unaffected_by_the_stale_one(storage: Storage, clock: ManualClock) -> None:
    stale, current = await stale_and_current(storage, clock)
    await storage.job_heartbeat_many([HeartbeatItem(stale.id, stale.lease_token or "", progress=0.1)])
    result = await heartbeat(storage, current, progress=0.5)
    assert result.extended == {current.id}
    stored = await get(storage, current.id)
    assert stored.progress == 0.5
    assert stored.worker_id == "worker-b"
    assert stored.attempt == 2
