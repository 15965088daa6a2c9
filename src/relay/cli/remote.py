"""The operators' part of the storage seam, over the HTTP API: what the CLI needs to run every command
against a remote server (``--server URL`` / ``RELAY_SERVER_URL`` with ``RELAY_TOKEN``).

It lives in the CLI, not in ``relay.client``, because it imports ``relay.jobs`` and ``relay.storage``
(which the HTTP client itself must not): ``CliState`` builds its Relay on a ``RemoteStorage`` instead of
a backend, and every command that reads or steers jobs works unchanged. Worker operations (claim,
heartbeat, finish) are not part of the API: ``relay worker`` always talks to storage directly.

Over gRPC (``--server grpc://host:50051``), :class:`GrpcRemoteStorage` has the job operations only
(submit, list, status, logs, cancel, retry): the gRPC API has no queues, schedules or workers, and a
command that needs them says to use the server's HTTP URL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, NoReturn, Protocol, TypeVar

from relay.client import AsyncGrpcRelayClient, AsyncRelayClient, Enqueued, Page
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


class JobClient(Protocol):
    """What the HTTP and the gRPC client both have: the job operations."""

    async def ready(self) -> bool: ...
    async def aclose(self) -> None: ...
    async def get(self, job_id: str) -> Job: ...
    async def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        queues: Sequence[str] = (),
        kinds: Sequence[str] = (),
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page: ...
    async def logs(
        self, job_id: str, *, attempt: int | None = None, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogLine]: ...
    async def cancel(self, job_id: str) -> Job: ...
    async def retry(self, job_id: str) -> Job: ...
    async def enqueue_many(self, documents: Iterable[Mapping[str, Any]]) -> list[Enqueued]: ...


C = TypeVar("C", bound=JobClient)


class RemoteJobs(Generic[C]):
    """``job_get``, ``job_list``, ``job_logs``, ``job_cancel``, ``job_requeue`` (of one job) and
    ``job_insert_many`` of :class:`relay.storage.base.Storage`, with the same meaning, through a
    server's client of either transport."""

    def __init__(self, client: C) -> None:
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
        if p.job_id is None:
            raise ConfigurationError("through a gRPC server, jobs are requeued one by one")
        return [await self.client.retry(p.job_id)]

    async def job_insert_many(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        enqueued = await self.client.enqueue_many([document_from_job(job) for job in jobs])
        return [InsertResult(e.job, e.created) for e in enqueued]


class GrpcRemoteStorage(RemoteJobs[AsyncGrpcRelayClient]):
    """The job operations over gRPC; the operators' other ones refuse with one line."""

    def __getattr__(self, name: str) -> NoReturn:
        if name in _HTTP_ONLY:
            raise ConfigurationError(
                "this command needs the HTTP API, which has queues, schedules, workers and the DLQ: "
                "give the server's http:// URL to --server"
            )
        raise AttributeError(name)


_HTTP_ONLY = frozenset(
    {
        "job_purge",
        "queue_list",
        "queue_pause",
        "queue_resume",
        "queue_limits_set",
        "schedule_list",
        "schedule_get",
        "schedule_upsert",
        "schedule_remove",
        "schedule_set_paused",
        "worker_list",
    }
)


class RemoteStorage(RemoteJobs[AsyncRelayClient]):
    """:class:`RemoteJobs`, and ``job_requeue`` of the DLQ, ``job_purge``, ``queue_list``,
    ``queue_pause``, ``queue_resume``, ``queue_limits_set``, ``schedule_list``, ``schedule_get``,
    ``schedule_upsert``, ``schedule_remove``, ``schedule_set_paused`` and ``worker_list``, through
    the HTTP API."""

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
