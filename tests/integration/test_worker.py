"""The worker runtime, in process, on every embedded backend: tasks, retries, timeouts, cancellation,
heartbeats, checkpoints, slots and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from relay import Relay, job_context
from relay.app import worker_config
from relay.runtime.worker import Worker
from relay.types import Job, JobState

from .helpers import eventually, running

STEP = 0.01  # seconds between a test job's steps: part of what the job does, not a wait


async def final(app: Relay, job_id: str, timeout: float = 15.0) -> Job:
    async def check() -> Job | None:
        job = await app.get_job_async(job_id)
        return job if job.is_final else None

    result: Job = await eventually(check, timeout, f"job {job_id} to finish")
    return result


async def test_sync_and_async_tasks_complete_with_their_results(app: Relay) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def greet(name: str) -> dict[str, str]:
        return {"hello": name}

    first = await add.enqueue_async(2, 3)
    second = await greet.enqueue_async(name="ada")
    async with running(app.worker(concurrency=2)):
        assert (await final(app, first.id)).result == 5
        done = await final(app, second.id)
    assert done.state is JobState.COMPLETED
    assert done.result == {"hello": "ada"}
    assert done.attempt == 1


async def test_failures_retry_with_backoff_then_go_dead_and_run_on_failure(app: Relay) -> None:
    calls: list[int] = []

    @app.task(max_retries=2, backoff="fixed", backoff_base="10ms")
    def flaky() -> None:
        calls.append(job_context().attempt)
        raise ValueError("boom")

    handle = await flaky.options(on_failure=app.shell_job(["echo", "cleanup"])).enqueue_async()
    async with running(app.worker()):
        job = await final(app, handle.id)
        assert job.state is JobState.DEAD
        children = await eventually(lambda: _children(app, job.id), what="the on_failure job")
        chained = await final(app, children[0].id)
    assert calls == [1, 2, 3]
    assert [e.attempt for e in job.errors] == [1, 2, 3]
    assert all(e.type == "ValueError" and e.message == "boom" for e in job.errors)
    assert "ValueError: boom" in (job.errors[0].traceback or "")
    assert chained.state is JobState.COMPLETED


async def _children(app: Relay, parent_id: str) -> list[Job]:
    from relay.storage.params import ListParams

    page = await app.storage.job_list(ListParams(limit=100))
    return [j for j in page.jobs if j.parent_id == parent_id]


async def test_an_unknown_task_goes_to_the_dlq_without_retries(app: Relay) -> None:
    from relay.sdk.options import JobOptions

    unknown = JobOptions(max_retries=5).build("task", {"task": "nowhere.to_be_found"})
    [result] = await app.insert_async([unknown])
    async with running(app.worker()):
        done = await final(app, result.job.id)
    assert done.state is JobState.DEAD
    assert done.attempt == 1
    assert done.errors[0].type == "TaskNotFoundError"


async def test_timeouts_stop_async_and_cpu_bound_sync_jobs(app: Relay) -> None:
    @app.task(timeout="200ms", max_retries=0)
    async def forever() -> None:
        await asyncio.Event().wait()

    @app.task(timeout="200ms", max_retries=0)
    def spin() -> None:
        while True:
            pass

    a = await forever.enqueue_async()
    s = await spin.enqueue_async()
    async with running(app.worker(concurrency=2)):
        for handle in (a, s):
            job = await final(app, handle.id)
            assert job.state is JobState.DEAD
            assert job.errors[-1].type == "Timeout"


async def test_a_job_that_ignores_its_timeout_is_abandoned_and_the_worker_goes_on(app: Relay) -> None:
    release = asyncio.Event()  # set at the end, so the stubborn code finally returns
    ended = asyncio.Event()

    @app.task(timeout="100ms", max_retries=0)
    async def stubborn() -> None:
        try:
            while not release.is_set():
                try:
                    await asyncio.sleep(STEP)
                except asyncio.CancelledError:
                    continue  # swallows every cancellation: only abandoning it ends the attempt
        finally:
            ended.set()

    @app.task
    def after() -> str:
        return "ran"

    handle = await stubborn.enqueue_async()
    async with running(app.worker(concurrency=1, cancel_grace=0.1)):
        job = await final(app, handle.id, timeout=30)
        # The slot is free again: the next job runs although the stubborn code still spins.
        next_job = await final(app, (await after.enqueue_async()).id)
        assert not ended.is_set()
        release.set()
        await asyncio.wait_for(ended.wait(), timeout=10)
    assert (job.state, job.errors[-1].type) == (JobState.DEAD, "Timeout")
    assert (next_job.state, next_job.result) == (JobState.COMPLETED, "ran")


async def test_a_job_calling_sys_exit_fails_without_stopping_the_worker(app: Relay) -> None:
    @app.task(max_retries=0)
    async def quits() -> None:
        raise SystemExit(3)

    @app.task
    async def after() -> str:
        return "ran"

    first = await quits.enqueue_async()
    async with running(app.worker(concurrency=1)):
        job = await final(app, first.id)
        next_job = await final(app, (await after.enqueue_async()).id)
    assert (job.state, job.errors[-1].type) == (JobState.DEAD, "SystemExit")
    assert next_job.result == "ran"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


async def test_an_exception_that_cannot_say_its_message_still_fails_its_job(app: Relay) -> None:
    @app.task(max_retries=0)
    async def broken() -> None:
        raise Unprintable()

    @app.task
    async def after() -> str:
        return "ran"

    first = await broken.enqueue_async()
    async with running(app.worker(concurrency=1)):
        job = await final(app, first.id)
        next_job = await final(app, (await after.enqueue_async()).id)  # the slot was given back
    assert (job.state, job.errors[-1].type) == (JobState.DEAD, "Unprintable")
    assert "could not be read" in job.errors[-1].message
    assert next_job.result == "ran"


async def test_cancelling_a_running_job_asks_first_then_stops_it(app: Relay) -> None:
    @app.task
    def polite() -> None:
        while True:  # a long job that checks for cancellation between steps
            job_context().raise_if_cancelled()
            time.sleep(STEP)  # the job's own pace between its steps

    @app.task
    async def stubborn() -> None:
        await asyncio.Event().wait()  # ignores the request: stopped after the cancel grace

    p = await polite.enqueue_async()
    s = await stubborn.enqueue_async()
    async with running(app.worker(concurrency=2)):
        await eventually(lambda: _all_running(app, [p.id, s.id]), what="both jobs running")
        await app.storage.job_cancel(p.id)
        await app.storage.job_cancel(s.id)
        polite_job = await final(app, p.id)
        stubborn_job = await final(app, s.id)
    assert polite_job.state is JobState.CANCELLED
    assert stubborn_job.state is JobState.CANCELLED
    assert stubborn_job.errors[-1].type == "Cancelled"


async def _all_running(app: Relay, ids: list[str]) -> bool:
    states = [(await app.get_job_async(i)).state for i in ids]
    return all(state is JobState.RUNNING for state in states)


async def test_heartbeats_keep_a_cpu_bound_job_alive_for_three_leases(app: Relay) -> None:
    lease = 1.0

    @app.task(lease="1s", max_retries=0)
    def crunch() -> int:
        # Pure-Python work holding the GIL for three leases: only a heartbeat that this code cannot
        # starve keeps the job from being reaped by the maintenance leader running alongside.
        end = time.monotonic() + 3 * lease + 0.2
        n = 0
        while time.monotonic() < end:
            n += 1
        return n

    handle = await crunch.enqueue_async()
    worker = app.worker(reaper_interval=0.1, leader_ttl=1.0)
    async with running(worker):
        job = await final(app, handle.id, timeout=20)
    assert job.state is JobState.COMPLETED
    assert job.attempt == 1
    assert job.errors == ()
    assert worker.maintenance is not None
    assert worker.maintenance.health["reaper"].passes > 3


async def test_progress_and_checkpoints_are_saved_and_handed_to_the_next_attempt(app: Relay) -> None:
    may_fail = threading.Event()
    seen: list[object] = []

    @app.task(max_retries=1, backoff="fixed", backoff_base="10ms", lease="1s")
    def resumable() -> object:
        ctx = job_context()
        seen.append(ctx.last_checkpoint)
        if ctx.attempt == 1:
            ctx.progress(0.4)
            ctx.checkpoint({"offset": 1200})
            may_fail.wait(10)
            raise RuntimeError("interrupted")
        return ctx.last_checkpoint

    handle = await resumable.enqueue_async()
    async with running(app.worker()):

        async def saved() -> bool:
            job = await app.get_job_async(handle.id)
            return job.checkpoint == {"offset": 1200} and job.progress == 0.4

        await eventually(saved, what="the checkpoint saved by a heartbeat")
        may_fail.set()
        job = await final(app, handle.id)
    assert job.state is JobState.COMPLETED
    assert seen == [None, {"offset": 1200}]
    assert job.result == {"offset": 1200}


async def test_a_worker_claims_only_as_many_jobs_as_it_has_free_slots(app: Relay) -> None:
    gate = asyncio.Event()

    @app.task
    async def wait_for_gate() -> None:
        await gate.wait()

    handles = [await wait_for_gate.enqueue_async() for _ in range(6)]
    async with running(app.worker(concurrency=2)):

        async def states() -> dict[JobState, int]:
            counts: dict[JobState, int] = {}
            for h in handles:
                state = (await app.get_job_async(h.id)).state
                counts[state] = counts.get(state, 0) + 1
            return counts

        await eventually(lambda: _count_is(states, JobState.RUNNING, 2), what="two running jobs")
        assert (await states()).get(JobState.PENDING) == 4
        gate.set()
        for h in handles:
            assert (await final(app, h.id)).state is JobState.COMPLETED


async def _count_is(states, state: JobState, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await states()).get(state, 0) == n


async def test_graceful_shutdown_lets_running_jobs_finish(app: Relay) -> None:
    gate = threading.Event()

    @app.task
    def slow() -> str:
        gate.wait(10)
        return "finished"

    handle = await slow.enqueue_async()
    worker = app.worker(grace_period=10)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: _all_running(app, [handle.id]), what="the job running")
    worker.request_stop()
    gate.set()
    await asyncio.wait_for(task, 15)
    job = await app.get_job_async(handle.id)
    assert job.state is JobState.COMPLETED
    assert job.result == "finished"


async def test_shutdown_past_the_grace_period_releases_jobs_to_pending(app: Relay) -> None:
    @app.task
    async def endless() -> None:
        await asyncio.Event().wait()

    handle = await endless.enqueue_async()
    worker = app.worker(grace_period=0.2)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: _all_running(app, [handle.id]), what="the job running")
    worker.request_stop()
    await asyncio.wait_for(task, 15)
    job = await app.get_job_async(handle.id)
    assert job.state is JobState.PENDING
    assert job.attempt == 0  # the attempt was given back
    assert job.lease_token is None


async def test_a_second_stop_request_releases_jobs_at_once(app: Relay) -> None:
    @app.task
    async def endless() -> None:
        await asyncio.Event().wait()

    handle = await endless.enqueue_async()
    worker = app.worker(grace_period=3600)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: _all_running(app, [handle.id]), what="the job running")
    worker.request_stop()
    worker.request_stop()
    await asyncio.wait_for(task, 15)
    assert (await app.get_job_async(handle.id)).state is JobState.PENDING


async def test_shell_jobs_store_their_output_and_fail_on_a_non_zero_exit(app: Relay) -> None:
    from relay.storage.params import LogParams

    ok = await app.enqueue_shell_async(["/bin/sh", "-c", "echo out; echo err >&2"])
    bad = await app.enqueue_shell_async("/bin/sh -c 'echo broken >&2; exit 3'", max_retries=0)
    async with running(app.worker(concurrency=2)):
        done = await final(app, ok.id)
        dead = await final(app, bad.id)
    assert done.state is JobState.COMPLETED
    lines = await app.storage.job_logs(LogParams(ok.id))
    assert {(line.stream, line.text) for line in lines} == {("stdout", "out"), ("stderr", "err")}
    assert dead.state is JobState.DEAD
    assert dead.errors[0].type == "ExitCode"
    assert dead.errors[0].exit_code == 3
    assert "broken" in (dead.errors[0].stderr_tail or "")


async def test_the_pruner_deletes_every_finished_job_past_the_retention_in_batches(app: Relay) -> None:
    from datetime import timedelta

    from relay.clock import ManualClock
    from relay.runtime.maintenance import JobPruner

    handles = [await app.enqueue_shell_async(["true"]) for _ in range(25)]
    assert await app.drain_async() == 25
    later = ManualClock(app.clock.now() + timedelta(days=8))
    pruner = JobPruner(app.storage, later, retention=7 * 86400)
    pruner.batch = 10  # three batches: 10, 10, then 5 (short: the pass ends)
    assert await pruner.run_once() == 25
    for h in handles:
        assert await app.storage.job_get(h.id) is None


class SlowRecording:
    """The app's real storage, with outcomes held at the door until ``door`` is set: recording is
    slow (a far database, a storage outage) while everything else works."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.door = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    async def job_finish_many(self, items: Any) -> Any:
        await self.door.wait()
        return await self._storage.job_finish_many(items)


async def test_a_slot_frees_when_its_code_ends_and_unrecorded_outcomes_are_bounded(app: Relay) -> None:
    started: list[int] = []

    @app.task
    async def quick(n: int) -> int:
        started.append(n)
        return n

    handles = [await quick.enqueue_async(n) for n in range(6)]
    storage = SlowRecording(app.storage)
    worker = Worker(storage, app.registry, worker_config(app.settings, concurrency=2))  # type: ignore[arg-type]
    async with running(worker):
        # Two slots: two jobs run, their outcomes wait, and two more run meanwhile; then the
        # outcomes waiting (4) exceed one set of slots and the worker takes no more.
        await eventually(lambda: _async(len(started) == 4), what="four jobs started")
        assert worker._free_slots() == 0
        assert (await app.get_job_async(handles[5].id)).state is JobState.PENDING
        storage.door.set()
        jobs = [await final(app, h.id) for h in handles]
    assert sorted(started) == list(range(6))
    assert all(j.state is JobState.COMPLETED for j in jobs)


async def _async(value: bool) -> bool:
    return value
