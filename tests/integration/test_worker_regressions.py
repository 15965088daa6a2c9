"""Regressions found in review: each test is a scenario that once broke the worker."""

from __future__ import annotations

import threading

from relay import Relay, job_context
from relay.types import JobState

from .helpers import eventually, running
from .test_worker import final


async def test_a_short_lease_job_beside_a_long_lease_job_is_beaten_in_time(app: Relay) -> None:
    # The heartbeat thread once slept a third of the longest-running job's lease (10 s) and missed the
    # lease of a 1-second job claimed meanwhile: the reaper took it from under its worker.
    long_started, release = threading.Event(), threading.Event()

    @app.task(lease="30s")
    def long() -> None:
        long_started.set()
        release.wait(30)

    @app.task(lease="1s", max_retries=0)
    def short() -> str:
        # Runs for over three of its leases while the long job still runs.
        for _ in range(35):
            if release.wait(0.1):
                break
        return "done"

    slow = await long.enqueue_async()
    async with running(app.worker(concurrency=2, reaper_interval=0.1, leader_ttl=1.0)):
        await eventually(lambda: _true(long_started.is_set()), what="the long job running")
        quick = await short.enqueue_async()
        job = await final(app, quick.id, timeout=20)
        release.set()
        await final(app, slow.id)
    assert job.state is JobState.COMPLETED
    assert job.attempt == 1
    assert job.errors == ()


async def _true(value: bool) -> bool:
    return value


async def test_a_checkpoint_that_is_not_json_fails_its_own_job_not_every_heartbeat(app: Relay) -> None:
    @app.task(max_retries=0)
    def bad() -> None:
        job_context().checkpoint({"n": 2**70})  # beyond 64 bits: not JSON that storage can keep

    done = threading.Event()

    @app.task(lease="1s", max_retries=0)
    def innocent() -> str:
        done.wait(3.5)  # over three leases: only heartbeats keep it
        return "ok"

    b = await bad.enqueue_async()
    i = await innocent.enqueue_async()
    async with running(app.worker(concurrency=2, reaper_interval=0.1, leader_ttl=1.0)):
        bad_job = await final(app, b.id)
        good_job = await final(app, i.id, timeout=20)
    assert bad_job.state is JobState.DEAD
    assert bad_job.errors[0].type == "TypeError"
    assert good_job.state is JobState.COMPLETED
    assert good_job.attempt == 1


async def test_an_error_message_with_lone_surrogates_is_recorded(app: Relay) -> None:
    @app.task(max_retries=0)
    def broken() -> None:
        raise ValueError("bad \udcff byte")

    @app.task
    def fine() -> str:
        return "fine"

    b = await broken.enqueue_async()
    async with running(app.worker()):
        job = await final(app, b.id)
        after = await fine.enqueue_async()  # the worker still records outcomes afterwards
        assert (await final(app, after.id)).state is JobState.COMPLETED
    assert job.state is JobState.DEAD
    assert job.errors[0].message == "bad \\udcff byte"


async def test_a_job_that_fails_once_asked_to_cancel_ends_cancelled_not_retried(app: Relay) -> None:
    @app.task(max_retries=5, backoff="fixed", backoff_base="10ms", lease="1s")
    def fails_when_asked() -> None:
        while not job_context().cancel_requested:
            job_context().progress(0.5)
            threading.Event().wait(0.01)
        raise RuntimeError("interrupted halfway")  # a failure on the way out, not a clean cancel

    handle = await fails_when_asked.enqueue_async()
    async with running(app.worker()):

        async def is_running() -> bool:
            return (await app.get_job_async(handle.id)).state is JobState.RUNNING

        await eventually(is_running, what="the job running")
        await app.storage.job_cancel(handle.id)
        job = await final(app, handle.id)
    assert job.state is JobState.CANCELLED
    assert job.attempt == 1
