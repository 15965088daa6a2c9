"""Shell jobs run by a real ``relay worker``: a timeout kills the command's whole process group, and
``relay logs`` shows what the command wrote to stdout and to stderr."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.types import JobState

from .procs import STEP_TIMEOUT, Cluster, pid_alive, wait_until

pytestmark = pytest.mark.slow

KILL_DEADLINE = 5.0  # seconds within which a timed-out command's processes must be gone


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    world = Cluster(tmp_path)
    try:
        yield world
    finally:
        world.close()


def submit_shell(cluster: Cluster, command: str, *flags: str) -> str:
    """``relay submit --type=shell --payload=...`` of a command run by /bin/sh; returns the job's id."""
    payload = json.dumps({"command": command, "shell": True})
    return cluster.cli("submit", "--type=shell", f"--payload={payload}", *flags).stdout.strip()


# The command's background child, whose pid the command writes to PIDFILE before it blocks.
BACKGROUND = {
    "plain": "sleep 300 &",
    # Ignores SIGTERM (the disposition survives exec): only the final SIGKILL of the group stops it.
    "ignores-sigterm": "(trap '' TERM; exec sleep 300) &",
}


@pytest.mark.parametrize("background", list(BACKGROUND))
def test_timeout_kills_the_command_with_its_children(cluster: Cluster, background: str) -> None:
    pidfile = cluster.dir / "grandchild.pid"
    command = f"{BACKGROUND[background]} echo $! > {shlex.quote(str(pidfile))}; sleep 300"
    job_id = submit_shell(cluster, command, "--timeout", "1s", "--retries", "0")

    worker = cluster.start_worker("worker", "--burst")
    grandchild = int(
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), STEP_TIMEOUT, "the pid file")
    )
    # Should the runtime leave the command's processes behind, they still die when the test ends.
    cluster.stray_groups.append(os.getpgid(grandchild))
    assert worker.wait_exit() == 0, worker.log_tail()

    job = cluster.job(job_id)
    assert job.state is JobState.DEAD
    [error] = job.errors
    assert (error.attempt, error.type) == (1, "Timeout")
    assert error.message.startswith("timed out after 1")
    wait_until(lambda: not pid_alive(grandchild), KILL_DEADLINE, f"the background sleep {grandchild} to die")


def test_logs_show_a_shell_jobs_stdout_and_stderr(cluster: Cluster) -> None:
    job_id = submit_shell(cluster, "echo out one; echo err one >&2; echo out two; echo err two >&2")

    worker = cluster.start_worker("worker", "--burst")
    assert worker.wait_exit() == 0, worker.log_tail()
    assert cluster.job(job_id).state is JobState.COMPLETED

    shown = cluster.cli("logs", job_id)
    assert shown.stdout.splitlines() == ["out one", "out two"]
    assert shown.stderr.splitlines() == ["err one", "err two"]
    stored = [(line.stream, line.text) for line in cluster.logs(job_id)]
    assert sorted(stored) == [
        ("stderr", "err one"),
        ("stderr", "err two"),
        ("stdout", "out one"),
        ("stdout", "out two"),
    ]
