"""The gRPC client, sync (:class:`GrpcRelayClient`) and async (:class:`AsyncGrpcRelayClient`): the job
API of ``relay.v1.Jobs`` with the method names, arguments and return types of the HTTP clients
(:class:`relay.client.RelayClient`) where they overlap, and the same exceptions for the same errors;
plus :meth:`watch`, a stream of a job's (or a queue's) state changes.

>>> from relay.client import GrpcRelayClient
>>> with GrpcRelayClient("grpc://127.0.0.1:50051", token="...") as relay:  # doctest: +SKIP
...     job = relay.enqueue({"type": "shell", "payload": {"command": "echo hi"}}).job
...     [j.state.value for j in relay.watch(job.id)]
['pending', 'running', 'completed']

``grpcs://`` (or ``tls=True``) talks TLS, trusting ``root_certificates`` (PEM bytes), else the file
of RELAY_GRPC_TLS_CA, else the system's roots. Without a URL: RELAY_SERVER_URL when it is a gRPC URL,
else ``grpc://127.0.0.1:50051``; the token defaults to RELAY_TOKEN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from relay.client import grpc_calls as calls
from relay.client.calls import Enqueued, Page
from relay.client.errors import ApiError
from relay.client.grpc_calls import GrpcCall, Target
from relay.types import Job, LogLine, WorkflowRun

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0  # seconds for one call (a watch has none)


class GrpcRelayClient:
    """Talks to a Relay server over gRPC; every failure raises a :class:`relay.errors.RelayError`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
    ) -> None:
        self.target: Target = calls.target(url, token, tls, root_certificates)
        self.timeout = timeout
        if self.target.tls:
            self._channel = grpc.secure_channel(self.target.address, self.target.credentials())
        else:
            self._channel = grpc.insecure_channel(self.target.address)

    def __enter__(self) -> GrpcRelayClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def send(self, call: GrpcCall[T]) -> T:
        method = self._channel.unary_unary(
            call.path,
            request_serializer=type(call.request).SerializeToString,
            response_deserializer=call.response.FromString,
        )
        try:
            reply = method(call.request, timeout=self.timeout, metadata=self.target.metadata)
        except grpc.RpcError as exc:
            raise calls.error_of(exc, self.target, call.job_id) from None
        return call.decode(reply)

    def stream(self, call: GrpcCall[T]) -> Iterator[T]:
        method = self._channel.unary_stream(
            call.path,
            request_serializer=type(call.request).SerializeToString,
            response_deserializer=call.response.FromString,
        )
        replies = method(call.request, metadata=self.target.metadata)
        try:
            for reply in replies:
                yield call.decode(reply)
        except grpc.RpcError as exc:
            raise calls.error_of(exc, self.target, call.job_id) from None
        finally:
            replies.cancel()  # type: ignore[no-untyped-call]  # the caller stopped: end the call

    def enqueue(self, document: Mapping[str, Any]) -> Enqueued:
        return self.send(calls.enqueue(document))

    def enqueue_many(self, documents: Iterable[Mapping[str, Any]]) -> list[Enqueued]:
        return self.send(calls.enqueue_many(documents))

    def get(self, job_id: str) -> Job:
        return self.send(calls.get(job_id))

    def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        queues: Sequence[str] = (),
        kinds: Sequence[str] = (),
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        call = calls.list_jobs(
            states=states, queues=queues, kinds=kinds, text=text, limit=limit, cursor=cursor
        )
        return self.send(call)

    def logs(
        self, job_id: str, *, attempt: int | None = None, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogLine]:
        return self.send(calls.logs(job_id, attempt=attempt, after_seq=after_seq, limit=limit))

    def cancel(self, job_id: str) -> Job:
        return self.send(calls.cancel(job_id))

    def retry(self, job_id: str) -> Job:
        return self.send(calls.retry(job_id))

    def watch(self, job_id: str | None = None, *, queue: str | None = None) -> Iterator[Job]:
        """The job now, then after each change of its state, until it is final; or (``queue``) each
        job of the queue as it changes, until the caller stops reading."""
        return self.stream(calls.watch(job_id, queue))

    def get_workflow_run(self, run_id: str) -> WorkflowRun:
        return self.send(calls.workflow_run(run_id))

    def ready(self) -> bool:
        """True once the server answers (and accepts the token); raises ServerUnavailableError
        when it cannot be reached."""
        try:
            return self.send(calls.ready())
        except ApiError as exc:
            if calls.is_ready_refusal(exc):
                return True
            raise


class AsyncGrpcRelayClient:
    """The asynchronous twin of :class:`GrpcRelayClient` (same arguments, same methods, awaited)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
    ) -> None:
        self.target: Target = calls.target(url, token, tls, root_certificates)
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        # Made on first use, inside the event loop that uses it (grpc.aio binds a channel to its loop).
        if self._channel is None:
            if self.target.tls:
                self._channel = grpc.aio.secure_channel(self.target.address, self.target.credentials())
            else:
                self._channel = grpc.aio.insecure_channel(self.target.address)
        return self._channel

    async def __aenter__(self) -> AsyncGrpcRelayClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def send(self, call: GrpcCall[T]) -> T:
        method = self.channel.unary_unary(
            call.path,
            request_serializer=type(call.request).SerializeToString,
            response_deserializer=call.response.FromString,
        )
        try:
            reply = await method(call.request, timeout=self.timeout, metadata=self.target.metadata)
        except grpc.RpcError as exc:
            raise calls.error_of(exc, self.target, call.job_id) from None
        return call.decode(reply)

    async def stream(self, call: GrpcCall[T]) -> AsyncIterator[T]:
        method = self.channel.unary_stream(
            call.path,
            request_serializer=type(call.request).SerializeToString,
            response_deserializer=call.response.FromString,
        )
        replies = method(call.request, metadata=self.target.metadata)
        try:
            async for reply in replies:
                yield call.decode(reply)
        except grpc.RpcError as exc:
            raise calls.error_of(exc, self.target, call.job_id) from None
        finally:
            replies.cancel()

    async def enqueue(self, document: Mapping[str, Any]) -> Enqueued:
        return await self.send(calls.enqueue(document))

    async def enqueue_many(self, documents: Iterable[Mapping[str, Any]]) -> list[Enqueued]:
        return await self.send(calls.enqueue_many(documents))

    async def get(self, job_id: str) -> Job:
        return await self.send(calls.get(job_id))

    async def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        queues: Sequence[str] = (),
        kinds: Sequence[str] = (),
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        call = calls.list_jobs(
            states=states, queues=queues, kinds=kinds, text=text, limit=limit, cursor=cursor
        )
        return await self.send(call)

    async def logs(
        self, job_id: str, *, attempt: int | None = None, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogLine]:
        return await self.send(calls.logs(job_id, attempt=attempt, after_seq=after_seq, limit=limit))

    async def cancel(self, job_id: str) -> Job:
        return await self.send(calls.cancel(job_id))

    async def retry(self, job_id: str) -> Job:
        return await self.send(calls.retry(job_id))

    def watch(self, job_id: str | None = None, *, queue: str | None = None) -> AsyncIterator[Job]:
        """``async for job in client.watch(job_id)``: as :meth:`GrpcRelayClient.watch`."""
        return self.stream(calls.watch(job_id, queue))

    async def get_workflow_run(self, run_id: str) -> WorkflowRun:
        return await self.send(calls.workflow_run(run_id))

    async def ready(self) -> bool:
        try:
            return await self.send(calls.ready())
        except ApiError as exc:
            if calls.is_ready_refusal(exc):
                return True
            raise
