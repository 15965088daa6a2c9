"""Workflow runs (relay.storage.base.Workflows): a run and its step jobs made in one transaction, steps
released by their dependencies' success and cancelled by a failure that leaves them no way to run,
retries that bring a run back, cancellation, and listing. The rules: relay.storage.workflow_rules."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from relay.clock import ManualClock
from relay.errors import (
    DuplicateJobError,
    InvalidTransitionError,
    InvalidWorkflowError,
    WorkflowRunNotFoundError,
)
from relay.storage.base import Storage
from relay.storage.params import RequeueParams, WorkflowListParams, WorkflowStart
from relay.types import FailurePolicy, Job, JobState, Outcome, RunState, StepSpec, WorkflowRun

from .helpers import claim, complete, fail, finish, get, insert_one, list_all, new_job, seconds, yield_to_loop
from .test_concurrency import run_concurrently
from .test_notifier import PROMPT


def step(name: str, *depends_on: str, allow_failure: bool = False, **job: object) -> StepSpec:
    fields: dict[str, object] = {"queue": "wf", "payload": {"command": "echo", "args": [name]}}
    fields.update(job)
    return StepSpec(name, new_job(**fields), tuple(depends_on), allow_failure)


DIAMOND = (step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))


async def start(
    storage: Storage, *steps: StepSpec, policy: FailurePolicy = FailurePolicy.STOP, **fields: object
) -> WorkflowRun:
    started = await storage.workflow_start(WorkflowStart("ci", steps or DIAMOND, policy=policy, **fields))  # type: ignore[arg-type]
    assert started.created
    return started.run


async def run_now(storage: Storage, run: WorkflowRun) -> WorkflowRun:
    found = await storage.workflow_get(run.id)
    assert found is not None
    return found


async def claim_steps(storage: Storage, *names: str, worker_id: str = "worker-1") -> dict[str, Job]:
    """Claim from the run's queue; exactly the steps ``names`` must be claimable."""
    claimed = await claim(storage, queues=["wf"], limit=50, worker_id=worker_id)
    by_step = {job.workflow_step: job for job in claimed}
    assert sorted(by_step) == sorted(names), f"claimed {sorted(by_step)}, expected {sorted(names)}"
    return {name: job for name, job in by_step.items() if name is not None}


def states(run: WorkflowRun) -> dict[str, JobState | None]:
    return {s.name: s.state for s in run.steps}


def held(run: WorkflowRun) -> dict[str, bool]:
    return {s.name: s.held for s in run.steps}


async def test_a_run_and_its_jobs_start_together(storage: Storage, clock: ManualClock) -> None:
    run = await start(storage, *DIAMOND, params={"ref": "main"})
    assert run.workflow == "ci"
    assert run.params == {"ref": "main"}
    assert run.policy is FailurePolicy.STOP
    assert run.state is RunState.RUNNING
    assert run.created_at == clock.now()
    assert [s.name for s in run.steps] == ["a", "b", "c", "d"]
    assert [s.depends_on for s in run.steps] == [(), ("a",), ("a",), ("b", "c")]
    assert held(run) == {"a": False, "b": True, "c": True, "d": True}
    assert set(states(run).values()) == {JobState.PENDING}
    for s in run.steps:
        job = await get(storage, s.job_id)
        assert (job.workflow_run_id, job.workflow_step, job.held) == (run.id, s.name, s.held)
    assert await run_now(storage, run) == run
    await claim_steps(storage, "a")  # held steps are never claimed


async def test_a_diamond_fans_out_then_in(storage: Storage, clock: ManualClock) -> None:
    run = await start(storage)
    a = (await claim_steps(storage, "a"))["a"]
    await complete(storage, a, {"built": True})
    assert held(await run_now(storage, run)) == {"a": False, "b": False, "c": False, "d": True}
    both = await claim_steps(storage, "b", "c")
    await complete(storage, both["b"])
    await claim_steps(storage)  # d still waits for c
    await complete(storage, both["c"])
    d = (await claim_steps(storage, "d"))["d"]
    assert (await run_now(storage, run)).state is RunState.RUNNING
    clock.advance(5)
    await complete(storage, d)
    done = await run_now(storage, run)
    assert done.state is RunState.COMPLETED
    assert done.step("a").result == {"built": True}
    assert done.finished_at == clock.now()


