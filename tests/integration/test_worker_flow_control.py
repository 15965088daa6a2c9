"""The worker under flow control, in process on the embedded backends: it sleeps until the next token
(never busy-polls), a freed slot wakes it, and burst mode waits for rate-limited jobs."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import Relay
from relay.app import worker_config
from relay.runtime.worker import Worker
from relay.settings import Settings
from relay.storage.base import Storage
from relay.storage.params import ClaimedJobs, ClaimParams, ListParams
from relay.types import JobState, QueueLimits, RateLimit

from .helpers import eventually, running

# Longer than any test here may take: a worker that waited for its poll instead of the token or the
# wake-up would miss the deadline.
SLOW_POLL = 30.0


class CountedClaims:
    """A real backend, with the claims it answered counted (everything else passes through)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.claims = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    async def job_claim(self, p: ClaimParams) -> ClaimedJobs:
        self.claims += 1
        return await self._storage.job_claim(p)


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Relay]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/relay.db"
    relay = Relay(settings=Settings(database_url=url, poll_interval=SLOW_POLL, cancel_grace=0.3))
    yield relay
    relay.close()


async def stored_jobs(app: Relay, queue: str) -> list[Any]:
    return (await app.storage.job_list(ListParams(queues=[queue], limit=1000))).jobs


async def test_a_rate_limited_worker_sleeps_until_each_token(app: Relay) -> None:
    await app.open_async()
    await app.storage.queue_limits_set("rated", QueueLimits(rate=RateLimit(rate=20.0, burst=1)))
    for n in range(8):
        await app.enqueue_shell_async(["true"], queue="rated", metadata={"n": n})
    counted = CountedClaims(app.storage)
    worker = app.worker(queues=("rated",), concurrency=10, maintenance=False)
    worker.storage = counted  # type: ignore[assignment]
    async with running(worker):

        async def all_done() -> bool:
            return all(j.state is JobState.COMPLETED for j in await stored_jobs(app, "rated"))

        await eventually(all_done, timeout=20, what="8 rate-limited jobs to complete")
    starts = sorted(j.started_at for j in await stored_jobs(app, "rated"))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 1 / 20 - 0.005  # one token every 50 ms, by the storage's clock
    assert counted.claims <= 3 * 8  # a claim per token (and a few wake-ups), no busy polling


async def test_burst_mode_waits_for_rate_limited_jobs(app: Relay) -> None:
    await app.open_async()
    await app.storage.queue_limits_set("rated", QueueLimits(rate=RateLimit(rate=25.0, burst=1)))
    for _ in range(5):
        await app.enqueue_shell_async(["true"], queue="rated")
    worker = app.worker(queues=("rated",), burst=True, maintenance=False)
    await worker.run()  # returns when no job is due and none is held back by a token
    states = Counter(j.state for j in await stored_jobs(app, "rated"))
    assert states == {JobState.COMPLETED: 5}


async def test_a_freed_slot_wakes_the_worker(app: Relay) -> None:
    await app.open_async()
    await app.storage.queue_limits_set("capped", QueueLimits(concurrency=2))
    release = threading.Event()

    @app.task(queue="capped")
    def wait_for_release() -> None:
        release.wait(10)

    for _ in range(6):
        await wait_for_release.enqueue_async()
    async with running(app.worker(queues=("capped",), concurrency=10, maintenance=False)):

        async def two_running() -> bool:
            states = Counter(j.state for j in await stored_jobs(app, "capped"))
            return states[JobState.RUNNING] == 2 and states[JobState.PENDING] == 4

        await eventually(two_running, what="the limit's two slots to fill")
        release.set()

        async def all_done() -> bool:
            return all(j.state is JobState.COMPLETED for j in await stored_jobs(app, "capped"))

        # Each finish frees a slot and wakes the worker: no poll (30 s) is waited for.
        await eventually(all_done, timeout=20, what="the other four jobs to run as slots free")


class CountedWaits(Worker):
    """A worker that counts how often its claim loop goes to sleep."""

    waits = 0

    async def _wait_for_work(self) -> None:
        self.waits += 1
        await super()._wait_for_work()


async def test_a_full_worker_does_not_wake_for_tokens_it_cannot_use(app: Relay) -> None:
    """The claim that filled the last slots passed over a job for its key's token (retry_after 1 ms);
    with no slot free, that token is no reason to wake: only a job that ends is."""
    await app.open_async()
    await app.storage.queue_limits_set("keyed", QueueLimits(key_rate=RateLimit(rate=1000.0, burst=1)))
    release = threading.Event()

    @app.task(queue="keyed")
    def wait_for_release() -> None:
        release.wait(10)

    for key in ("a", "a", "b", "c"):
        await wait_for_release.options(rate_key=key).enqueue_async()
    config = worker_config(app.settings, queues=("keyed",), concurrency=2, maintenance=False)
    worker = CountedWaits(app.storage, app.registry, config, app.clock)
    async with running(worker):

        async def two_running() -> bool:
            states = Counter(j.state for j in await stored_jobs(app, "keyed"))
            return states[JobState.RUNNING] == 2

        await eventually(two_running, what="both slots to fill")
        before = worker.waits
        for _ in range(50):  # time passes while the slots stay full: a spinning loop would count it
            await stored_jobs(app, "keyed")
        assert worker.waits - before <= 2
        release.set()
