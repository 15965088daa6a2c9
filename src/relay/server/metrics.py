"""``/metrics`` in Prometheus' text format: what storage holds now, and what this server has seen.

Gauges, read from storage at each scrape (exact, whoever changed the jobs):

- ``relay_queue_jobs{queue,state}``: jobs by queue and state (queue depth is ``state="pending"``);
- ``relay_queue_oldest_pending_age_seconds{queue}``, ``relay_queue_paused{queue}``;
- ``relay_workers``, ``relay_workers_running_jobs``: registered workers, and the jobs they run;
- ``relay_storage_up``: 0 when storage could not be read at this scrape (the gauges above are absent).

Counters and a histogram, from the change feed (:mod:`relay.server.feed`), since this server started:

- ``relay_jobs_enqueued_total{queue}``, ``relay_jobs_completed_total{queue}``,
  ``relay_jobs_failed_total{queue}`` (an attempt failed, a retry is scheduled),
  ``relay_jobs_dead_total{queue}``;
- ``relay_job_run_seconds{queue,outcome}``: start of the attempt to its outcome;
- ``relay_change_feed_polls_total``: the feed's polls (its liveness: it stops growing if the feed stalls).

The feed sees every change made by anyone (workers, the SDK, other servers), but it polls: changes
it misses (see its limits) are not counted, and each server counts on its own (aggregate with
``max``, not ``sum``, across servers). ``relay_http_requests_total{method,route,status}`` counts this
server's requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.storage.base import Admin
from relay.types import Job, JobState, QueueInfo, WorkerInfo

log = logging.getLogger("relay.server.metrics")

RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, float("inf"))


@dataclass
class _Snapshot:
    ok: bool = False
    now: datetime | None = None
    queues: list[QueueInfo] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)


class _StorageCollector(Collector):
    """Yields the gauges of the snapshot taken just before ``generate_latest`` (no await in between)."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()
        self.feed_polls: Callable[[], int] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.feed_polls is not None:
            polls = CounterMetricFamily("relay_change_feed_polls", "Polls of the change feed")
            polls.add_metric([], self.feed_polls())
            yield polls
        s = self.snapshot
        up = GaugeMetricFamily("relay_storage_up", "1 if storage could be read at this scrape")
        up.add_metric([], 1.0 if s.ok else 0.0)
        yield up
        if not s.ok or s.now is None:
            return
        jobs = GaugeMetricFamily("relay_queue_jobs", "Jobs by queue and state", labels=["queue", "state"])
        age = GaugeMetricFamily(
            "relay_queue_oldest_pending_age_seconds", "Age of the oldest pending job", labels=["queue"]
        )
        paused = GaugeMetricFamily("relay_queue_paused", "1 if the queue is paused", labels=["queue"])
        for q in s.queues:
            for state in JobState:
                jobs.add_metric([q.name, state.value], q.counts.get(state, 0))
            oldest = q.oldest_pending_at
            age.add_metric([q.name], 0.0 if oldest is None else max(0.0, (s.now - oldest).total_seconds()))
            paused.add_metric([q.name], 1.0 if q.paused else 0.0)
        yield from (jobs, age, paused)
        workers = GaugeMetricFamily("relay_workers", "Registered workers")
        workers.add_metric([], len(s.workers))
        running = GaugeMetricFamily("relay_workers_running_jobs", "Jobs the registered workers run")
        running.add_metric([], sum(len(w.running) for w in s.workers))
        yield from (workers, running)


class ServerMetrics:
    """One registry per app (not the global one), so that several apps in one process never clash."""

    def __init__(self, started_at: datetime) -> None:
        self.started_at = started_at
        self.registry = CollectorRegistry()
        r = self.registry
        self.enqueued = Counter("relay_jobs_enqueued", "Jobs enqueued", ["queue"], registry=r)
        self.completed = Counter("relay_jobs_completed", "Jobs completed", ["queue"], registry=r)
        self.failed = Counter(
            "relay_jobs_failed", "Attempts failed with a retry scheduled", ["queue"], registry=r
        )
        self.dead = Counter("relay_jobs_dead", "Jobs that ran out of attempts", ["queue"], registry=r)
        self.run_seconds = Histogram(
            "relay_job_run_seconds", "Attempt run time", ["queue", "outcome"], buckets=RUN_BUCKETS, registry=r
        )
        self.http_requests = Counter(
            "relay_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self._storage_collector = _StorageCollector()
        r.register(self._storage_collector)

    def watch_feed(self, polls: Callable[[], int]) -> None:
        self._storage_collector.feed_polls = polls

    def observe(self, job: Job, previous: JobState | None, previous_attempt: int | None) -> None:
        """A change the feed saw: count enqueues and outcomes, and time the attempt that ended."""
        if previous is None and job.created_at >= self.started_at:
            self.enqueued.labels(job.queue).inc()
        counter = {JobState.COMPLETED: self.completed, JobState.FAILED: self.failed, JobState.DEAD: self.dead}
        # Failed again (with a later attempt) between two polls is a new outcome too.
        if job.state not in counter or (job.state == previous and job.attempt == previous_attempt):
            return
        counter[job.state].labels(job.queue).inc()
        ended = job.finished_at or job.updated_at
        if job.started_at is not None and ended >= job.started_at:
            self.run_seconds.labels(job.queue, job.state.value).observe(
                (ended - job.started_at).total_seconds()
            )

    async def render(self, storage: Admin, now: datetime) -> bytes:
        try:
            snapshot = _Snapshot(True, now, await storage.queue_list(), await storage.worker_list())
        except Exception:
            log.exception("metrics: storage could not be read")
            snapshot = _Snapshot()
        self._storage_collector.snapshot = snapshot
        return generate_latest(self.registry)


class HttpMetricsMiddleware:
    """Counts requests by method, route template (never the raw path: ids would explode the labels)
    and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app dies before answering

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(scope["method"], template, str(status)).inc()
