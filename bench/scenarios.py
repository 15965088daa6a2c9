"""The benchmark scenarios, each run against one storage URL.

- bulk: enqueue N no-op jobs with the bulk API, then start workers on every core and time until the
  last one completed; verify that N completed, none lost, none run twice.
- latency: workers running, a producer enqueues one job at a time at a fixed rate; each job measures
  the time from its enqueue to its start.
- shell: N shell jobs of /bin/true through Relay, against a plain loop spawning /bin/true N times.
- scale: the bulk figure again with many finished jobs already stored.
- rated: a queue limited to ``rate`` jobs/s (a burst of 50): the rate the workers hold together, from
  the stored start times past the burst, against the limit; and the most starts in any one second.
- keyed: bulk on a queue with a concurrency limit of 1 per key, every job its own concurrency_key:
  the cost of the limited claim when no job is held back.
- grpc: bulk with workers on gRPC streams (``relay worker --connect``) to one ``relay server`` on the
  storage, instead of workers on the storage itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.tasks import BenchApp, make_app
from relay import Relay
from relay.storage.params import ClaimParams, FinishItem, ListParams
from relay.types import JobState, Outcome, QueueLimits, RateLimit

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.02  # seconds between looks at the counts while waiting for the workers


@dataclass
class Result:
    backend: str
    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "scenario": self.scenario, **self.figures}


@dataclass
class Workers:
    """Worker processes on every core, started from the real ``relay worker`` command."""

    url: str
    processes: int
    concurrency: int
    queues: str = "default"
    connect: str | None = None  # grpc://host:port: workers on gRPC streams to a server, not on storage
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    profilers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        env = {
            **os.environ,
            "RELAY_DATABASE_URL": self.url,
            "RELAY_POLL_INTERVAL": "0.05",
            "PYTHONPATH": str(ROOT),
        }
        argv = [
            sys.executable,
            "-m",
            "relay",
            "worker",
            "--app",
            "bench.tasks:relay",
            "--queues",
            self.queues,
            "--concurrency",
            str(self.concurrency),
        ]
        if self.connect is not None:
            argv += ["--connect", self.connect]
        self.procs = [
            subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(self.processes)
        ]
        if PROFILE.directory is not None:
            self.profilers = [PROFILE.attach(proc.pid, f"worker{i}") for i, proc in enumerate(self.procs)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for profiler in self.profilers:
            profiler.wait(timeout=60)  # py-spy writes its file when the process it watches exits


@dataclass
class Profile:
    """``--profile DIR``: py-spy attaches to every worker and writes collapsed stacks (``--format raw``)."""

    directory: Path | None = None
    label: str = ""

    def attach(self, pid: int, name: str) -> subprocess.Popen[bytes]:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{self.label}-{name}.txt"
        argv = [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--nonblocking",
            "--output",
            str(out),
        ]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PROFILE = Profile()


_opened: list[BenchApp] = []


def new_app(url: str) -> BenchApp:
    """A Relay with the bench tasks on ``url``; closed by :func:`close_apps` after the scenario."""
    app = make_app(url)
    _opened.append(app)
    return app


def close_apps() -> None:
    while _opened:
        _opened.pop().relay.close()


def wait_for_workers(relay: Relay, n: int, timeout: float = 60) -> None:
    """Until ``n`` worker processes registered: they are started and polling."""
    deadline = time.perf_counter() + timeout
    while len(relay.call(relay.storage.worker_list())) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{n} workers did not register within {timeout}s")
        time.sleep(POLL)


def completed(relay: Relay, queue: str = "default") -> int:
    for info in relay.call(relay.storage.queue_list()):
        if info.name == queue:
            return info.counts.get(JobState.COMPLETED, 0)
    return 0


def wait_for_completed(
    relay: Relay, n: int, timeout: float, queue: str = "default", last_id: str | None = None
) -> float:
    """Seconds until ``n`` jobs of ``queue`` completed.

    Counting is not free: on PostgreSQL a count over the jobs table takes a core for tens of
    milliseconds at 100,000 rows and for hundreds at a million, and a poller that counts often steals
    the CPU the workers are measured on. So, given the id of the job claimed last (``last_id``), the
    wait first looks that one job up by id until it is final (the others were all claimed before it),
    and counts only then. Either look is adaptive: it sleeps half the time the remaining jobs should
    take at the rate seen so far, never less than POLL, never more than a second.
    """
    start = time.perf_counter()
    if last_id is not None:
        while not relay.get_job(last_id).is_final:
            _pause(start, timeout, f"job {last_id} to finish")
    while (done := completed(relay, queue)) < n:
        elapsed = _pause(start, timeout, f"{n} jobs to complete (now {done})")
        expected_left = (n - done) * elapsed / done if done else 1.0
        time.sleep(min(1.0, max(POLL, expected_left / 2)))
    return time.perf_counter() - start


def _pause(start: float, timeout: float, what: str) -> float:
    """Seconds since ``start``, after failing past ``timeout`` and pausing one POLL."""
    elapsed = time.perf_counter() - start
    if elapsed > timeout:
        raise TimeoutError(f"waited {timeout}s for {what}")
    time.sleep(POLL)
    return elapsed


def all_jobs(relay: Relay, queue: str) -> list[Any]:
    jobs: list[Any] = []
    cursor: str | None = None
    while True:
        page = relay.call(relay.storage.job_list(ListParams(queues=[queue], limit=1000, cursor=cursor)))
        jobs.extend(page.jobs)
        if page.next_cursor is None:
            return jobs
        cursor = page.next_cursor


def verify_exactly_once(relay: Relay, n: int, queue: str = "default") -> dict[str, Any]:
    """Check that ``n`` jobs completed, each in its first attempt, and time their processing from
    the stored timestamps: the first start to the last finish. Worker start-up (importing Relay and
    the app, ~0.5 s) is outside that span; it is inside the wall-clock figure."""
    jobs = all_jobs(relay, queue)
    done = [j for j in jobs if j.state is JobState.COMPLETED]
    twice = [j for j in done if j.attempt != 1]
    if len(jobs) != n or len(done) != n or twice:
        raise AssertionError(
            f"{len(jobs)} jobs stored, {len(done)} completed, {len(twice)} run twice; want {n}"
        )
    first_start = min(j.started_at for j in done if j.started_at is not None)
    last_finish = max(j.finished_at for j in done if j.finished_at is not None)
    span = (last_finish - first_start).total_seconds()
    return {
        "processed_jobs_per_s": round(n / span),
        "verified_completed": len(done),
        "run_twice": len(twice),
    }


def bulk(backend: str, url: str, n: int, processes: int, concurrency: int) -> Result:
    app = new_app(url)
    relay = app.relay
    calls = [app.noop.call() for _ in range(n)]
    relay.open()  # connecting (and loading scripts) is not enqueueing
    start = time.perf_counter()
    for i in range(0, n, 10_000):  # one transaction per 10,000 jobs keeps memory flat
        results = relay.insert([c.job for c in calls[i : i + 10_000]])
    enqueue_s = time.perf_counter() - start
    workers = Workers(url, processes, concurrency)
    workers.start()
    try:
        wall_s = wait_for_completed(relay, n, timeout=600, last_id=results[-1].job.id)
    finally:
        workers.stop()
    figures = {
        "jobs": n,
        "enqueue_jobs_per_s": round(n / enqueue_s),
        **verify_exactly_once(relay, n),
        "wall_jobs_per_s": round(n / wall_s),  # from starting the worker processes
        "processes": processes,
        "concurrency": concurrency,
    }
    return Result(backend, "bulk", figures)


@dataclass
class GrpcServer:
    """``relay server`` on the storage, with its gRPC API on a free port (HTTP on another)."""

    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self, timeout: float = 60) -> str:
        env = {**os.environ, "RELAY_DATABASE_URL": self.url, "RELAY_POLL_INTERVAL": "0.05"}
        argv = [sys.executable, "-m", "relay", "server", "--port", "0", "--grpc-port", "0"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if PROFILE.directory is not None:
            PROFILE.attach(self.proc.pid, "server")
        deadline = time.perf_counter() + timeout
        marker = "gRPC API listening on "
        while marker not in (text := self.log_path.read_text(errors="replace")):
            if time.perf_counter() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"relay server did not start:\n{text}")
            time.sleep(POLL)
        self.port = int(text.split(marker, 1)[1].split()[0].rsplit(":", 1)[1])
        return f"grpc://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def grpc(backend: str, url: str, n: int, processes: int, concurrency: int) -> Result:
    """bulk, with the workers on gRPC streams to one server process (which does every storage call)."""
    app = new_app(url)
    relay = app.relay
    calls = [app.noop.call() for _ in range(n)]
    relay.open()
    for i in range(0, n, 10_000):
        results = relay.insert([c.job for c in calls[i : i + 10_000]])
    server = GrpcServer(url, Path(os.environ.get("TMPDIR", "/tmp")) / f"relay-bench-server-{os.getpid()}.log")
    connect = server.start()
    workers = Workers(url, processes, concurrency, connect=connect)
    try:
        workers.start()
        wall_s = wait_for_completed(relay, n, timeout=600, last_id=results[-1].job.id)
    finally:
        workers.stop()
        server.stop()
    figures = {
        "jobs": n,
        **verify_exactly_once(relay, n),
        "wall_jobs_per_s": round(n / wall_s),  # from starting the worker processes
        "processes": processes,
        "concurrency": concurrency,
    }
    return Result(backend, "grpc", figures)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(backend: str, url: str, rate: float, seconds: float, processes: int) -> Result:
    app = new_app(url)
    relay = app.relay
    workers = Workers(url, processes, concurrency=50, queues="latency")
    workers.start()
    try:
        wait_for_workers(relay, processes)
        n = int(rate * seconds)
        start = time.perf_counter()
        handles = []
        for i in range(n):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            handles.append(app.stamp.options(queue="latency").enqueue(time.time()))
        wait_for_completed(relay, n, timeout=120, queue="latency")
    finally:
        workers.stop()
    waits = [relay.get_job(h.id).result * 1000 for h in handles]
    figures = {
        "jobs": n,
        "rate_per_s": rate,
        "p50_ms": round(percentile(waits, 0.50), 3),
        "p95_ms": round(percentile(waits, 0.95), 3),
        "p99_ms": round(percentile(waits, 0.99), 3),
        "max_ms": round(max(waits), 3),
    }
    return Result(backend, "latency", figures)


def plain_spawn_rate(n: int) -> float:
    """Spawns of /bin/true per second by a plain loop in this process: what a shell job is held to."""
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)
    return n / (time.perf_counter() - start)


def shell(backend: str, url: str, n: int, processes: int, concurrency: int) -> Result:
    # The plain loop runs before and after the workers and the two are averaged: on a shared machine
    # a single loop measured at another moment than the workers made the ratio swing by half.
    loop_before = plain_spawn_rate(n)
    relay = new_app(url).relay
    relay.insert([relay.shell_job(["/bin/true"], queue="shell") for _ in range(n)])
    workers = Workers(url, processes, concurrency, queues="shell")
    workers.start()
    try:
        wall_s = wait_for_completed(relay, n, timeout=600, queue="shell")
    finally:
        workers.stop()
    loop_after = plain_spawn_rate(n)
    loop_rate = (loop_before + loop_after) / 2
    # Like bulk: from the first start to the last finish, as stored; the workers' start-up is not
    # spawning (the plain loop has none either).
    rate = verify_exactly_once(relay, n, queue="shell")["processed_jobs_per_s"]
    figures = {
        "jobs": n,
        "relay_jobs_per_s": round(rate),
        "plain_loop_spawns_per_s": round(loop_rate),
        "plain_loop_before_after": [round(loop_before), round(loop_after)],
        "ratio": round(rate / loop_rate, 3),
        "wall_ratio": round(n / wall_s / loop_rate, 3),  # with the workers' start-up
    }
    return Result(backend, "shell", figures)


def prefill_finished(app: BenchApp, n: int, queue: str = "history") -> None:
    """Store ``n`` completed jobs through the seam itself (insert, claim and finish in batches)."""
    relay, batch = app.relay, 5_000
    for i in range(0, n, batch):
        size = min(batch, n - i)
        relay.insert([app.noop.options(queue=queue).call().job for _ in range(size)])
        claimed = relay.call(relay.storage.job_claim(ClaimParams([queue], "prefill", size)))
        items = [FinishItem(j.id, j.lease_token or "", Outcome.COMPLETED) for j in claimed]
        relay.call(relay.storage.job_finish_many(items))


def settle(backend: str, url: str) -> float:
    """After the prefill, what a real history would have had time for. On PostgreSQL: the vacuum of the
    two million dead row versions a million jobs leave (insert, claim and finish each write one), and
    a checkpoint of the gigabyte of WAL they wrote. Grown over days, autovacuum and the checkpointer
    keep up; dumped in two minutes, both are still at work when the measured run starts, and take a
    core and the disk from it. Returns its seconds."""
    if backend != "postgres":
        return 0.0
    import psycopg  # only the PostgreSQL runs need it

    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) relay.jobs")
        conn.execute("CHECKPOINT")  # the prefill's gigabyte of WAL is flushed before, not during
    return time.perf_counter() - start


def scale(backend: str, url: str, n: int, history: int, processes: int, concurrency: int) -> Result:
    start = time.perf_counter()
    prefill_finished(new_app(url), history)
    prefill_s = time.perf_counter() - start
    settle_s = settle(backend, url)
    result = bulk(backend, url, n, processes, concurrency)
    result.scenario = "scale"
    result.figures["history_jobs"] = history
    result.figures["prefill_s"] = round(prefill_s, 1)
    result.figures["settle_s"] = round(settle_s, 1)
    return result


RATED_BURST = 50


def rated(backend: str, url: str, rate: float, seconds: float, processes: int, concurrency: int) -> Result:
    app = new_app(url)
    relay = app.relay
    n = int(rate * seconds)
    relay.call(relay.storage.queue_limits_set("rated", QueueLimits(rate=RateLimit(rate, RATED_BURST))))
    task = app.noop.options(queue="rated")
    results = relay.insert([task.call().job for _ in range(n)])
    workers = Workers(url, processes, concurrency, queues="rated")
    workers.start()
    try:
        wait_for_completed(relay, n, timeout=seconds * 3 + 120, queue="rated", last_id=results[-1].job.id)
    finally:
        workers.stop()
    verify_exactly_once(relay, n, queue="rated")
    starts = sorted(j.started_at.timestamp() for j in all_jobs(relay, "rated") if j.started_at is not None)
    steady = starts[RATED_BURST:]  # the burst went at once; then one job per token
    held = (len(steady) - 1) / (steady[-1] - steady[0])
    figures = {
        "jobs": n,
        "limit_jobs_per_s": rate,
        "burst": RATED_BURST,
        "held_jobs_per_s": round(held, 1),
        "deviation_pct": round(100 * (held - rate) / rate, 2),
        "most_starts_in_1s": most_in_window(starts, 1.0),
        "processes": processes,
        "concurrency": concurrency,
    }
    return Result(backend, "rated", figures)


def most_in_window(times: list[float], window: float) -> int:
    """The most of ``times`` (sorted) inside any window of ``window`` seconds."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] > window:
            first += 1
        most = max(most, last - first + 1)
    return most


def keyed(backend: str, url: str, n: int, processes: int, concurrency: int) -> Result:
    app = new_app(url)
    relay = app.relay
    relay.call(relay.storage.queue_limits_set("keyed", QueueLimits(key_concurrency=1)))
    template = app.noop.options(queue="keyed").call().job
    jobs = [replace(template, concurrency_key=f"key-{i}") for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, 10_000):
        results = relay.insert(jobs[i : i + 10_000])
    enqueue_s = time.perf_counter() - start
    workers = Workers(url, processes, concurrency, queues="keyed")
    workers.start()
    try:
        wait_for_completed(relay, n, timeout=600, queue="keyed", last_id=results[-1].job.id)
    finally:
        workers.stop()
    figures = {
        "jobs": n,
        "enqueue_jobs_per_s": round(n / enqueue_s),
        **verify_exactly_once(relay, n, queue="keyed"),
        "processes": processes,
        "concurrency": concurrency,
    }
    return Result(backend, "keyed", figures)