async def test_a_failed_step_stops_the_run_by_default(storage: Storage, clock: ManualClock) -> None:
    run = await start(storage, step("a"), step("b", "a", max_retries=0), step("c", "a"), step("d", "b", "c"))
    await complete(storage, (await claim_steps(storage, "a"))["a"])
    b_and_c = await claim(storage, queues=["wf"], limit=1)  # only b: c stays pending
    assert [j.workflow_step for j in b_and_c] == ["b"]
    assert await fail(storage, b_and_c[0], clock) is JobState.DEAD
    after = await run_now(storage, run)
    assert states(after) == {
        "a": JobState.COMPLETED,
        "b": JobState.DEAD,
        "c": JobState.CANCELLED,
        "d": JobState.CANCELLED,
    }
    assert after.state is RunState.FAILED
    await claim_steps(storage)


async def test_a_step_running_when_another_fails_runs_to_its_end(
    storage: Storage, clock: ManualClock
) -> None:
    run = await start(storage, step("a"), step("b", "a", max_retries=0), step("c", "a"), step("d", "b", "c"))
    await complete(storage, (await claim_steps(storage, "a"))["a"])
    running = await claim_steps(storage, "b", "c")
    await fail(storage, running["b"], clock)
    middle = await run_now(storage, run)
    assert (middle.step("c").state, middle.step("d").state) == (JobState.RUNNING, JobState.CANCELLED)
    assert middle.state is RunState.RUNNING
    await complete(storage, running["c"])
    assert (await run_now(storage, run)).state is RunState.FAILED


async def test_continue_lets_the_other_branches_go_on(storage: Storage, clock: ManualClock) -> None:
    steps = (step("a"), step("b", "a", max_retries=0), step("c", "a"), step("d", "b"), step("e", "c"))
    run = await start(storage, *steps, policy=FailurePolicy.CONTINUE)
    await complete(storage, (await claim_steps(storage, "a"))["a"])
    running = await claim_steps(storage, "b", "c")
    await fail(storage, running["b"], clock)
    assert (await run_now(storage, run)).step("d").state is JobState.CANCELLED
    await complete(storage, running["c"])
    await complete(storage, (await claim_steps(storage, "e"))["e"])
    done = await run_now(storage, run)
    assert states(done) == {
        "a": JobState.COMPLETED,
        "b": JobState.DEAD,
        "c": JobState.COMPLETED,
        "d": JobState.CANCELLED,
        "e": JobState.COMPLETED,
    }
    assert done.state is RunState.FAILED


async def test_allow_failure_counts_as_success_for_the_steps_after(
    storage: Storage, clock: ManualClock
) -> None:
    run = await start(storage, step("lint", max_retries=0, allow_failure=True), step("build", "lint"))
    await fail(storage, (await claim_steps(storage, "lint"))["lint"], clock)
    await complete(storage, (await claim_steps(storage, "build"))["build"])
    assert (await run_now(storage, run)).state is RunState.COMPLETED


async def test_a_retry_that_is_due_keeps_the_steps_after_it_waiting(
    storage: Storage, clock: ManualClock
) -> None:
    run = await start(storage, step("a", max_retries=2), step("b", "a"))
    await fail(storage, (await claim_steps(storage, "a"))["a"], clock, retry_delay=10.0)
    assert held(await run_now(storage, run))["b"] is True
    clock.advance(10)
    await complete(storage, (await claim_steps(storage, "a"))["a"])
    await claim_steps(storage, "b")


async def test_retrying_a_failed_step_brings_back_what_its_failure_cancelled(
    storage: Storage, clock: ManualClock
) -> None:
    run = await start(storage, step("a"), step("b", "a", max_retries=0), step("c", "a"), step("d", "b", "c"))
    await complete(storage, (await claim_steps(storage, "a"))["a"])
    [b] = await claim(storage, queues=["wf"], limit=1)
    await fail(storage, b, clock)
    assert (await run_now(storage, run)).state is RunState.FAILED
    retried = await storage.workflow_retry_step(run.id, "b")
    assert retried.state is RunState.RUNNING
    assert states(retried) == {
        "a": JobState.COMPLETED,
        "b": JobState.PENDING,
        "c": JobState.PENDING,
        "d": JobState.PENDING,
    }
    assert held(retried) == {"a": False, "b": False, "c": False, "d": True}
    both = await claim_steps(storage, "b", "c")
    assert both["b"].attempt == 2  # the retry is one more attempt
    await complete(storage, both["b"])
    await complete(storage, both["c"])
    await complete(storage, (await claim_steps(storage, "d"))["d"])
    assert (await run_now(storage, run)).state is RunState.COMPLETED


