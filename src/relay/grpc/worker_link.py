"""The worker's part of the storage seam (:class:`relay.storage.base.WorkerStorage`) carried over one
``relay.v1.Workers/Work`` stream to a Relay server: ``relay worker --connect grpc://host:port``.

The worker runtime is unchanged; what it asks storage for becomes messages:

- ``job_claim(limit)`` hands out assignments already received (up to ``limit``) and grants the server
  credit for the rest, so that credit outstanding plus assignments buffered never exceed the free
  slots the worker announced: the server never sends more than that;
- ``wait_for_jobs`` waits for an assignment to arrive (or the timeout);
- heartbeats and outcomes are requests answered by ``request_id`` within a deadline; logs, the
  worker's status and its goodbye are sent without an answer;
- ``workflow_get`` (a workflow step's inputs) is the Jobs service's unary ``GetWorkflowRun`` on the
  same channel.

The stream lives on a loop of its own thread (:class:`relay.storage.loop_thread.LoopThread`): the
worker calls in from its loop and from its heartbeat thread, and a job that blocks the worker's loop
does not hold up the stream. A broken stream is reconnected with jittered, capped backoff: hello again,
credit again for the free slots, and every request without an answer sent again (fencing by lease
token makes a repeat harmless: a repeated outcome finds no lease and records nothing). Jobs it still
holds keep being heartbeaten with their tokens. A refusal (bad token, missing scope, bad hello) is
final: :attr:`GrpcWorkerLink.fatal` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import orjson

from relay.client.grpc_wire import attempt_error_message, job_of, json_text
from relay.client.wire import workflow_run_from_json
from relay.errors import RelayError, StorageUnavailableError
from relay.grpc.v1 import relay_pb2 as pb
from relay.storage.loop_thread import LoopThread
from relay.storage.params import (
    ClaimedJobs,
    ClaimParams,
    FinishItem,
    FinishResult,
    HeartbeatItem,
    HeartbeatResult,
    LogAppend,
)
from relay.types import Job, JobKind, JobState, Outcome, WorkerInfo, WorkflowRun

log = logging.getLogger("relay.worker.grpc")

WORK_METHOD = "/relay.v1.Workers/Work"
GET_RUN_METHOD = "/relay.v1.Jobs/GetWorkflowRun"
# Refusals that no retry will change: the worker stops and says why.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # the end of a stream (missing from grpc-stubs)
UNSENT_LOG_LINES = 10_000  # output kept while the stream is down; older lines are dropped beyond


class LinkRefused(RelayError):
    """The server refused the worker stream (a bad token, a missing scope, a bad hello)."""

    code = "grpc_refused"


@dataclass(frozen=True)
class LinkConfig:
    target: str  # host:port
    worker_id: str
    queues: tuple[str, ...]
    kinds: tuple[JobKind, ...]
    slots: int
    host: str
    pid: int
    secure: bool = False
    token: str | None = None
    root_cert: bytes | None = None  # PEM: the CA that signed the server's certificate (TLS)
    connect_timeout: float = 30.0  # seconds open() waits for the first welcome
    heartbeat_timeout: float = 10.0
    finish_timeout: float = 30.0
    backoff_first: float = 0.1
    backoff_cap: float = 5.0


def parse_connect_url(url: str) -> tuple[str, bool]:
    """``grpc://host:port`` (plain) or ``grpcs://host:port`` (TLS): the target and whether TLS."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("grpc", "grpcs") or not rest.strip("/"):
        raise ValueError(f"--connect wants grpc://host:port or grpcs://host:port, not {url!r}")
    target = rest.strip("/")
    if ":" not in target.rsplit("]", 1)[-1]:
        target += ":50051"
    return target, scheme == "grpcs"


