"""The operators' part of the storage seam, over the HTTP API: what the CLI needs to run every command
against a remote server (``--server URL`` / ``RELAY_SERVER_URL`` with ``RELAY_TOKEN``).

It lives in the CLI, not in ``relay.client``, because it imports ``relay.jobs`` and ``relay.storage``
(which the HTTP client itself must not): ``CliState`` builds its Relay on a ``RemoteStorage`` instead of
a backend, and every command that reads or steers jobs works unchanged. Worker operations (claim,
heartbeat, finish) are not part of the API: ``relay worker`` always talks to storage directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from relay.client import AsyncRelayClient
from relay.client.wire import limits_to_json
from relay.errors import ConfigurationError, JobNotFoundError, ScheduleNotFoundError
from relay.jobs.document import document_from_job
from relay.storage.params import (
    InsertResult,
    JobPage,
    ListParams,
    LogParams,
    PurgeParams,
    RequeueParams,
    ScheduleParams,
)
from relay.types import Job, JobState, LogLine, NewJob, QueueInfo, QueueLimits, Schedule, WorkerInfo

_DLQ = (JobState.DEAD,)


class RemoteStorage:
    """``job_get``, ``job_list``, ``job_logs``, ``job_cancel``, ``job_requeue``, ``job_purge``,
    ``job_insert_many``, ``queue_list``, ``queue_pause``, ``queue_resume``, ``queue_limits_set``,
    ``schedule_list``, ``schedule_get``, ``schedule_upsert``, ``schedule_remove``,
    ``schedule_set_paused`` and ``worker_list`` of :class:`relay.storage.base.Storage`, with the same
    meaning, through a server."""

    def __init__(self, client: AsyncRelayClient) -> None:
        self.client = client

    async def open(self) -> None:
        await self.client.ready()  # an unreachable server fails here, with one line

    async def close(self) -> None:
        await self.client.aclose()

    async def job_get(self, job_id: str) -> Job | None:
        try:
            return await self.client.get(job_id)
        except JobNotFoundError:
            return None

    async def job_list(self, p: ListParams) -> JobPage:
        page = await self.client.list_jobs(
            states=[s.value for s in p.states],
            queues=list(p.queues),
            kinds=[k.value for k in p.kinds],
            text=p.text,
            limit=min(p.limit, 1000),  # the API's page size limit; the cursor gives the rest
            cursor=p.cursor,
        )
        return JobPage(page.jobs, page.next_cursor)

    async def job_logs(self, p: LogParams) -> list[LogLine]:
        return await self.client.logs(p.job_id, attempt=p.attempt, after_seq=p.after_seq, limit=p.limit)

    async def job_cancel(self, job_id: str) -> Job:
        return await self.client.cancel(job_id)

    async def job_requeue(self, p: RequeueParams) -> list[Job]:
        if p.job_id is not None:
            return [await self.client.retry(p.job_id)]
        if tuple(p.states) != _DLQ:
            raise ConfigurationError("through a server, only dead jobs are requeued in bulk")
        return [await self.client.get(job_id) for job_id in await self.client.dlq_requeue_all(p.queue)]

    async def job_purge(self, p: PurgeParams) -> int:
        if tuple(p.states) != _DLQ:
            raise ConfigurationError("through a server, only dead jobs are purged")
        return await self.client.dlq_purge(p.queue)

    async def job_insert_many(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        enqueued = await self.client.enqueue_many([document_from_job(job) for job in jobs])
        return [InsertResult(e.job, e.created) for e in enqueued]

    async def queue_list(self) -> list[QueueInfo]:
        return await self.client.queues()

    async def queue_pause(self, name: str) -> None:
        await self.client.pause_queue(name)

    async def queue_resume(self, name: str) -> None:
        await self.client.resume_queue(name)

    async def queue_limits_set(self, name: str, limits: QueueLimits) -> None:
        await self.client.set_queue_limits(name, limits_to_json(limits))

    async def schedule_list(self) -> list[Schedule]:
        return await self.client.schedules()

    async def schedule_get(self, name: str) -> Schedule | None:
        try:
            return await self.client.schedule(name)
        except ScheduleNotFoundError:
            return None

    async def schedule_upsert(self, p: ScheduleParams) -> Schedule:
        """Create or redefine the schedule. The server computes its next run from the spec by its own
        clock: ``p.next_run_at`` is not sent."""
        document = {
            "name": p.name,
            "schedule": p.spec,
            "timezone": p.timezone,
            "catch_up": p.catch_up.value,
            "job": document_from_job(p.job),
        }
        return await self.client.put_schedule(p.name, document)

    async def schedule_remove(self, name: str) -> bool:
        try:
            await self.client.remove_schedule(name)
        except ScheduleNotFoundError:
            return False
        return True

    async def schedule_set_paused(self, name: str, paused: bool, next_run_at: datetime | None) -> Schedule:
        """Pause or resume the schedule; ScheduleNotFoundError when there is none. ``next_run_at`` is
        ignored: on resume the server computes the next run itself (the next tick after its now), as
        :func:`relay.runtime.schedules.set_paused` does locally."""
        if paused:
            return await self.client.pause_schedule(name)
        return await self.client.resume_schedule(name)

    async def worker_list(self) -> list[WorkerInfo]:
        return await self.client.workers()