async def test_requeueing_a_dead_step_from_the_dlq_is_a_retry(storage: Storage, clock: ManualClock) -> None:
    run = await start(storage, step("a", max_retries=0), step("b", "a"))
    await fail(storage, (await claim_steps(storage, "a"))["a"], clock)
    assert (await run_now(storage, run)).step("b").state is JobState.CANCELLED
    await storage.job_requeue(RequeueParams(job_id=run.step("a").job_id))
    back = await run_now(storage, run)
    assert (back.step("b").state, back.step("b").held) == (JobState.PENDING, True)
    await complete(storage, (await claim_steps(storage, "a"))["a"])
    await complete(storage, (await claim_steps(storage, "b"))["b"])
    assert (await run_now(storage, run)).state is RunState.COMPLETED


async def test_what_cannot_be_retried_is_refused(storage: Storage, clock: ManualClock) -> None:
    steps = (step("a"), step("b", "a", max_retries=0), step("c", "b"))
    run = await start(storage, *steps, policy=FailurePolicy.CONTINUE)
    await complete(storage, (await claim_steps(storage, "a"))["a"])
    await fail(storage, (await claim_steps(storage, "b"))["b"], clock)
    with pytest.raises(InvalidTransitionError):
        await storage.workflow_retry_step(run.id, "a")  # completed
    with pytest.raises(InvalidTransitionError):
        await storage.workflow_retry_step(run.id, "c")  # cancelled, but b failed: retry b
    with pytest.raises(InvalidWorkflowError):
        await storage.workflow_retry_step(run.id, "nope")
    with pytest.raises(WorkflowRunNotFoundError):
        await storage.workflow_retry_step("no-such-run", "a")
    assert states(await run_now(storage, run))["c"] is JobState.CANCELLED


async def test_cancelling_a_run(storage: Storage, clock: ManualClock) -> None:
    run = await start(storage, step("a"), step("b"), step("c", "a", "b"))
    running = (await claim(storage, queues=["wf"], limit=1))[0]
    cancelled = await storage.workflow_cancel(run.id)
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.cancelled is True
    waiting = {s.name: s.state for s in cancelled.steps if s.name != running.workflow_step}
    assert set(waiting.values()) == {JobState.CANCELLED}
    assert (await get(storage, running.id)).cancel_requested is True
    await finish(storage, running, Outcome.CANCELLED)
    assert (await run_now(storage, run)).state is RunState.CANCELLED
    await claim_steps(storage)
    with pytest.raises(WorkflowRunNotFoundError):
        await storage.workflow_cancel("no-such-run")


async def test_cancelling_a_steps_job_fails_the_run(storage: Storage) -> None:
    run = await start(storage, step("a"), step("b"), step("c", "a"))
    await storage.job_cancel(run.step("a").job_id)
    after = await run_now(storage, run)
    assert states(after) == {"a": JobState.CANCELLED, "b": JobState.CANCELLED, "c": JobState.CANCELLED}
    assert after.state is RunState.FAILED


async def test_a_step_whose_worker_died_runs_again_and_the_run_completes_once(
    storage: Storage, clock: ManualClock
) -> None:
    run = await start(storage, step("a", lease=10.0), step("b", "a"))
    (await claim_steps(storage, "a", worker_id="lost"))["a"]
    clock.advance(11)
    reaped = await storage.job_reap_expired()
    assert reaped.requeued == (run.step("a").job_id,)
    again = (await claim_steps(storage, "a", worker_id="alive"))["a"]
    assert again.attempt == 2
    await complete(storage, again)
    await complete(storage, (await claim_steps(storage, "b"))["b"])
    done = await run_now(storage, run)
    assert done.state is RunState.COMPLETED
    assert [s.attempt for s in done.steps] == [2, 1]


