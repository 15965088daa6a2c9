"""The worker stream (service ``relay.v1.Workers``, rpc ``Work``; the protocol is in relay.proto).

A stream starts with the worker's ``hello``; the caller needs the ``work`` scope on every queue it
names (else ``PERMISSION_DENIED``, and ``UNAUTHENTICATED`` without a valid token). The server answers
``welcome`` and then serves the stream (:class:`relay.server.grpc.work_session.WorkSession`) until the
worker ends it. A message it cannot read ends the stream with ``INVALID_ARGUMENT`` naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from relay.grpc.v1 import relay_pb2 as pb
from relay.runtime.heartbeat import WORKER_BEAT_INTERVAL
from relay.server.grpc.auth import grants_of, require
from relay.server.grpc.work_messages import BadMessage, hello_of
from relay.server.grpc.work_session import StreamFailed, WorkSession
from relay.server.scopes import Action
from relay.server.state import ServerState
from relay.server.tokens import TokenVerifier

log = logging.getLogger("relay.server.grpc.work")

SERVICE = "relay.v1.Workers"


class WorkService:
    def __init__(self, state: ServerState, verifier: TokenVerifier | None) -> None:
        self._state = state
        self._verifier = verifier

    async def work(
        self, requests: AsyncIterator[pb.WorkerMessage], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        grants = await grants_of(context, self._verifier)
        first = await anext(requests, None)
        if first is None:
            return
        if first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello: a stream starts with hello")
        try:
            hello = hello_of(first.hello, context.peer())
        except BadMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await require(context, grants, Action.WORK, hello.queues)
        await self._state.relay.open_async()
        await context.write(
            pb.ServerMessage(
                welcome=pb.Welcome(worker_id=hello.worker_id, heartbeat_interval=WORKER_BEAT_INTERVAL)
            )
        )
        log.info(
            "gRPC worker %s connected for %s (%d slots)", hello.worker_id, ",".join(hello.queues), hello.slots
        )
        session = WorkSession(self._state, hello, context)
        try:
            await session.run(requests)
        except BadMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StreamFailed as exc:
            log.warning("ending the stream of gRPC worker %s: %s", hello.worker_id, exc)
            await context.abort(exc.code, str(exc))
        finally:
            log.info("gRPC worker %s disconnected", hello.worker_id)


def add_work_service(server: grpc.aio.Server, state: ServerState, verifier: TokenVerifier | None) -> None:
    """Register the ``Workers`` service on ``server``."""
    service = WorkService(state, verifier)
    handler = grpc.stream_stream_rpc_method_handler(
        service.work,
        request_deserializer=pb.WorkerMessage.FromString,
        response_serializer=pb.ServerMessage.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Work": handler}),))
