"""Flow control end to end, on SQLite, PostgreSQL and Redis: real ``relay worker`` processes sharing one
store obey a rate limit and a concurrency limit together, and three nodes running the cron scheduler at
once enqueue each tick of a schedule exactly once.

- Rate: 4 processes x 20 slots on a queue limited to 50 jobs/s (bursts of 10), 500 jobs (10 s of
  work): in every window of ``w`` seconds, at most ``burst + rate * w`` jobs started (by the start
  times storage recorded at each claim).
- Concurrency: 3 processes x 5 slots on a queue limited to 3 running jobs; each job writes its own
  start and end; at no moment do more than 3 overlap.
- Cron: 3 processes define the same schedule (``--schedule``) and run the scheduler with an injected
  clock (``RELAY_TEST_CLOCK_FILE``) that the test moves a minute at a time, 20 times: 20 jobs, one per
  tick.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from relay.app import Relay
from relay.clock import CLOCK_FILE_ENV
from relay.settings import Settings
from relay.storage.params import ListParams
from relay.types import Job, JobState, QueueLimits, RateLimit
from servers.postgres import postgres_server
from servers.redis import redis_server, redis_test_url

from .procs import Proc, wait_until

__all__ = ["postgres_server", "redis_server"]

pytestmark = pytest.mark.slow

RATE, BURST = 50.0, 10
RATED_JOBS = 500  # 10 s of work at the rate
CAPPED_LIMIT, CAPPED_JOBS = 3, 24
TICKS = 20
RUN_TIMEOUT = 120.0  # seconds for a whole run on a loaded 2-core machine


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'relay.db'}"
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        url: str = server.new_database()
        return url
    return redis_test_url(SimpleNamespace(server=request.getfixturevalue("redis_server")))


class Fleet:
    """One test's worker processes on ``url`` and a Relay to enqueue with and read state."""

    def __init__(self, url: str, work: Path, **env: str) -> None:
        self.url = url
        self.work = work
        self.procs: list[Proc] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        self.env = {
            **base,
            "RELAY_DATABASE_URL": url,
            "RELAY_POLL_INTERVAL": "0.5",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_LEVEL": "warning",  # 500 jobs: only trouble is worth a line
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.relay = Relay(settings=Settings(database_url=url))

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        self.relay.close()

    def start_worker(self, name: str, *args: str) -> Proc:
        argv = [sys.executable, "-m", "relay", "--log-level", "info", "worker", *args]
        proc = Proc(name, argv, self.env, self.work, self.work / f"{name}.log")
        self.procs.append(proc)
        return proc

    def jobs(self, queue: str) -> list[Job]:
        page = self.relay.call(self.relay.storage.job_list(ListParams(queues=[queue], limit=5000)))
        return list(page.jobs)

    def wait_all_completed(self, queue: str, count: int) -> list[Job]:
        def done() -> list[Job] | None:
            jobs = self.jobs(queue)
            finished = [j for j in jobs if j.state is JobState.COMPLETED]
            return jobs if len(finished) == count else None

        found: list[Job] = wait_until(done, RUN_TIMEOUT, f"{count} jobs of {queue} to complete", self.logs)
        return found

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(20)}" for p in self.procs)


