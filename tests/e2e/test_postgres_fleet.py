"""A fleet on PostgreSQL, end to end: real ``relay worker`` processes sharing one database, one of them
SIGKILLed mid-run, and the database itself crashed and restarted mid-run.

Every job is a shell command that appends its name to ``runs`` when it starts and to ``done`` when it
ends. What must hold (DESIGN.md section 1):

- every job is completed, and its outcome is recorded exactly once (one ``completed`` event in all the
  workers' logs, attempt counted at each claim);
- a job runs more than once only if it was in flight on a worker that died, or while the database was
  away (its lease could not be renewed);
- no job acknowledged at enqueue and no outcome acknowledged before the crash is lost, and the workers
  carry on by themselves once PostgreSQL is back.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.app import Relay
from relay.settings import Settings
from relay.storage.params import ListParams
from relay.types import Job, JobState
from servers.postgres import PostgresCluster, postgres_server, postgres_url, start_cluster

from .procs import Proc, pid_alive, wait_until

__all__ = ["postgres_server", "postgres_url"]

pytestmark = pytest.mark.slow

JOBS = 60
LEASE = 1.0  # seconds: a dead worker's jobs are back within lease + reaper interval (+ a leader term)
RUN_TIMEOUT = 90.0  # seconds for the whole batch to complete on a loaded 2-core machine
STEP = 20.0  # seconds for one step: a worker starts, claims, notices


class Fleet:
    """One test's workers on ``url``, its job files, and a Relay to enqueue with and read state."""

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
            "RELAY_SCHEDULER_INTERVAL": "0.2",
            "RELAY_LEADER_TTL": "1",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_LEVEL": "debug",  # the claim events too: in_flight() needs them
            "PYTHONUNBUFFERED": "1",
        }
        self.relay = Relay(settings=Settings(database_url=url))

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        self.relay.close()

    def start_worker(self, name: str, concurrency: int = 4) -> Proc:
        argv = [sys.executable, "-m", "relay", "worker", "--concurrency", str(concurrency)]
        proc = Proc(name, argv, self.env, self.work, self.work / f"{name}.log")
        self.procs.append(proc)
        return proc

    def enqueue(self, names: list[str], seconds: float = 0.2) -> list[str]:
        """Shell jobs that record their start and end (each takes ``seconds``)."""
        docs = [
            {
                "type": "shell",
                "id": name,
                "payload": {
                    "command": "/bin/sh",
                    "args": ["-c", f"echo {name} >> runs; sleep {seconds}; echo {name} >> done"],
                    "cwd": str(self.work),
                },
                "lease": f"{LEASE}s",
                "max_retries": 10,
            }
            for name in names
        ]
        return [handle.id for handle in self.relay.enqueue_many(docs)]

    def jobs(self) -> dict[str, Job]:
        page = self.relay.call(self.relay.storage.job_list(ListParams(limit=10_000)))
        return {job.id: job for job in page.jobs}

    def completed(self) -> set[str]:
        return {job_id for job_id, job in self.jobs().items() if job.state is JobState.COMPLETED}

    def lines(self, name: str) -> Counter[str]:
        path = self.work / name
        return Counter(path.read_text().split()) if path.exists() else Counter()

    def completions(self) -> Counter[str]:
        """How many times each job's completion was recorded, by every worker's log together."""
        return Counter(e["job_id"] for proc in self.procs for e in proc.events("completed"))

    def detail(self) -> str:
        states = Counter(job.state.value for job in self.jobs().values())
        return f"states: {dict(states)}\n" + "\n".join(f"--- {p.name}\n{p.log_tail(30)}" for p in self.procs)


@pytest.fixture
def fleet(postgres_url: str, tmp_path: Path) -> Iterator[Fleet]:
    world = Fleet(postgres_url, tmp_path)
    try:
        yield world
    finally:
        world.close()


def in_flight(proc: Proc) -> set[str]:
    """Jobs ``proc`` claimed and never recorded an outcome for."""
    claimed = {e["job_id"] for e in proc.events() if e["event"] in ("claimed", "retried")}
    ended = {e["job_id"] for e in proc.events() if e["event"] in ("completed", "failed", "released")}
    return claimed - ended


