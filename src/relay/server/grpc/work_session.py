"""One worker's stream, server side: claims for it within its credit, and carries its heartbeats,
outcomes, logs and status to storage.

Tasks per stream, so that a slow claim never delays a heartbeat:

- the reader (:meth:`WorkSession.read`) reads messages in order; credit is counted at once, every
  storage call runs in a task of its own (logs in one task, in order);
- the claimer claims up to the credit (at most ``CLAIM_BATCH`` at a time) and sends the jobs; with
  nothing claimable it waits on ``storage.wait_for_jobs`` (a poll interval at most, less when a rate
  limit says when a token is due): no busy loop;
- a job's outcome is recorded only after the log lines that came before it on the stream.

Fencing is storage's (by lease token). A stream that breaks releases nothing: its jobs' leases run out,
or its worker reconnects and heartbeats them. Only jobs claimed for an assignment that could not be
sent are given back at once (released: the attempt does not count).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC
from typing import Any

import grpc

from relay.client.grpc_wire import fill_job_message
from relay.errors import StorageUnavailableError
from relay.grpc.v1 import relay_pb2 as pb
from relay.server.grpc.work_messages import (
    BadMessage,
    HelloInfo,
    finish_items,
    finish_reply,
    heartbeat_items,
    heartbeat_reply,
)
from relay.server.state import ServerState
from relay.storage.params import ClaimParams, FinishItem, LogAppend
from relay.types import Job, Outcome, WorkerInfo

log = logging.getLogger("relay.server.grpc.work")

CLAIM_BATCH = 500  # jobs per claim: one round trip, and one message of a reasonable size
CLAIM_ERROR_PAUSE = 1.0  # seconds before claiming again after a claim failed

# Tasks of streams that ended still record what they received: the loop keeps only weak references.
_background: set[asyncio.Task[None]] = set()


class StreamFailed(Exception):
    """End the stream with this status (storage unavailable: the worker reconnects and re-sends)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class WorkSession:
    def __init__(
        self, state: ServerState, hello: HelloInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self._state = state
        self._storage = state.storage
        self.hello = hello
        self._context = context
        self._started_at = state.now()
        self._credit = 0
        self._credit_added = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._failure: StreamFailed | None = None
        self._failed = asyncio.Event()
        self._logs: asyncio.Queue[list[LogAppend]] = asyncio.Queue()
        self._logs_queued = 0
        self._logs_done = 0
        self._logs_progress = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._claimer: asyncio.Task[None] | None = None

    @property
    def poll_interval(self) -> float:
        return self._state.relay.settings.poll_interval

    async def run(self, requests: AsyncIterator[pb.WorkerMessage]) -> None:
        """Serve the stream until the worker ends it; raises :class:`StreamFailed` or BadMessage."""
        await self._register(())
        self._claimer = asyncio.create_task(self._claim_loop())
        logger = asyncio.create_task(self._log_loop())
        reader = asyncio.create_task(self.read(requests))
        failed = asyncio.create_task(self._failed.wait())
        try:
            await asyncio.wait({reader, failed}, return_when=asyncio.FIRST_COMPLETED)
            if self._failure is not None:
                raise self._failure
            await reader  # re-raises BadMessage
            # The worker closed its side: answer what it asked before the stream ends.
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            if self._failure is not None:
                raise self._failure
        finally:
            for task in (reader, failed, self._claimer):
                task.cancel()
            # The log writer ends once it has stored what it received.
            self._logs.put_nowait([])
            _keep(logger)

    async def read(self, requests: AsyncIterator[pb.WorkerMessage]) -> None:
        async for message in requests:
            kind = message.WhichOneof("body")
            if kind == "credit":
                self._credit = min(self._credit + max(0, message.credit.slots), self.hello.slots)
                self._credit_added.set()
            elif kind == "heartbeat":
                items = heartbeat_items(message.heartbeat)
                self._spawn(self._heartbeat(message.heartbeat.request_id, items))
            elif kind == "finish":
                finished = finish_items(message.finish)
                self._spawn(self._finish(message.finish.request_id, finished, self._logs_queued))
            elif kind == "logs":
                self._queue_logs(message.logs)
            elif kind == "status":
                self._spawn(self._register(tuple(message.status.running)))
            elif kind == "goodbye":
                self._leave()
            elif kind == "hello":
                raise BadMessage("hello", "a stream says hello once")

    # -- claiming ---------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        hello = self.hello
        while True:
            while self._credit <= 0:
                self._credit_added.clear()
                await self._credit_added.wait()
            limit = min(self._credit, CLAIM_BATCH)
            try:
                jobs = await self._storage.job_claim(
                    ClaimParams(hello.queues, hello.worker_id, limit, hello.kinds)
                )
            except Exception:
                log.exception("claim for gRPC worker %s failed; trying again", hello.worker_id)
                await asyncio.sleep(CLAIM_ERROR_PAUSE)
                continue
            if jobs:
                self._credit -= len(jobs)
                await self._send_assignments(jobs)
                continue
            timeout = self.poll_interval
            if jobs.retry_after is not None:
                timeout = min(timeout, jobs.retry_after)
            await self._storage.wait_for_jobs(hello.queues, timeout)

    async def _send_assignments(self, jobs: list[Job]) -> None:
        message = pb.ServerMessage()
        for job in jobs:  # built in place: a copy of each job into the message cost a third more
            assignment = message.assignments.jobs.add()
            fill_job_message(assignment.job, job)
            assignment.lease_token = job.lease_token or ""
            if job.lease_expires_at is not None:
                assignment.lease_expires_at.FromDatetime(job.lease_expires_at.astimezone(UTC))
        try:
            await self._write(message)
        except BaseException:
            # Never reached the worker: give them back now rather than after their leases.
            release = [FinishItem(j.id, j.lease_token or "", Outcome.RELEASED) for j in jobs]
            _keep(asyncio.ensure_future(self._release(release)))
            raise

    async def _release(self, items: list[FinishItem]) -> None:
        try:
            await self._storage.job_finish_many(items)
        except Exception:
            log.exception("could not release %d unsent jobs; their leases will expire", len(items))

    def _leave(self) -> None:
        """Goodbye: no more assignments; the worker's registration goes."""
        if self._claimer is not None:
            self._claimer.cancel()
        self._credit = 0
        self._spawn(self._storage.worker_remove(self.hello.worker_id))

    # -- requests ---------------------------------------------------------------------------------

    async def _heartbeat(self, request_id: int, items: list[Any]) -> None:
        result = await self._storage.job_heartbeat_many(items)
        await self._write(heartbeat_reply(request_id, result))

    async def _finish(self, request_id: int, items: list[FinishItem], logs_before: int) -> None:
        async with self._logs_progress:
            await self._logs_progress.wait_for(lambda: self._logs_done >= logs_before)
        results = await self._storage.job_finish_many(items)
        await self._write(finish_reply(request_id, results))

    async def _register(self, running: tuple[str, ...]) -> None:
        hello = self.hello
        info = WorkerInfo(
            hello.worker_id,
            hello.host,
            hello.pid,
            hello.queues,
            hello.slots,
            self._started_at,
            self._state.now(),
            running,
        )
        await self._storage.worker_heartbeat(info)

    # -- logs -------------------------------------------------------------------------------------

    def _queue_logs(self, chunk: pb.LogChunk) -> None:
        lines = [
            LogAppend(line.job_id, line.attempt, line.stream or "stdout", line.text) for line in chunk.lines
        ]
        if lines:
            self._logs_queued += 1
            self._logs.put_nowait(lines)

    async def _log_loop(self) -> None:
        while lines := await self._logs.get():
            try:
                await self._storage.job_log_append(lines)
            except Exception:
                # Output is worth less than outcomes: lose it, never hold the outcome that follows.
                log.exception(
                    "could not store %d log lines of gRPC worker %s", len(lines), self.hello.worker_id
                )
            async with self._logs_progress:
                self._logs_done += 1
                self._logs_progress.notify_all()

    # -- plumbing ---------------------------------------------------------------------------------

    async def _write(self, message: pb.ServerMessage) -> None:
        async with self._write_lock:
            await self._context.write(message)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        _keep(task)

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        """A request's storage call: storage unavailable ends the stream (the worker reconnects and
        sends again what has no answer); a stream that is gone only loses the answer."""
        try:
            await coro
        except StorageUnavailableError as exc:
            self._fail(StreamFailed(grpc.StatusCode.UNAVAILABLE, f"storage unavailable: {exc}"))
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError):
            pass
        except Exception as exc:
            if self._context.done():
                return
            log.exception("a request of gRPC worker %s failed", self.hello.worker_id)
            self._fail(StreamFailed(grpc.StatusCode.INTERNAL, f"the server failed: {type(exc).__name__}"))

    def _fail(self, failure: StreamFailed) -> None:
        if self._failure is None:
            self._failure = failure
            self._failed.set()


def _keep(task: asyncio.Future[None]) -> None:
    if isinstance(task, asyncio.Task):
        _background.add(task)
        task.add_done_callback(_background.discard)
