"""Workflow runs in process, on the embedded backends: the canvas, YAML workflows with parameters, a
step's inputs (task return values, a command's last stdout line), and failures."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import Relay, RunState, WorkflowFailedError, WorkflowRun, chain, chord, group, job_context
from relay.errors import InvalidWorkflowError, WorkflowNotFoundError
from relay.settings import Settings
from relay.storage.params import ListParams, WorkflowListParams

from .helpers import eventually, running


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Relay]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/relay.db"
    settings = Settings(database_url=url, poll_interval=0.05, workflows_dir=str(tmp_path / "workflows"))
    relay = Relay(settings=settings)
    yield relay
    relay.close()


async def test_a_chain_hands_each_result_to_the_next_step(app: Relay) -> None:
    @app.task
    def double(n: int) -> int:
        return n * 2

    @app.task
    def add_inputs() -> int:
        return sum(int(v) for v in job_context().inputs.values())

    handle = await app.start_async(chain(double.call(21), add_inputs.call()))
    assert [s.name for s in handle.run.steps] == ["1-double", "2-add_inputs"]
    async with running(app.worker(queues=("default",), concurrency=4)):
        run = await handle.wait_async(timeout=20)
    assert run.state is RunState.COMPLETED
    assert handle.results() == {"1-double": 42, "2-add_inputs": 42}


async def test_a_chord_waits_for_its_whole_group(app: Relay) -> None:
    @app.task
    def square(n: int) -> int:
        return n * n

    @app.task
    def total() -> int:
        return sum(job_context().inputs.values())

    handle = await app.start_async(chord(group(square.call(1), square.call(2), square.call(3)), total.call()))
    assert handle.run.step("4-total").depends_on == ("1-square", "2-square", "3-square")
    async with running(app.worker(queues=("default",), concurrency=4)):
        await handle.wait_async(timeout=20)
    assert handle.results()["4-total"] == 14


async def test_a_yaml_workflow_with_parameters(app: Relay, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "release.yaml").write_text(
        textwrap.dedent(
            """\
            name: release
            params:
              ref: main
              target: {required: true}
            steps:
              - name: version
                command: /bin/echo
                args: ['{"ref": "${{ params.ref }}"}']
              - name: build
                command: /bin/sh
                args: [-c, 'echo "$PARAM_TARGET $RELAY_INPUTS"']
            """
        )
    )
    with pytest.raises(InvalidWorkflowError, match="target"):
        await app.workflow_async("release")  # a required parameter missing: nothing started
    with pytest.raises(InvalidWorkflowError, match="no such parameter"):
        await app.workflow_async("release", target="x", nope="y")
    with pytest.raises(WorkflowNotFoundError):
        await app.workflow_async("absent")
    assert (await app.storage.job_list(ListParams())).jobs == []  # nothing half-created
    assert (await app.storage.workflow_list(WorkflowListParams())).runs == []
    handle = await app.workflow_async("release", target="linux", ref="v1.2 with spaces")
    assert handle.run.params == {"ref": "v1.2 with spaces", "target": "linux"}
    async with running(app.worker(concurrency=2)):
        await handle.wait_async(timeout=20)
    results = handle.results()
    assert results["version"]["output"] == {"ref": "v1.2 with spaces"}  # one argument, never split
    target, inputs = results["build"]["output"].split(" ", 1)
    assert target == "linux"
    assert json.loads(inputs)["version"]["output"] == {"ref": "v1.2 with spaces"}


async def test_a_failed_step_fails_the_run(app: Relay) -> None:
    @app.task(max_retries=0)
    def boom() -> None:
        raise RuntimeError("no")

    @app.task
    def never() -> None:
        raise AssertionError("a step after a failed one ran")

    handle = await app.start_async(chain(boom.call(), never.call()))
    async with running(app.worker(concurrency=2)):
        with pytest.raises(WorkflowFailedError, match="1-boom"):
            await handle.wait_async(timeout=20)
    assert handle.run.state is RunState.FAILED
    assert handle.run.step("2-never").state is not None
    assert handle.run.step("2-never").state.value == "cancelled"


async def test_a_schedule_triggers_a_workflow_once_per_tick(app: Relay, tmp_path: Path) -> None:
    from relay.runtime.maintenance.cron import CronScheduler
    from relay.runtime.schedules import save, schedule_from_document
    from relay.runtime.workflows import trigger

    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "nightly.yaml").write_text(
        "name: nightly\nparams:\n  level: quick\nsteps:\n  - command: /bin/echo ${{ params.level }}\n"
    )
    await app.open_async()
    definition = schedule_from_document(
        {"name": "nightly", "schedule": "every 1s", "workflow": "nightly", "params": {"level": "full"}}
    )
    await save(app.storage, [definition], app.clock.now())
    scheduler = CronScheduler(app.storage)
    await eventually(scheduler.run_once, what="a tick to come due and be enqueued")
    async with running(app.worker(concurrency=2)):

        async def a_completed_run() -> list[WorkflowRun]:
            page = await app.storage.workflow_list(WorkflowListParams(workflow="nightly"))
            return [r for r in page.runs if r.state is RunState.COMPLETED]

        [run] = await eventually(a_completed_run, what="the tick's run to complete")
    assert run.params == {"level": "full"}
    assert run.steps[0].result["output"] == "full"
    assert run.id.startswith("job-")  # the id of the tick's job: its retries find this run
    again = await trigger(app.storage, app.workflows()["nightly"], {"level": "full"}, run_id=run.id)
    assert again.created is False