def test_two_workers_one_sigkilled_every_job_completes_exactly_once(fleet: Fleet) -> None:
    names = [f"job-{n:03d}" for n in range(JOBS)]
    a, b = fleet.start_worker("a"), fleet.start_worker("b")
    a.wait_ready()
    b.wait_ready()
    fleet.enqueue(names)

    # Kill a while it is busy: some of its jobs are running, some finished.
    wait_until(
        lambda: len(a.events("completed")) >= 3 and in_flight(a), STEP, "a to be mid-run", fleet.detail
    )
    a.signal(signal.SIGKILL)
    a.popen.wait(STEP)
    interrupted = in_flight(a)

    wait_until(lambda: fleet.completed() == set(names), RUN_TIMEOUT, "every job to complete", fleet.detail)
    completions = fleet.completions()
    assert all(n == 1 for n in completions.values()), completions
    # a may have recorded a completion and died before logging it: only a's in-flight jobs may lack one.
    assert set(names) - set(completions) <= interrupted
    runs = fleet.lines("runs")
    assert set(runs) == set(names)
    assert {name for name, n in runs.items() if n > 1} <= interrupted, "ran twice without a death"
    # Each claim is an attempt. Only a's in-flight jobs lost one (and a's log may have missed a claim
    # it made just before dying): they were reaped (LeaseExpired) and claimed again, by b.
    first_claims_by_b = {e["job_id"] for e in b.events("claimed")}
    for name, job in fleet.jobs().items():
        assert job.attempt in (1, 2), f"{name}: attempt {job.attempt}"
        assert runs[name] <= job.attempt, f"{name}: ran {runs[name]} times in {job.attempt} attempts"
        assert [e.type for e in job.errors] == ["LeaseExpired"] * (job.attempt - 1), job.errors
        if job.attempt == 2:
            assert name not in first_claims_by_b, f"{name}: b's attempt was lost, yet b did not die"
    assert pid_alive(b.pid), "the surviving worker died"


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of its own, with PostgreSQL's durable defaults (fsync on): it will be crashed.

    Its directory is not under tmp_path: pytest makes that mode 0700, which the cluster's user (not
    root) could not traverse."""
    directory = Path(tempfile.mkdtemp(prefix="relay-pg-crash-"))
    try:
        cluster = start_cluster(directory, fast=False)
    except RuntimeError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip(f"cannot start a PostgreSQL cluster: {exc}")
    try:
        yield cluster
    finally:
        if cluster.is_running():
            cluster.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def test_postgres_crash_and_restart_mid_run_loses_nothing_and_workers_carry_on(
    own_cluster: PostgresCluster, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fleet = Fleet(own_cluster.url, work)
    try:
        first = [f"before-{n:03d}" for n in range(JOBS)]
        fleet.enqueue(first)  # acknowledged: committed before the crash
        a, b = fleet.start_worker("a"), fleet.start_worker("b")
        wait_until(lambda: len(fleet.completed()) >= 10, STEP, "some jobs to complete", fleet.detail)

        done_before = fleet.completed()  # acknowledged outcomes
        own_cluster.stop("immediate")  # a crash: no checkpoint, the restart replays the WAL
        own_cluster.start()

        second = [f"after-{n:03d}" for n in range(20)]
        wait_until(lambda: _try_enqueue(fleet, second), STEP, "the database to take jobs again")
        everything = set(first) | set(second)
        wait_until(
            lambda: fleet.completed() == everything, RUN_TIMEOUT, "every job to complete", fleet.detail
        )

        assert done_before <= fleet.completed()
        assert pid_alive(a.pid), f"worker a died:\n{a.log_tail()}"
        assert pid_alive(b.pid), f"worker b died:\n{b.log_tail()}"
        # One accepted outcome per job. A completion committed just before the crash, whose reply the
        # crash swallowed, is retried by its worker after the restart and refused (the lease is spent):
        # that worker logs lease_lost, and the job stays completed once.
        completions = fleet.completions()
        assert all(n == 1 for n in completions.values()), completions
        unacknowledged = everything - set(completions)
        lost = {
            e["job_id"] for p in fleet.procs for e in p.events("lease_lost") if e["outcome"] == "completed"
        }
        assert unacknowledged <= lost, f"completed without any worker recording it: {unacknowledged - lost}"
        assert set(fleet.lines("done")) == everything
    finally:
        fleet.close()


def _try_enqueue(fleet: Fleet, names: list[str]) -> bool:
    try:
        fleet.enqueue(names)
    except Exception:  # the database is still coming back: the producer would retry too
        return False
    return True