@pytest.fixture
def fleet(store_url: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(store_url, tmp_path)
    yield fleet
    fleet.close()


def most_in_window(times: list[float], window: float) -> int:
    """The largest number of ``times`` (sorted) inside any closed window of ``window`` seconds."""
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


def most_overlapping(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment (an end before a start at the same time)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = open_now = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def test_four_workers_together_keep_to_the_rate(fleet: Fleet) -> None:
    relay = fleet.relay
    relay.call(relay.storage.queue_limits_set("rated", QueueLimits(rate=RateLimit(RATE, BURST))))
    relay.enqueue_many([relay.shell_job(["true"], queue="rated") for _ in range(RATED_JOBS)])
    for n in range(4):
        fleet.start_worker(f"rated-{n}", "--queues", "rated", "--concurrency", "20")
    jobs = fleet.wait_all_completed("rated", RATED_JOBS)
    starts = sorted(j.started_at.timestamp() for j in jobs if j.started_at is not None)
    assert len(starts) == RATED_JOBS
    for window in (0.1, 0.5, 1.0, 2.0, 5.0):
        allowed = BURST + RATE * window + 1  # +1: a token that lands on the window's edge
        assert most_in_window(starts, window) <= allowed, f"more than {allowed} starts in {window}s"
    assert len({j.worker_id for j in jobs}) > 1  # the workers shared the tokens


def test_three_workers_never_run_more_than_the_concurrency_limit(fleet: Fleet) -> None:
    relay = fleet.relay
    relay.call(relay.storage.queue_limits_set("capped", QueueLimits(concurrency=CAPPED_LIMIT)))
    marks = fleet.work / "marks"
    marks.mkdir()
    command = "date +%s.%N > {dir}/{n}.start; sleep 0.2; date +%s.%N > {dir}/{n}.end"
    relay.enqueue_many(
        [
            relay.shell_job(command.format(dir=marks, n=n), shell=True, queue="capped")
            for n in range(CAPPED_JOBS)
        ]
    )
    for n in range(3):
        fleet.start_worker(f"capped-{n}", "--queues", "capped", "--concurrency", "5")
    jobs = fleet.wait_all_completed("capped", CAPPED_JOBS)
    own = [
        (float((marks / f"{n}.start").read_text()), float((marks / f"{n}.end").read_text()))
        for n in range(CAPPED_JOBS)
    ]
    assert most_overlapping(own) <= CAPPED_LIMIT  # as the jobs themselves saw it
    stored = [
        (j.started_at.timestamp(), j.finished_at.timestamp()) for j in jobs if j.started_at and j.finished_at
    ]
    assert len(stored) == CAPPED_JOBS
    assert most_overlapping(stored) <= CAPPED_LIMIT  # as storage recorded the slots
    assert most_overlapping(stored) == CAPPED_LIMIT  # and the slots were all used


def test_three_nodes_enqueue_each_cron_tick_once(store_url: str, tmp_path: Path) -> None:
    clock_file = tmp_path / "clock"
    start = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)  # half way between two ticks
    clock_file.write_text(start.isoformat())
    fleet = Fleet(store_url, tmp_path, **{CLOCK_FILE_ENV: str(clock_file), "RELAY_CRON_INTERVAL": "0.05"})
    try:
        nodes = [
            fleet.start_worker(f"node-{n}", "--queues", "elsewhere", "--schedule", "tick=* * * * * /bin/true")
            for n in range(3)
        ]
        for node in nodes:
            node.wait_ready()
        for k in range(1, TICKS + 1):
            tick = datetime(2026, 1, 1, 0, k, tzinfo=UTC)
            clock_file.write_text((tick + timedelta(seconds=30)).isoformat())  # each tick 30 s late: on time

            def enqueued(tick: datetime = tick) -> bool:
                return any(j.metadata.get("tick") == tick.isoformat() for j in fleet.jobs("default"))

            wait_until(enqueued, RUN_TIMEOUT, f"the job of tick {tick}", fleet.logs)
        for node in nodes:  # a node still in the middle of a pass finishes it before it exits
            node.signal(signal.SIGTERM)
        for node in nodes:
            assert node.wait_exit() == 0, node.log_tail()
        ticks = sorted(j.metadata["tick"] for j in fleet.jobs("default"))
        assert ticks == [datetime(2026, 1, 1, 0, k, tzinfo=UTC).isoformat() for k in range(1, TICKS + 1)]
        schedule = fleet.relay.call(fleet.relay.storage.schedule_get("tick"))
        assert schedule is not None
        assert schedule.last_run_at == datetime(2026, 1, 1, 0, TICKS, tzinfo=UTC)
    finally:
        fleet.close()