async def test_a_run_id_starts_one_run(storage: Storage) -> None:
    first = await start(storage, step("a"), step("b", "a"), run_id="tick-2026-01-01T00:00")
    again = await storage.workflow_start(WorkflowStart("ci", (step("a"), step("b", "a")), run_id=first.id))
    assert again.created is False
    assert again.run == first
    assert len(await list_all(storage, queues=["wf"])) == 2


async def test_a_start_is_all_or_nothing(storage: Storage) -> None:
    await insert_one(storage, id="taken")
    with pytest.raises(DuplicateJobError):
        await storage.workflow_start(WorkflowStart("ci", (step("a"), step("b", "a", id="taken"))))
    assert await list_all(storage, queues=["wf"]) == []
    assert (await storage.workflow_list(WorkflowListParams())).runs == []


async def test_runs_are_listed_newest_first_by_workflow_and_page(
    storage: Storage, clock: ManualClock
) -> None:
    ids = []
    for n in range(5):
        clock.advance(1)
        name = "ci" if n % 2 == 0 else "deploy"
        started = await storage.workflow_start(WorkflowStart(name, (step(f"s{n}"),)))
        ids.append(started.run.id)
    everything = await storage.workflow_list(WorkflowListParams(limit=10))
    assert [r.id for r in everything.runs] == ids[::-1]
    assert everything.next_cursor is None
    first = await storage.workflow_list(WorkflowListParams(workflow="ci", limit=2))
    assert [r.id for r in first.runs] == [ids[4], ids[2]]
    assert first.next_cursor is not None
    await storage.workflow_start(WorkflowStart("ci", (step("late"),)))  # a new run does not shift pages
    rest = await storage.workflow_list(WorkflowListParams(workflow="ci", limit=2, cursor=first.next_cursor))
    assert [r.id for r in rest.runs] == [ids[0]]
    assert rest.next_cursor is None
    assert await storage.workflow_get("no-such-run") is None


async def test_releasing_a_step_wakes_its_queue(storage: Storage) -> None:
    await start(storage, step("a"), step("b", "a"))
    [a] = await claim(storage, queues=["wf"])
    waiter = asyncio.create_task(storage.wait_for_jobs(["wf"], timeout=30.0))
    await yield_to_loop()
    assert not waiter.done()
    await complete(storage, a)
    assert await asyncio.wait_for(waiter, timeout=PROMPT) is True


async def test_delayed_steps_start_when_released_and_due(storage: Storage, clock: ManualClock) -> None:
    run = await start(storage, step("a"), step("b", "a", delay=60.0))
    await complete(storage, (await claim_steps(storage, "a"))["a"])
    await claim_steps(storage)  # released, but due in a minute
    clock.advance(60)
    await claim_steps(storage, "b")
    assert (await run_now(storage, run)).step("b").state is JobState.RUNNING


def diamond_of(width: int) -> Sequence[StepSpec]:
    """A 50-step diamond: a root, ``width`` parallel steps in each of two layers, a sink."""
    first = [step(f"x{n}", "root") for n in range(width)]
    second = [step(f"y{n}", f"x{n}", f"x{(n + 1) % width}") for n in range(width)]
    return [step("root"), *first, *second, step("sink", *(s.name for s in second))]


async def test_workers_racing_through_a_run_start_each_step_after_its_dependencies(
    storage: Storage, shared_url: str | None, clock: ManualClock
) -> None:
    """4 participants (processes where the backend allows) claim and complete until the run is done:
    every step runs once, and none starts before each of its dependencies finished."""
    clock.set(datetime.now(UTC) - seconds(60))  # the children claim by the system clock
    steps = diamond_of(24)
    run = await start(storage, *steps)
    results = await run_concurrently(storage, shared_url, "drain_run", 4, queue="wf", run_id=run.id)
    claimed = [job_id for r in results for job_id in r["claimed"]]
    assert sorted(claimed) == sorted(s.job_id for s in run.steps)  # each step once
    done = await run_now(storage, run)
    assert done.state is RunState.COMPLETED
    by_name = {s.name: s for s in done.steps}
    for s in done.steps:
        assert s.attempt == 1
        for parent in s.depends_on:
            assert by_name[parent].finished_at is not None
            assert s.started_at is not None
            assert by_name[parent].finished_at <= s.started_at
