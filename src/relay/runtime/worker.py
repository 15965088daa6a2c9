"""The worker: claims jobs from its queues into N slots, runs them, records their outcomes.

Who owns what (one event loop, plus two threads):

- the claim loop (``_claim_loop``) is the only code that claims; it claims only as many jobs as there
  are free slots, and sleeps until a wake-up: a notification from storage, a freed slot, or a jittered
  poll (the source of truth: a notification is only a hint); when a rate limit held jobs back, the claim
  says when the next token is due, and the loop sleeps no longer than that;
- each claimed job runs in its own task, started by the executor, whose outcome (``_on_outcome``)
  goes to the completer, which records outcomes in batches; a slot is freed once the job's code has
  ended (so the next claim overlaps the recording), with a bound on outcomes waiting to be recorded;
- the heartbeat thread extends every running job's lease in one call, from a thread job code cannot
  starve, and reports lost leases and cancellation requests back to the loop;
- the maintenance runner (reaper, scheduler, pruner) runs here too, but acts only while elected leader;
  the cron scheduler runs on every node (storage makes each tick fire once).

Its storage is a whole backend, or only the worker's part of the seam (``WorkerStorage``): a link to a
server over a gRPC stream (``relay worker --connect``), whose server then runs maintenance and schedules.

Shutdown has two phases: the first signal stops claiming and lets running jobs finish within the grace
period; then (or at a second signal) what still runs is stopped and released back to pending.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from dataclasses import dataclass, field
from typing import Any

from relay.clock import Clock, SystemClock
from relay.errors import ConfigurationError
from relay.runtime.attempt import Attempt, StopReason
from relay.runtime.completer import Completer
from relay.runtime.context import JobContext
from relay.runtime.events import job_event
from relay.runtime.executor import Executor
from relay.runtime.heartbeat import Heartbeater, RunningSet
from relay.runtime.logs import LogWriter
from relay.runtime.maintenance import MaintenanceRunner, Service, default_services
from relay.runtime.registry import TaskRegistry
from relay.runtime.schedules import ScheduleDefinition, save
from relay.runtime.sync_threads import SyncThreadPool
from relay.runtime.workflows import step_inputs
from relay.storage.base import Storage, WorkerStorage
from relay.storage.params import BUILTIN_KINDS, ClaimParams, FinishItem, FinishResult, HeartbeatResult
from relay.types import Job, JobKind, JobState, WorkerInfo, worker_identity

log = logging.getLogger("relay.worker")

_FINISH_EVENTS = {
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.DEAD: "dead",
    JobState.CANCELLED: "cancelled",
    JobState.PENDING: "released",
}


@dataclass(frozen=True)
class WorkerConfig:
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 10
    poll_interval: float = 1.0
    grace_period: float = 30.0
    cancel_grace: float = 5.0
    burst: bool = False  # exit once no job is due
    maintenance: bool = True  # take part in the leader election for reaper/scheduler/pruner
    reaper_interval: float = 5.0
    scheduler_interval: float = 1.0
    leader_ttl: float = 15.0
    retention: float = 7 * 86400.0
    log_cap: int = 1_000_000
    kinds: tuple[JobKind, ...] = BUILTIN_KINDS
    worker_id: str = field(default_factory=worker_identity)
    schedules: tuple[ScheduleDefinition, ...] = ()  # defined (or redefined) in storage at start
    cron_interval: float = 1.0


class Worker:
    def __init__(
        self, storage: WorkerStorage, registry: TaskRegistry, config: WorkerConfig, clock: Clock | None = None
    ) -> None:
        self.storage = storage
        self.config = config
        self.id = config.worker_id
        self._registry = registry
        self._clock = clock or SystemClock()
        self._started_at = self._clock.now()
        self._running = RunningSet()
        self._executing: set[Attempt] = set()  # attempts whose outcome is not known yet
        self._idle = asyncio.Event()  # set while _executing is empty
        self._idle.set()
        self._stopping = asyncio.Event()  # phase 1: stop claiming
        self._hard_stop = asyncio.Event()  # phase 2: stop running jobs now
        self._wake = asyncio.Event()  # something may be claimable: a notification, a freed slot
        self._loop: asyncio.AbstractEventLoop | None = None
        self.maintenance: MaintenanceRunner | None = None
        self.processed = 0  # outcomes recorded, for burst mode and tests
        self._retry_after: float | None = None  # from the last claim: when a held-back token is due

    # -- control --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: stop claiming, let jobs finish. Second call: release running jobs now."""
        if self._stopping.is_set():
            log.warning("second stop signal: releasing running jobs now")
            self._hard_stop.set()
        else:
            log.info(
                "stopping: no new jobs; %d running get %.0fs to finish",
                len(self._running),
                self.config.grace_period,
            )
            self._stopping.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    # -- main -----------------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.storage.open()
        if self.config.schedules:
            await save(self._whole_storage("schedules"), list(self.config.schedules), self._clock.now())
        threads = SyncThreadPool(self.config.concurrency)
        logs = LogWriter(self.storage)
        self._completer = Completer(self.storage, logs, self._on_recorded)
        self._executor = Executor(
            self._registry,
            threads,
            logs,
            self._clock,
            cancel_grace=self.config.cancel_grace,
            log_cap=self.config.log_cap,
            kill_wait=self.config.cancel_grace + 5.0,
            inputs=lambda job: step_inputs(self.storage, job),
        )
        heartbeater = Heartbeater(self.storage, self._running, self._deliver_heartbeat, self._worker_info)
        heartbeater.start()
        side_stop = asyncio.Event()
        side = [
            asyncio.create_task(self._completer.run(side_stop)),
            asyncio.create_task(logs.run(side_stop)),
        ]
        listener = asyncio.create_task(self._listen())
        if self.config.maintenance:
            self.maintenance = MaintenanceRunner(
                self._whole_storage("maintenance"), self.id, self._services(), self.config.leader_ttl
            )
            side.append(asyncio.create_task(self.maintenance.run(side_stop)))
        log.info(
            "worker %s serving %s with %d slots",
            self.id,
            ",".join(self.config.queues),
            self.config.concurrency,
        )
        try:
            await self._claim_loop()
            await self._shutdown()
        finally:
            listener.cancel()  # it may be blocked in wait_for_jobs for a whole poll interval
            side_stop.set()
            await asyncio.gather(listener, *side, return_exceptions=True)
            heartbeater.stop()
            threads.shutdown()
            await self._unregister()
        log.info("worker %s stopped after %d jobs", self.id, self.processed)

    def _whole_storage(self, what: str) -> Storage:
        """Maintenance and schedules need a whole backend; a worker on a link to a server (``relay
        worker --connect``) has only the worker's part of the seam, and the server runs them."""
        if not isinstance(self.storage, Storage):
            raise ConfigurationError(f"{what} needs a storage connection: this worker has only a link")
        return self.storage

    def _services(self) -> list[Service]:
        return default_services(
            self._whole_storage("maintenance"),
            self._clock,
            reaper_interval=self.config.reaper_interval,
            scheduler_interval=self.config.scheduler_interval,
            retention=self.config.retention,
            cron_interval=self.config.cron_interval,
        )

    async def _unregister(self) -> None:
        try:
            await self.storage.worker_remove(self.id)
        except Exception:
            log.exception("could not unregister worker %s", self.id)

    # -- claiming -------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            free = self._free_slots()
            if free <= 0:
                self._retry_after = None  # no slot to fill before a job ends, and that wakes us
            claimed = await self._claim(free) if free > 0 else 0
            idle = claimed == 0 and len(self._running) == 0 and self._retry_after is None
            if self.config.burst and idle:
                log.info("burst mode: no job is due, stopping")
                return
            if free > 0 and claimed == free:
                continue  # every slot was filled: more may be waiting
            await self._wait_for_work()

    def _free_slots(self) -> int:
        """Slots whose job's code is not running.

        A slot frees when its job's code ends, not when the outcome is recorded: the next claim then
        overlaps the completer's flush instead of waiting for it (two round trips in a row per cycle
        were half of a busy worker's time). Outcomes waiting to be recorded beyond one set of slots
        keep theirs: when storage is slow or down, the worker stops taking jobs it cannot record.
        """
        unrecorded = len(self._running) - len(self._executing)
        backlog = max(0, unrecorded - self.config.concurrency)
        return self.config.concurrency - len(self._executing) - backlog

    async def _claim(self, free: int) -> int:
        params = ClaimParams(self.config.queues, self.id, free, self.config.kinds)
        try:
            jobs = await self.storage.job_claim(params)
        except Exception:
            log.exception("claim failed; retrying after the poll interval")
            self._retry_after = None
            return 0
        self._retry_after = jobs.retry_after
        for job in jobs:
            self._start(job)
        return len(jobs)

    async def _wait_for_work(self) -> None:
        # Jitter (±10%) keeps many workers from polling in lockstep. A token due sooner than the poll
        # is waited for exactly: with a rate limit, that is when the next job may start.
        timeout = self.config.poll_interval * random.uniform(0.9, 1.1)
        if self._retry_after is not None:
            timeout = min(timeout, self._retry_after)
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _listen(self) -> None:
        """Turn storage notifications into wake-ups (cancelled when the worker stops)."""
        while not self._stopping.is_set():
            try:
                if await self.storage.wait_for_jobs(self.config.queues, self.config.poll_interval):
                    self._wake.set()
            except Exception:
                log.exception("listening for new jobs failed; polling covers it")
                await asyncio.sleep(self.config.poll_interval)

    # -- running --------------------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        attempt = Attempt(job, JobContext(job))
        self._running.add(attempt)
        self._executing.add(attempt)
        self._idle.clear()
        if log.isEnabledFor(logging.DEBUG):
            job_event("claimed" if job.attempt == 1 else "retried", job, logging.DEBUG, worker=self.id)
        self._executor.start(attempt, self._on_outcome)

    def _on_outcome(self, attempt: Attempt, item: FinishItem) -> None:
        self._executing.discard(attempt)
        if not self._executing:
            self._idle.set()
        self._wake.set()  # its slot is free (see _free_slots)
        if attempt.stop_reason is StopReason.LEASE_LOST:
            # Another worker may own this job now: its outcome is not ours to record.
            self._running.remove(attempt)
            job_event("lease_lost", attempt.job, logging.WARNING, worker=self.id)
            return
        self._completer.submit(attempt, item)

    def _on_recorded(self, attempt: Attempt, item: FinishItem, result: FinishResult) -> None:
        self._running.remove(attempt)
        self._wake.set()
        self.processed += 1
        job = attempt.job
        if result.state is None:
            job_event("lease_lost", job, logging.WARNING, worker=self.id, outcome=item.outcome.value)
            return
        fields: dict[str, Any] = {"duration": round(attempt.elapsed(), 6)}
        if item.error is not None:
            fields["error"] = f"{item.error.type}: {item.error.message}"
        if result.state is JobState.FAILED:
            fields["retry_in"] = round(item.retry_delay, 3)
        level = logging.INFO if result.state in (JobState.COMPLETED, JobState.PENDING) else logging.WARNING
        job_event(_FINISH_EVENTS.get(result.state, result.state.value), job, level, **fields)

    # -- heartbeat results (arrive from the heartbeat thread) -------------------------------------

    def _deliver_heartbeat(self, result: HeartbeatResult, beaten: dict[str, Attempt]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_heartbeat, result, beaten)

    def _on_heartbeat(self, result: HeartbeatResult, beaten: dict[str, Attempt]) -> None:
        # Act only on the attempt that was beaten: by now the job may have been claimed again by
        # this worker, and that newer attempt holds a lease of its own.
        for job_id in result.lost:
            attempt = beaten.get(job_id)
            if attempt is not None and attempt.stop_reason is None:
                attempt.stop(StopReason.LEASE_LOST)
        for job_id in result.cancel_requested:
            attempt = beaten.get(job_id)
            if attempt is not None and not attempt.ctx.cancel_requested:
                self._cancel(attempt)

    def _cancel(self, attempt: Attempt) -> None:
        """Two stages: ask the job (``ctx.cancel_requested``), then stop it after the cancel grace.

        A shell command is asked with SIGTERM and killed after the grace by ``run_shell`` itself."""
        job_event("cancelling", attempt.job, worker=self.id)
        attempt.ctx.request_cancel()
        if attempt.job.kind is JobKind.SHELL:
            attempt.stop(StopReason.CANCEL)
        else:
            assert self._loop is not None
            self._loop.call_later(self.config.cancel_grace, attempt.stop, StopReason.CANCEL)

    def _worker_info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            host=os.uname().nodename,
            pid=os.getpid(),
            queues=self.config.queues,
            concurrency=self.config.concurrency,
            started_at=self._started_at,
            last_heartbeat_at=self._clock.now(),
            running=tuple(a.job.id for a in self._running.snapshot()),
        )

    # -- shutdown -------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._executing and not self._hard_stop.is_set():
            log.info(
                "waiting up to %.1fs for %d running jobs", self.config.grace_period, len(self._executing)
            )
            hard = asyncio.ensure_future(self._hard_stop.wait())
            all_done = asyncio.ensure_future(self._idle.wait())
            await asyncio.wait(
                {hard, all_done}, timeout=self.config.grace_period, return_when=asyncio.FIRST_COMPLETED
            )
            hard.cancel()
            all_done.cancel()
        for attempt in list(self._executing):
            log.warning("releasing job %s after %.1fs of running", attempt.job.id, attempt.elapsed())
            attempt.stop(StopReason.SHUTDOWN)
        if self._executing:
            # Each stopped attempt settles when its code stops, or is abandoned after the kill wait.
            try:
                async with asyncio.timeout(self.config.cancel_grace + 10.0):
                    await self._idle.wait()
            except TimeoutError:
                log.error("%d jobs still had no outcome at shutdown", len(self._executing))
