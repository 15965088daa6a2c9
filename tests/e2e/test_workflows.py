"""Workflows end to end: Orqestra's example triggered from the CLI against ``relay up``; and a 50-step
diamond run on SQLite, PostgreSQL and Redis while worker processes are SIGKILLed every second: every
step completes exactly once, and no step starts before each of its dependencies completed (every
execution of a step writes its start time in a file of its own)."""

from __future__ import annotations

import os
import random
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from relay.app import Relay
from relay.settings import Settings
from relay.storage.params import WorkflowStart
from relay.types import JobKind, JobState, NewJob, RunState, StepSpec, WorkflowRun
from servers.postgres import postgres_server
from servers.redis import redis_server, redis_test_url

from .procs import POLL_INTERVAL, Proc, wait_until
from .test_cli import FAST

if TYPE_CHECKING:
    from .conftest import RelayCLI

__all__ = ["postgres_server", "redis_server"]

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 150.0  # seconds for the whole run, kills included, on a loaded 2-core machine
WIDTH = 24  # two layers of 24 between a root and a sink: 50 steps
LEASE = 1.0  # a killed worker's step is back within lease + reaper interval (+ a leader term)
KILL_EVERY = 1.0  # seconds between two kills of a worker, while the run goes on


def test_orqestras_example_through_the_cli_against_relay_up(relay_cli: RelayCLI, tmp_path: Path) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "ci.yaml").write_text(
        textwrap.dedent(
            """\
            name: ci
            steps:
              - command: /bin/echo go test ./...
              - command: /bin/echo go build ./...
            """
        )
    )
    up = relay_cli.start("up", "--port", "0", env=FAST)
    listed = relay_cli.json("workflow", "list")["workflows"]
    assert [w["name"] for w in listed] == ["ci"]
    triggered = relay_cli("workflow", "trigger", "ci")
    assert triggered.returncode == 0, triggered.stderr
    run_id = triggered.stdout.strip()

    def completed() -> dict[str, Any] | None:
        status: dict[str, Any] = relay_cli.json("workflow", "status", run_id)
        return status if status["state"] == "completed" else None

    status = wait_until(completed, 60.0, "the ci run to complete", up.stderr)
    assert [s["name"] for s in status["steps"]] == ["step-1", "step-2"]
    assert [s["result"]["output"] for s in status["steps"]] == ["go test ./...", "go build ./..."]
    table = relay_cli("workflow", "status", run_id)
    assert "completed" in table.stdout
    assert relay_cli("logs", status["steps"][1]["job_id"]).stdout.strip() == "go build ./..."
    up.send_signal(signal.SIGTERM)
    assert up.wait() == 0


def test_a_bad_workflow_file_is_refused_with_its_place(relay_cli: RelayCLI, tmp_path: Path) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "bad.yaml").write_text(
        "name: bad\nsteps:\n  - name: a\n    command: echo\n    depends_on: [zz]\n"
    )
    result = relay_cli("workflow", "list")
    assert result.returncode == 1
    assert "bad.yaml:5: steps[0].depends_on: no step is named 'zz'" in result.stderr
    missing = relay_cli("workflow", "trigger", "nope", "--workflows", str(tmp_path / "elsewhere"))
    assert missing.returncode != 0


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.db'}"
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_server").new_database()
        return url
    return redis_test_url(SimpleNamespace(server=request.getfixturevalue("redis_server")))


class Fleet:
    def __init__(self, url: str, work: Path) -> None:
        self.url = url
        self.work = work
        self.procs: list[Proc] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        self.env = {
            **base,
            "RELAY_DATABASE_URL": url,
            "RELAY_POLL_INTERVAL": "0.1",
            "RELAY_REAPER_INTERVAL": "0.2",
            "RELAY_LEADER_TTL": "1",
            "RELAY_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        }
        self.relay = Relay(settings=Settings(database_url=url))
        self.started = 0

    def start_worker(self) -> Proc:
        self.started += 1
        argv = [sys.executable, "-m", "relay", "worker", "--queues", "dag", "--concurrency", "4"]
        proc = Proc(
            f"worker-{self.started}", argv, self.env, self.work, self.work / f"worker-{self.started}.log"
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        self.relay.close()

    def run(self, run_id: str) -> WorkflowRun:
        found = self.relay.call(self.relay.storage.workflow_get(run_id))
        assert found is not None
        return found


@pytest.fixture
def fleet(store_url: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(store_url, tmp_path)
    yield fleet
    fleet.close()


def diamond(starts: Path) -> list[StepSpec]:
    def step(name: str, *depends_on: str) -> StepSpec:
        command = f"date +%s.%N >> {starts}/{name}; sleep 0.3"
        payload = {
            "command": command,
            "args": [],
            "argv": ["/bin/sh", "-c", command],
            "shell": True,
            "env": {},
            "cwd": None,
        }
        return StepSpec(
            name, NewJob(JobKind.SHELL, payload, queue="dag", lease=LEASE, max_retries=20), depends_on
        )

    first = [step(f"x{n:02}", "root") for n in range(WIDTH)]
    second = [step(f"y{n:02}", f"x{n:02}", f"x{(n + 1) % WIDTH:02}") for n in range(WIDTH)]
    return [step("root"), *first, *second, step("sink", *(s.name for s in second))]


def test_a_50_step_diamond_survives_workers_killed_every_second(fleet: Fleet, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    starts.mkdir()
    steps = diamond(starts)
    assert len(steps) == 50
    started = fleet.relay.call(fleet.relay.storage.workflow_start(WorkflowStart("diamond", steps)))
    run_id = started.run.id
    workers = [fleet.start_worker() for _ in range(3)]
    rng = random.Random(13)
    kills = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    while (run := fleet.run(run_id)).state is RunState.RUNNING:
        assert time.monotonic() < deadline, f"the diamond run did not complete: {_progress(run)}"
        if not _ends_within(fleet, run_id, KILL_EVERY):  # a second went by: kill one, start another
            victim = rng.randrange(len(workers))
            workers[victim].kill()  # SIGKILL, with its shell children
            kills += 1
            workers[victim] = fleet.start_worker()
    assert kills > 0
    assert run.state is RunState.COMPLETED, [(s.name, s.state) for s in run.steps]
    by_name = {s.name: s for s in run.steps}
    assert all(s.state is JobState.COMPLETED for s in run.steps)  # each completed, once (one outcome)
    for s in run.steps:
        executions = (starts / s.name).read_text().split()
        # Each execution was an attempt of its own: a step never ran without a claim of its job (an
        # attempt killed before its command started left no line).
        assert 1 <= len(executions) <= s.attempt, f"{s.name}: {len(executions)} runs in {s.attempt} attempts"
        first_start = min(float(line) for line in executions)
        for parent in s.depends_on:
            parent_done = by_name[parent].finished_at
            assert parent_done is not None
            assert first_start >= parent_done.timestamp() - 0.001, f"{s.name} started before {parent} ended"


def _ends_within(fleet: Fleet, run_id: str, seconds: float) -> bool:
    """Whether the run ends within ``seconds`` (looked at every POLL_INTERVAL)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if fleet.run(run_id).state is not RunState.RUNNING:
            return True
        time.sleep(POLL_INTERVAL)
    return False


def _progress(run: WorkflowRun) -> str:
    return ", ".join(f"{s.name}={s.state}" for s in run.steps if s.state is not JobState.COMPLETED)
