"""The throughput tracker: completions from the queues' counts, failures from the feed's job events,
in 10-second buckets over 15 minutes, moved by an injected clock."""

from __future__ import annotations

from relay.app import storage_from_url
from relay.clock import ManualClock
from relay.server.dashboard.throughput import BUCKETS, ThroughputTracker
from relay.server.feed import ChangeFeed
from relay.storage.base import Storage
from relay.storage.params import ClaimParams, FinishItem, PruneParams
from relay.types import AttemptError, JobKind, NewJob, Outcome


async def run(storage: Storage, queue: str, outcome: Outcome, n: int, clock: ManualClock) -> None:
    await storage.job_insert_many(
        [NewJob(JobKind.EXTERNAL, {}, queue=queue, max_retries=0) for _ in range(n)]
    )
    claimed = await storage.job_claim(ClaimParams([queue], "w", n, kinds=(JobKind.EXTERNAL,)))
    error = AttemptError(1, "Boom", "boom", clock.now()) if outcome is Outcome.FAILED else None
    items = [FinishItem(job.id, job.lease_token or "", outcome, error=error) for job in claimed]
    await storage.job_finish_many(items)


async def test_completions_and_failures_per_queue_per_bucket() -> None:
    clock = ManualClock()
    storage = storage_from_url("memory://", clock=clock)
    await storage.open()
    feed = ChangeFeed(storage, 1.0)
    tracker = ThroughputTracker(feed, clock.now)
    await run(storage, "emails", Outcome.COMPLETED, 3, clock)  # before the baseline: not counted
    await feed.poll()
    tracker.catch_up()
    await run(storage, "emails", Outcome.COMPLETED, 20, clock)
    await run(storage, "billing", Outcome.FAILED, 4, clock)
    await feed.poll()
    tracker.catch_up()
    clock.advance(10)
    await run(storage, "emails", Outcome.COMPLETED, 5, clock)
    await feed.poll()
    tracker.catch_up()
    assert tracker.snapshot()["queues"]["emails"]["completed"][-1] == 2.0  # the filling bucket: not yet
    clock.advance(10)

    snapshot = tracker.snapshot()
    emails, billing = snapshot["queues"]["emails"], snapshot["queues"]["billing"]
    assert len(emails["completed"]) == BUCKETS
    assert emails["completed"][-2:] == [2.0, 0.5]  # 20 then 5 completions, per second of a bucket
    assert billing["failed"][-2:] == [0.4, 0.0]
    assert sum(billing["completed"]) == 0
    assert tracker.snapshot(lambda name: name == "billing")["queues"].keys() == {"billing"}

    # Pruning lowers the completed count: that is no completion, and never a negative rate.
    clock.advance(10)
    await storage.job_prune(PruneParams(finished_before=clock.now()))
    await feed.poll()
    tracker.catch_up()
    assert min(tracker.snapshot()["queues"]["emails"]["completed"]) == 0

    # After 15 minutes, the buckets have left the window.
    clock.advance(15 * 60)
    tracker.catch_up()
    assert "emails" not in tracker.snapshot()["queues"]
    await storage.close()