class GrpcWorkerLink:
    """A :class:`relay.storage.base.WorkerStorage` over one worker stream."""

    def __init__(self, config: LinkConfig, on_fatal: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.fatal: str | None = None  # why the server refused the stream, once it did
        self.on_fatal = on_fatal  # called (from the link's thread) when a refusal ends the stream
        self._thread = LoopThread("relay-grpc-link", f"the gRPC link to {config.target}")
        self._ids = itertools.count(1)
        # Owned by the link's loop:
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None  # the open stream (grpc.aio.StreamStreamCall) once welcomed
        self._write_lock: asyncio.Lock | None = None
        self._connected: asyncio.Event | None = None
        self._arrived: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._buffer: list[Job] = []  # assignments received, not yet handed to the worker
        self._wanted = 0  # the worker's free slots at its last claim, less what it was handed
        self._outstanding = 0  # credit granted on this stream and not yet used by the server
        self._pending: dict[int, tuple[pb.WorkerMessage, asyncio.Future[pb.ServerMessage]]] = {}
        self._unsent_logs: list[pb.LogLine] = []
        self._leaving = False
        self._closing = False
        self._last_error = "no answer yet"
        self._welcomed = False  # the current stream was welcomed (the backoff starts over after it)

    # -- lifecycle (called from the worker's loop) --------------------------------------------------

    async def open(self) -> None:
        """Connect and wait for the server's welcome; a refusal raises :class:`LinkRefused`, a server
        that cannot be reached within ``connect_timeout`` StorageUnavailableError."""
        if self._thread.start():
            await self._thread.call(self._open())

    async def close(self) -> None:
        if self._thread.running:
            with contextlib.suppress(RelayError):
                await self._thread.call(self._close())
            self._thread.stop()

    # -- the seam -----------------------------------------------------------------------------------

    async def job_claim(self, p: ClaimParams) -> ClaimedJobs:
        return await self._thread.call(self._claim(p.limit))

    async def wait_for_jobs(self, queues: Sequence[str], timeout: float) -> bool:
        return await self._thread.call(self._wait(timeout))

    async def job_heartbeat_many(self, items: Sequence[HeartbeatItem]) -> HeartbeatResult:
        return await self._thread.call(self._heartbeat(list(items)))

    async def job_finish_many(self, items: Sequence[FinishItem]) -> list[FinishResult]:
        return await self._thread.call(self._finish(list(items)))

    async def job_log_append(self, lines: Sequence[LogAppend]) -> None:
        await self._thread.call(self._logs(list(lines)))

    async def worker_heartbeat(self, info: WorkerInfo) -> None:
        message = pb.WorkerMessage(status=pb.WorkerStatus(running=list(info.running)))
        await self._thread.call(self._send(message))

    async def worker_remove(self, worker_id: str) -> None:
        await self._thread.call(self._goodbye())

    async def workflow_get(self, run_id: str) -> WorkflowRun | None:
        return await self._thread.call(self._get_run(run_id))

    # -- on the link's loop: connecting -------------------------------------------------------------

    async def _open(self) -> None:
        c = self.config
        options = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]
        if c.secure:
            credentials = grpc.ssl_channel_credentials(root_certificates=c.root_cert)
            self._channel = grpc.aio.secure_channel(c.target, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(c.target, options=options)
        self._write_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._arrived = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise())
        connected = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait(
                {connected, self._supervisor}, timeout=c.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            connected.cancel()
        if self.fatal is not None:
            raise LinkRefused(self.fatal)
        if not self._connected.is_set():
            raise StorageUnavailableError(f"cannot reach the Relay server at {c.target}: {self._last_error}")

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.config.token}")] if self.config.token else []

    async def _supervise(self) -> None:
        delay = self.config.backoff_first
        while not self._closing:
            self._welcomed = False
            try:
                await self._session()
            except grpc.aio.AioRpcError as exc:
                if exc.code() in FATAL_CODES:
                    self._refused(f"the server refused the worker stream: {exc.code().name}: {exc.details()}")
                    return
                self._last_error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:  # a stream that broke in any other way: reconnect all the same
                self._last_error = f"{type(exc).__name__}: {exc}"
            self._disconnected()
            if self._closing:
                return
            if self._welcomed:
                delay = self.config.backoff_first
                log.warning("the stream to %s broke (%s); reconnecting", self.config.target, self._last_error)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # full jitter keeps a fleet apart
            delay = min(delay * 2, self.config.backoff_cap)

    async def _session(self) -> None:
        """One stream, from hello to its end (``_welcomed`` once the server said welcome)."""
        assert self._channel is not None
        assert self._connected is not None
        c = self.config
        # grpc-stubs types the aio stream call loosely: Any here, the messages typed below.
        work: Any = self._channel.stream_stream(
            WORK_METHOD,
            request_serializer=pb.WorkerMessage.SerializeToString,
            response_deserializer=pb.ServerMessage.FromString,
        )
        call = work(metadata=self._metadata())
        hello = pb.Hello(
            worker_id=c.worker_id,
            queues=list(c.queues),
            types=[k.value for k in c.kinds],
            slots=c.slots,
            host=c.host,
            pid=c.pid,
        )
        try:
            await call.write(pb.WorkerMessage(hello=hello))
            first: pb.ServerMessage = await call.read()
            if first is EOF or first.WhichOneof("body") != "welcome":
                self._last_error = "the server ended the stream without a welcome"
                return
            self._welcomed = True
            self._call = call
            self._connected.set()
            log.info("worker stream to %s open", c.target)
            await self._resend()
            while True:
                message: pb.ServerMessage = await call.read()
                if message is EOF:
                    self._last_error = "the server ended the stream"
                    return
                self._dispatch(message)
        finally:
            call.cancel()

    def _refused(self, reason: str) -> None:
        self.fatal = reason
        log.error("%s", reason)
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(LinkRefused(reason))
        if self.on_fatal is not None and self._connected is not None and self._connected.is_set():
            self.on_fatal(reason)

    def _disconnected(self) -> None:
        self._call = None
        if self._connected is not None:
            self._connected.clear()
        self._outstanding = 0  # a new stream starts with no credit

    async def _resend(self) -> None:
        """After a (re)connect: the output kept meanwhile, every unanswered request, credit."""
        if self._unsent_logs:
            lines, self._unsent_logs = self._unsent_logs, []
            await self._send(pb.WorkerMessage(logs=pb.LogChunk(lines=lines)))
        for message, future in list(self._pending.values()):
            if not future.done():
                await self._send(message)
        await self._grant()

    # -- on the link's loop: messages ---------------------------------------------------------------

    def _dispatch(self, message: pb.ServerMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "assignments":
            jobs = [replace(job_of(a.job), lease_token=a.lease_token) for a in message.assignments.jobs]
            self._outstanding = max(0, self._outstanding - len(jobs))
            self._buffer.extend(jobs)
            assert self._arrived is not None
            self._arrived.set()
        elif kind in ("heartbeat", "finish"):
            request_id = message.heartbeat.request_id if kind == "heartbeat" else message.finish.request_id
            entry = self._pending.get(request_id)
            if entry is not None and not entry[1].done():
                entry[1].set_result(message)

    async def _send(self, message: pb.WorkerMessage) -> bool:
        """Write to the open stream; False when there is none (or it just broke): the reconnect
        sends again what needs it."""
        call = self._call
        if call is None or self._write_lock is None:
            return False
        try:
            async with self._write_lock:
                await call.write(message)
            return True
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError):
            return False

    async def _grant(self) -> None:
        """Credit for the free slots that neither an assignment buffered nor credit outstanding covers."""
        if self._leaving or self._call is None:
            return
        grant = self._wanted - self._outstanding - len(self._buffer)
        if grant > 0:
            self._outstanding += grant
            if not await self._send(pb.WorkerMessage(credit=pb.Credit(slots=grant))):
                self._outstanding -= grant

    async def _claim(self, limit: int) -> ClaimedJobs:
        self._check()
        handed, self._buffer = self._buffer[:limit], self._buffer[limit:]
        self._wanted = max(0, limit - len(handed))
        await self._grant()
        return ClaimedJobs(handed)

    async def _wait(self, timeout: float) -> bool:
        assert self._arrived is not None
        if not self._arrived.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
        woken = self._arrived.is_set()
        self._arrived.clear()
        return woken

    async def _request(self, message: pb.WorkerMessage, request_id: int, timeout: float) -> pb.ServerMessage:
        self._check()
        future: asyncio.Future[pb.ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (message, future)
        try:
            await self._send(message)  # not sent now: sent when the stream is back
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise StorageUnavailableError(
                f"no answer from the Relay server at {self.config.target} within {timeout:.0f}s"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _heartbeat(self, items: list[HeartbeatItem]) -> HeartbeatResult:
        request_id = next(self._ids)
        body = pb.HeartbeatRequest(
            request_id=request_id,
            items=[
                pb.HeartbeatItem(
                    job_id=i.job_id,
                    lease_token=i.lease_token,
                    progress=json_text(i.progress),
                    save_checkpoint=i.save_checkpoint,
                    checkpoint=json_text(i.checkpoint) if i.save_checkpoint else "",
                )
                for i in items
            ],
        )
        reply = await self._request(
            pb.WorkerMessage(heartbeat=body), request_id, self.config.heartbeat_timeout
        )
        beat = reply.heartbeat
        return HeartbeatResult(
            frozenset(beat.extended), frozenset(beat.lost), frozenset(beat.cancel_requested)
        )

    async def _finish(self, items: list[FinishItem]) -> list[FinishResult]:
        request_id = next(self._ids)
        body = pb.FinishRequest(request_id=request_id)
        for item in items:  # in place: building each and copying it in cost as much again
            _fill_outcome(body.items.add(), item)
        reply = await self._request(pb.WorkerMessage(finish=body), request_id, self.config.finish_timeout)
        states = {r.job_id: (JobState(r.state) if r.state else None) for r in reply.finish.results}
        return [FinishResult(i.job_id, states.get(i.job_id)) for i in items]

    async def _logs(self, lines: list[LogAppend]) -> None:
        chunk = [pb.LogLine(job_id=x.job_id, attempt=x.attempt, stream=x.stream, text=x.text) for x in lines]
        if not await self._send(pb.WorkerMessage(logs=pb.LogChunk(lines=chunk))):
            self._unsent_logs = (self._unsent_logs + chunk)[-UNSENT_LOG_LINES:]

    async def _goodbye(self) -> None:
        """The worker is leaving: no more credit; the server drops its registration."""
        self._leaving = True
        await self._send(pb.WorkerMessage(goodbye=pb.Goodbye()))

    async def _get_run(self, run_id: str) -> WorkflowRun | None:
        assert self._channel is not None
        get = self._channel.unary_unary(
            GET_RUN_METHOD,
            request_serializer=pb.GetWorkflowRunRequest.SerializeToString,
            response_deserializer=pb.WorkflowRun.FromString,
        )
        try:
            run = await get(pb.GetWorkflowRunRequest(id=run_id), metadata=self._metadata(), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise StorageUnavailableError(
                f"reading workflow run {run_id}: {exc.code().name}: {exc.details()}"
            ) from None
        return workflow_run_from_json(_json_object(run.json))

    async def _close(self) -> None:
        """Give back what was assigned and never handed out, end the stream, close the channel."""
        self._leaving = True
        unrun, self._buffer = self._buffer, []
        if unrun and self._call is not None:
            items = [FinishItem(j.id, j.lease_token or "", Outcome.RELEASED) for j in unrun]
            with contextlib.suppress(RelayError):
                await self._finish(items)
        self._closing = True
        call = self._call
        if call is not None:
            with contextlib.suppress(Exception):
                await call.done_writing()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(BaseException):
                await self._supervisor
        if self._channel is not None:
            await self._channel.close(None)

    def _check(self) -> None:
        if self.fatal is not None:
            raise LinkRefused(self.fatal)


def _fill_outcome(message: pb.Outcome, item: FinishItem) -> None:
    message.job_id = item.job_id
    message.lease_token = item.lease_token
    message.outcome = item.outcome.value
    message.result = json_text(item.result)
    message.retry_delay = item.retry_delay
    message.retryable = item.retryable
    if item.error is not None:
        message.error.CopyFrom(attempt_error_message(item.error))


def _json_object(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    assert isinstance(value, dict)
    return value
