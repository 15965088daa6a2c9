"""The Redis backend: the whole storage seam on Redis 6.2 or newer, one Lua script per state change.

>>> storage = RedisStorage("redis://localhost:6379/0?prefix=relay")  # doctest: +SKIP
>>> await storage.open()  # connects, reads and logs the server's persistence settings  # doctest: +SKIP

How it fits together:

- Threads and loops (:mod:`.loop`): the backend owns one event loop on a daemon thread; its redis-py
  client lives there, and every public method hops onto it, whichever loop or thread calls.
- Operations (:mod:`.writes`, :mod:`.maintenance`, :mod:`.admin`, :mod:`.schedules`): each state
  change is one script (``scripts/*.lua``, run through :class:`.scripts.Scripts`), so it is atomic;
  each worker write is fenced by its lease token inside the script.
- Flow control (rate and concurrency limits, ordering keys, unique windows) is decided inside the
  insert and claim scripts and kept by every script that moves a job (``scripts/_lib.lua`` says how);
  a queue without limits claims as it did before them, for one more ``HMGET``.
- Time: the Redis server's ``TIME``, read inside each script; a clock injected for tests is passed to
  the scripts instead (:meth:`.session.Session.now`).
- Failures (:mod:`.session`): dropped connections are retried until ``retry_deadline``, then
  :class:`StorageUnavailableError`.
- Wake-ups (:mod:`.wakeups`): pub/sub, only a hint; workers poll anyway.
- Durability (:mod:`.durability`): read at open, logged, and reported by :meth:`durability_report`.

The key layout is in :mod:`.keys` and docs/redis.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson

from relay.clock import Clock
from relay.errors import InvalidJobError, InvalidWorkflowError, StorageUnavailableError
from relay.storage.batching import collector_paused
from relay.storage.loop_thread import LoopThread
from relay.storage.params import (
    Capabilities,
    ClaimedJobs,
    ClaimParams,
    FinishItem,
    FinishResult,
    HeartbeatItem,
    HeartbeatResult,
    InsertResult,
    JobPage,
    LeaderParams,
    ListParams,
    LogAppend,
    LogParams,
    PruneParams,
    PurgeParams,
    ReapResult,
    RequeueParams,
    ScheduleDue,
    ScheduleFire,
    ScheduleFireResult,
    ScheduleParams,
    WorkflowListParams,
    WorkflowPage,
    WorkflowStart,
    WorkflowStarted,
)
from relay.storage.redis import admin, maintenance, schedules, workflows, writes
from relay.storage.redis.codec import (
    draft_job,
    duration_us,
    encode_json,
    error_json,
    pack_new_job,
    worker_json,
)
from relay.storage.redis.durability import UNKNOWN, DurabilityReport, read_report
from relay.storage.redis.keys import Keys
from relay.storage.redis.options import parse_options, redacted
from relay.storage.redis.scripts import Scripts
from relay.storage.redis.session import Session, check_layout, new_client, run
from relay.storage.redis.wakeups import Wakeups
from relay.types import (
    Job,
    JobState,
    LogLine,
    NewJob,
    QueueInfo,
    QueueLimits,
    Schedule,
    WorkerInfo,
    WorkflowRun,
    new_job_ids,
)

T = TypeVar("T")

log = logging.getLogger("relay.storage.redis")

_OVERLAP_FROM = 100  # jobs from which an insert drafts its results while Redis runs it (a task more)

Work = Callable[[Session], Awaitable[T]]


class RedisStorage:
    """:class:`relay.storage.base.Storage` on Redis. ``options`` override the URL's (see
    :mod:`.options`): ``prefix``, ``log_max_lines``, ``socket_timeout``, ``retry_deadline``."""

    def __init__(self, url: str, clock: Clock | None = None, **options: Any) -> None:
        self._options = parse_options(url, options)
        self._clock = clock
        self._keys = Keys(self._options.prefix)
        self._origin = secrets.token_hex(8)
        self._wakeups = Wakeups(self._keys.wake, self._origin)
        self._thread = LoopThread("relay-redis", "the Redis storage")
        # Both touched on the private loop only.
        self._session: Session | None = None
        self._open_lock: asyncio.Lock | None = None
        self._report: DurabilityReport = UNKNOWN

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            name="redis", listen_notify=True, multi_process=True, durable=self._report.durable
        )

    def durability_report(self) -> dict[str, Any]:
        """What the server's persistence settings can lose: ``settings``, ``durable`` and a one-line
        ``summary`` (read at open; before, ``durable`` is False and the summary says so)."""
        return self._report.as_dict()

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (retrying until ``retry_deadline`` while the server is unreachable), read the
        server's persistence settings, check the key layout's version and load the scripts.
        Idempotent. Redis needs no schema: nothing is written."""
        self._thread.start()
        try:
            await self._thread.call(self._open_here())
        except BaseException:
            await self.close()
            raise

    async def _open_here(self) -> None:
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._session is not None:
                return
            client = new_client(self._options)
            scripts = Scripts(client, self._options.prefix)
            session = Session(
                client, scripts, self._keys, self._options, self._clock, self._origin, self._wake_decoded
            )
            try:
                await run(session, lambda s: s.client.ping(), what="open")
                self._report = await run(session, lambda s: read_report(s.client), what="open")
                await run(session, check_layout, what="open")
                await run(session, lambda s: s.scripts.load(), what="open")
            except BaseException:
                await client.aclose()
                raise
            self._session = session
        level = logging.INFO if self._report.durable else logging.WARNING
        where, prefix = redacted(self._options.url), self._options.prefix
        log.log(level, "Redis storage at %s (prefix %r): %s", where, prefix, self._report.summary)

    async def close(self) -> None:
        if not self._thread.running:
            return
        with contextlib.suppress(StorageUnavailableError):  # closed meanwhile by another caller
            await self._thread.call(self._close_here())
        self._thread.stop()

    async def _close_here(self) -> None:
        await self._wakeups.stop()
        session, self._session = self._session, None
        self._open_lock = None
        if session is not None:
            await session.client.aclose()

    async def migrate(self) -> list[str]:
        """Nothing to migrate: the layout (docs/redis.md) is created as jobs arrive."""
        return []

    # -- running an operation on the private loop -----------------------------------------------

    async def _run(self, work: Work[T], *, what: str, retry: bool = True) -> T:
        return await self._thread.call(self._run_here(work, what, retry))

    async def _run_here(self, work: Work[T], what: str, retry: bool) -> T:
        session = self._session
        if session is None:
            raise StorageUnavailableError("the Redis storage is not open")
        return await run(session, work, retry=retry, what=what)

    # -- producer and worker --------------------------------------------------------------------

    async def job_insert_many(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        if not jobs:
            return []
        # Ids and the batch token are chosen once, here: a retried call sends the very same ones.
        with collector_paused(len(jobs)):
            fresh_ids = new_job_ids(len(jobs))
            packed = [
                pack_new_job(job, _job_id(job, fresh)) for job, fresh in zip(jobs, fresh_ids, strict=True)
            ]
        results = await self._insert(packed, secrets.token_hex(8))
        self._wake(
            r.job.queue for r in results if r.created and r.job.state is JobState.PENDING and not r.job.held
        )
        return results

    async def _insert(self, packed: list[list[str]], batch: str) -> list[InsertResult]:
        """One insert call, and its results drafted while Redis runs it: building the Jobs of ten
        thousand inserts costs this process half the time the script costs Redis, and they need little
        of the reply (``codec.draft_job``), so the two overlap instead of following each other."""
        body = orjson.dumps(packed)  # here, not on the private loop: that thread only sends it
        if len(packed) < _OVERLAP_FROM:
            reply = await self._run(lambda s: writes.insert(s, body, batch), what="insert")
            return writes.insert_results(packed, [draft_job(row) for row in packed], reply)
        call = asyncio.ensure_future(self._run(lambda s: writes.insert(s, body, batch), what="insert"))
        try:
            await asyncio.sleep(0)  # the call starts: handed to the private loop, on its way to Redis
            with collector_paused(len(packed)):
                drafts = [draft_job(row) for row in packed]
            reply = await call
        except BaseException:
            call.cancel()
            raise
        with collector_paused(len(packed)):
            return writes.insert_results(packed, drafts, reply)

    async def job_claim(self, p: ClaimParams) -> ClaimedJobs:
        if p.limit <= 0 or not p.queues or not p.kinds:
            return ClaimedJobs()
        return await self._run(lambda s: writes.claim(s, p), what="claim")

    async def job_heartbeat_many(self, items: Sequence[HeartbeatItem]) -> HeartbeatResult:
        if not items:
            return HeartbeatResult()
        args = [writes.heartbeat_args(item) for item in items]
        return await self._run(lambda s: writes.heartbeat(s, args), what="heartbeat")

    async def job_finish_many(self, items: Sequence[FinishItem]) -> list[FinishResult]:
        if not items:
            return []
        args = [_finish_args(item) for item in items]
        return await self._run(lambda s: writes.finish(s, args), what="finish")

    async def job_log_append(self, lines: Sequence[LogAppend]) -> None:
        if lines:
            await self._run(lambda s: writes.log_append(s, lines), what="log append")

    # -- maintenance ----------------------------------------------------------------------------

    async def job_reap_expired(self) -> ReapResult:
        return await self._run(maintenance.reap_expired, what="reap")

    async def job_promote_due(self) -> int:
        return await self._run(maintenance.promote_due, what="promote")

    async def job_prune(self, p: PruneParams) -> int:
        if p.limit <= 0 or not p.states:
            return 0
        return await self._run(lambda s: maintenance.prune(s, p), what="prune")

    async def rate_buckets_prune(self) -> int:
        return await self._run(maintenance.rate_buckets_prune, what="bucket pruning")

    async def leader_elect(self, p: LeaderParams) -> bool:
        return await self._run(lambda s: maintenance.leader_elect(s, p), what="leader election")

    async def leader_resign(self, p: LeaderParams) -> None:
        await self._run(lambda s: maintenance.leader_resign(s, p), what="leader resignation")

    # -- operators ------------------------------------------------------------------------------

    async def job_get(self, job_id: str) -> Job | None:
        return await self._run(lambda s: admin.get_job(s, job_id), what="get")

    async def job_list(self, p: ListParams) -> JobPage:
        if p.limit < 1:
            raise ValueError(f"limit must be at least 1, not {p.limit}")
        admin.parse_cursor(p.cursor)  # a bad cursor fails here, before any round trip
        return await self._run(lambda s: admin.list_jobs(s, p), what="list")

    async def job_cancel(self, job_id: str) -> Job:
        return await self._run(lambda s: admin.cancel_job(s, job_id), what="cancel", retry=False)

    async def job_requeue(self, p: RequeueParams) -> list[Job]:
        job_id = p.job_id
        if job_id is not None:
            return await self._run(lambda s: admin.requeue_one(s, job_id), what="requeue", retry=False)
        if not set(p.states) <= JobState.requeueable():
            wrong = sorted(str(s) for s in set(p.states) - JobState.requeueable())
            raise ValueError(f"only dead, failed or cancelled jobs can be requeued, not {', '.join(wrong)}")
        if not p.states:
            return []
        return await self._run(
            lambda s: admin.requeue_many(s, p.states, p.queue), what="requeue", retry=False
        )

    async def job_purge(self, p: PurgeParams) -> int:
        if JobState.RUNNING in p.states:
            raise ValueError("running jobs cannot be purged: cancel them first")
        if not p.states:
            return 0
        return await self._run(lambda s: admin.purge_jobs(s, p.states, p.queue), what="purge", retry=False)

    async def job_logs(self, p: LogParams) -> list[LogLine]:
        if p.limit <= 0:
            return []
        return await self._run(lambda s: admin.job_logs(s, p), what="logs")

    async def queue_list(self) -> list[QueueInfo]:
        return await self._run(admin.list_queues, what="queue list")

    async def queue_pause(self, name: str) -> None:
        await self._run(lambda s: s.scripts.queue_set_paused(s.now(), name, True), what="pause")

    async def queue_resume(self, name: str) -> None:
        await self._run(lambda s: s.scripts.queue_set_paused(s.now(), name, False), what="resume")

    async def queue_limits_set(self, name: str, limits: QueueLimits) -> None:
        await self._run(lambda s: admin.set_limits(s, name, limits), what="limits")

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        info_json = worker_json(info)
        await self._run(
            lambda s: s.scripts.worker_heartbeat(s.now(), info.id, info_json), what="worker heartbeat"
        )

    async def worker_list(self) -> list[WorkerInfo]:
        return await self._run(admin.list_workers, what="worker list")

    async def worker_remove(self, worker_id: str) -> None:
        await self._run(lambda s: s.scripts.worker_remove(s.now(), worker_id), what="worker removal")

    # -- schedules ------------------------------------------------------------------------------

    async def schedule_upsert(self, p: ScheduleParams) -> Schedule:
        return await self._run(lambda s: schedules.upsert(s, p), what="schedule upsert")

    async def schedule_get(self, name: str) -> Schedule | None:
        return await self._run(lambda s: schedules.get(s, name), what="schedule get")

    async def schedule_list(self) -> list[Schedule]:
        return await self._run(schedules.list_all, what="schedule list")

    async def schedule_remove(self, name: str) -> bool:
        return await self._run(lambda s: schedules.remove(s, name), what="schedule removal")

    async def schedule_set_paused(self, name: str, paused: bool, next_run_at: datetime | None) -> Schedule:
        return await self._run(
            lambda s: schedules.set_paused(s, name, paused, next_run_at), what="schedule pause"
        )

    async def schedule_due(self, limit: int = 100) -> ScheduleDue:
        return await self._run(lambda s: schedules.due(s, limit), what="schedule due")

    async def schedule_fire(self, p: ScheduleFire) -> ScheduleFireResult:
        call = schedules.FireCall(p)  # packed once: a call sent again is the same call
        result = await self._run(call.run, what="schedule fire")
        if call.woken is not None:
            self._wake([call.woken])
        return result

    # -- workflow runs --------------------------------------------------------------------------

    async def workflow_start(self, p: WorkflowStart) -> WorkflowStarted:
        try:
            call = workflows.StartCall(p)  # checked and packed once: a call sent again is the same call
        except (InvalidJobError, InvalidWorkflowError):
            # A run that exists already is returned whatever the steps sent now (as on every backend).
            found = None if p.run_id is None else await self.workflow_get(p.run_id)
            if found is None:
                raise
            return WorkflowStarted(found, created=False)
        return await self._run(call.run_once, what="workflow start")

    async def workflow_get(self, run_id: str) -> WorkflowRun | None:
        return await self._run(lambda s: workflows.get(s, run_id), what="workflow get")

    async def workflow_list(self, p: WorkflowListParams) -> WorkflowPage:
        if p.limit < 1:
            raise ValueError(f"limit must be at least 1, got {p.limit}")
        workflows.parse_cursor(p.cursor)  # a bad cursor fails here, before any round trip
        return await self._run(lambda s: workflows.list_runs(s, p), what="workflow list")

    async def workflow_cancel(self, run_id: str) -> WorkflowRun:
        # Safe to send again: a second cancel finds the same run (see workflow_cancel.lua).
        return await self._run(lambda s: workflows.cancel(s, run_id), what="workflow cancel")

    async def workflow_retry_step(self, run_id: str, step: str) -> WorkflowRun:
        return await self._run(
            lambda s: workflows.retry_step(s, run_id, step), what="workflow retry", retry=False
        )

    # -- wake-ups -------------------------------------------------------------------------------

    async def notify(self, queues: Sequence[str]) -> None:
        self._wake(queues)
        message = orjson.dumps([self._origin, *queues])
        await self._run(lambda s: s.client.publish(s.keys.wake, message), what="notify", retry=False)

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> bool:
        self._wakeups.watch(queues)
        if not self._wakeups.listening:
            # Not awaited: this waiter registers at once (a local insert may come any moment), and the
            # subscription, started in the background, carries the other processes' wake-ups.
            self._thread.submit(self._listen_here())
        return await self._wakeups.notifier.wait_for_jobs(queues, timeout)

    async def _listen_here(self) -> None:
        session = self._session
        if session is not None:
            await self._wakeups.start(session.client)

    def _wake_decoded(self, queues: Sequence[bytes | str]) -> None:
        self._wake(q.decode() if isinstance(q, bytes) else q for q in queues)

    def _wake(self, queues: Iterable[str]) -> None:
        """Wake this instance's own waiters at once (other processes hear the scripts' messages)."""
        wanted = list(dict.fromkeys(queues))
        if wanted:
            self._wakeups.notifier.notify_threadsafe(wanted)


def _job_id(job: NewJob, fresh: str) -> str:
    """The client's id, or ``fresh``."""
    if job.id is None:
        return fresh
    if not job.id:
        raise InvalidJobError("id", "a job id must not be empty")
    return job.id


def _finish_args(item: FinishItem) -> writes.FinishArgs:
    """Encoded before anything is sent, so that a result JSON cannot carry changes nothing."""
    return (
        item.job_id,
        item.lease_token,
        item.outcome.value,
        encode_json(item.result, "result"),
        "" if item.error is None else error_json(item.error),
        str(duration_us(item.retry_delay)),
        "1" if item.retryable else "0",
    )
