"""DESIGN.md guarantees 1 to 3 on Redis with AOF, end to end: the Redis server is restarted (SIGTERM,
or killed with SIGKILL) in the middle of a run while a real worker process (``python -m relay worker``)
runs jobs and a producer keeps enqueueing. Every job whose enqueue was acknowledged completes, with
exactly one recorded outcome, and the worker reconnects by itself (it is never restarted). When the
worker dies too, the jobs it was running are returned by the next worker's reaper.

The server runs with ``appendonly yes`` and ``appendfsync always``, in this test's directory, and comes
back on the same port and directory, so it reloads its AOF.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.app import Relay
from relay.settings import Settings
from relay.storage.params import ListParams
from relay.types import JobState
from servers.redis import RedisProcess, start_redis

from .procs import Proc, wait_until

pytestmark = pytest.mark.slow

JOBS = 60
BEFORE_RESTART = 8  # jobs completed before the server goes down: the run is under way
JOB_SECONDS = "0.15"  # each job sleeps this long, so that some are always running
TIMEOUT = 60.0  # seconds for any awaited condition


@pytest.fixture
def redis_server_always(tmp_path: Path) -> Iterator[RedisProcess]:
    directory = tmp_path / "redis"
    directory.mkdir()
    try:
        server = start_redis(directory, appendfsync="always")
    except RuntimeError as exc:
        pytest.skip(f"no Redis server for the test: {exc}")
    try:
        yield server
    finally:
        server.stop()


def worker_env(url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return {
        **base,
        "RELAY_DATABASE_URL": url,
        "RELAY_POLL_INTERVAL": "0.05",
        "RELAY_REAPER_INTERVAL": "0.2",
        "RELAY_SCHEDULER_INTERVAL": "0.2",
        "RELAY_LEADER_TTL": "1",
        "RELAY_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }


class Producer(threading.Thread):
    """Enqueues JOBS shell jobs one at a time; records the ids whose enqueue returned (acknowledged)."""

    def __init__(self, relay: Relay) -> None:
        super().__init__(name="producer")
        self.relay = relay
        self.acknowledged: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        document = {"type": "shell", "payload": {"command": "sleep", "args": [JOB_SECONDS]}, "lease": "1s"}
        for _ in range(JOBS):
            try:
                self.acknowledged.append(str(self.relay.enqueue(document).id))
            except Exception as exc:  # not acknowledged: reported by the test
                self.errors.append(exc)


def wait_all_completed(relay: Relay, producer: Producer, worker: Proc) -> None:
    """Every enqueue was acknowledged (none failed), and every acknowledged job completes."""
    assert producer.errors == []
    assert len(producer.acknowledged) == JOBS
    wait_until(
        lambda: count_completed(relay, producer.acknowledged) == JOBS,
        TIMEOUT,
        "every acknowledged job to complete",
        worker.log_tail,
    )


def count_completed(relay: Relay, ids: list[str]) -> int:
    return sum(relay.get_job(job_id).state is JobState.COMPLETED for job_id in list(ids))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_redis_restart_mid_run_loses_no_acknowledged_job(
    tmp_path: Path, redis_server_always: RedisProcess, sig: int
) -> None:
    server = redis_server_always
    url = f"{server.url}?prefix=e2e&retry_deadline=30"
    argv = [sys.executable, "-m", "relay", "worker", "--concurrency", "4"]
    worker = Proc("worker", argv, worker_env(url), tmp_path, tmp_path / "worker.log")
    relay = Relay(settings=Settings(database_url=url))
    relay.open()
    producer = Producer(relay)
    try:
        worker.wait_ready()
        producer.start()
        wait_until(
            lambda: count_completed(relay, producer.acknowledged) >= BEFORE_RESTART,
            TIMEOUT,
            "the first jobs to complete",
            worker.log_tail,
        )
        server.stop(sig)
        worker.wait_for_message("unreachable", TIMEOUT)  # the worker noticed the outage
        server.start()
        producer.join(TIMEOUT)
        assert not producer.is_alive(), "the producer did not finish"
        wait_all_completed(relay, producer, worker)
        assert worker.returncode is None, f"the worker died:\n{worker.log_tail()}"
        check_outcomes(relay, worker, producer.acknowledged)
    finally:
        producer.join(TIMEOUT)
        worker.kill()
        relay.close()


def check_outcomes(relay: Relay, worker: Proc, ids: list[str]) -> None:
    """One recorded outcome per job; a job that ran again was returned by the reaper, and says so."""
    completed = Counter(e["job_id"] for e in worker.events("completed"))
    assert all(completed[job_id] <= 1 for job_id in ids), "an outcome was recorded twice"
    for job_id in ids:
        job = relay.get_job(job_id)
        assert job.state is JobState.COMPLETED
        if job.attempt > 1:  # its claim or its lease was lost in the outage
            assert "LeaseExpired" in {e.type for e in job.errors}, job


def test_jobs_in_flight_when_the_worker_and_redis_crash_are_recovered_by_the_reaper(
    tmp_path: Path, redis_server_always: RedisProcess
) -> None:
    """The machine is lost: the worker is killed with jobs running, then Redis is killed too. After
    Redis comes back, a new worker's reaper returns the dead worker's jobs (their leases expired by the
    storage's clock) and they complete; every acknowledged job completes exactly once in outcome."""
    server = redis_server_always
    url = f"{server.url}?prefix=e2e&retry_deadline=30"
    argv = [sys.executable, "-m", "relay", "worker", "--concurrency", "4"]
    first = Proc("first", argv, worker_env(url), tmp_path, tmp_path / "first.log")
    relay = Relay(settings=Settings(database_url=url))
    relay.open()
    producer = Producer(relay)
    second: Proc | None = None
    try:
        first.wait_ready()
        producer.start()
        wait_until(lambda: running_jobs(relay), TIMEOUT, "jobs running in the first worker", first.log_tail)
        first.kill()
        in_flight = running_jobs(relay)
        server.stop(signal.SIGKILL)
        server.start()
        second = Proc("second", argv, worker_env(url), tmp_path, tmp_path / "second.log")
        producer.join(TIMEOUT)
        wait_all_completed(relay, producer, second)
        check_outcomes(relay, second, producer.acknowledged)
        for job_id in in_flight:
            job = relay.get_job(job_id)
            assert job.attempt == 2
            assert [e.type for e in job.errors] == ["LeaseExpired"]
    finally:
        producer.join(TIMEOUT)
        for proc in (first, second):
            if proc is not None:
                proc.kill()
        relay.close()


def running_jobs(relay: Relay) -> list[str]:
    page = relay.call(relay.storage.job_list(ListParams(states=[JobState.RUNNING], limit=100)))
    return [job.id for job in page.jobs]
