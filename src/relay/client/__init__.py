"""A Python client for Relay's HTTP API, sync (:class:`RelayClient`) and async (:class:`AsyncRelayClient`).

It needs nothing of Relay but :mod:`relay.types` and :mod:`relay.errors` (plus httpx), so a service that
only enqueues jobs or watches them can use it without the rest. Errors come back as the exceptions the
library raises (``JobNotFoundError``, ``InvalidJobError``, ...), or as :class:`ApiError` subclasses.

>>> from relay.client import RelayClient
>>> with RelayClient("http://127.0.0.1:4000", token="...") as relay:  # doctest: +SKIP
...     job = relay.enqueue({"type": "shell", "payload": {"command": "echo hi"}}).job
...     relay.get(job.id).state
<JobState.PENDING: 'pending'>

:class:`GrpcRelayClient` and :class:`AsyncGrpcRelayClient` are the same client over gRPC
(``grpc://host:50051``, docs/grpc.md), with :meth:`~GrpcRelayClient.watch` besides.

Without arguments the client reads ``RELAY_SERVER_URL`` (default ``http://127.0.0.1:4000``) and
``RELAY_TOKEN``.
"""

from __future__ import annotations

from relay.client.aio import AsyncRelayClient
from relay.client.calls import Enqueued, Page, RunPage
from relay.client.errors import (
    ApiError,
    AuthenticationError,
    IdempotencyConflictError,
    PermissionDeniedError,
    ServerUnavailableError,
)
from relay.client.grpc import AsyncGrpcRelayClient, GrpcRelayClient
from relay.client.sync import RelayClient

__all__ = [
    "ApiError",
    "AsyncGrpcRelayClient",
    "AsyncRelayClient",
    "AuthenticationError",
    "Enqueued",
    "GrpcRelayClient",
    "IdempotencyConflictError",
    "Page",
    "PermissionDeniedError",
    "RelayClient",
    "RunPage",
    "ServerUnavailableError",
]
