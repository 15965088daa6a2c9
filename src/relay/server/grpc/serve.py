"""The gRPC server beside uvicorn: same process, same event loop, same :class:`ServerState` (so the
same Relay, storage, limits and change feed), started by :func:`relay.server.serve.serve_async` for
``relay server`` and ``relay up``.

It listens on ``grpc_host:grpc_port`` (loopback by default; beyond it only with auth on, the HTTP
rule, which :class:`ServerSettings` enforces for both), with TLS when given a certificate and a key.
The bound address is logged (``gRPC API listening on HOST:PORT``): with port 0 that line is how a
caller learns the port, as tests do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from relay.errors import ConfigurationError
from relay.server.grpc.jobs import add_jobs_service
from relay.server.grpc.work import add_work_service
from relay.server.settings import ServerSettings
from relay.server.state import ServerState
from relay.server.tokens import TokenVerifier

log = logging.getLogger("relay.server")

MiB = 1024 * 1024
# gRPC's own refusal (RESOURCE_EXHAUSTED) only past twice the body limit: up to there, Submit refuses
# an oversized job itself, with INVALID_ARGUMENT naming the field, as HTTP answers 413.
MIN_MESSAGE_BYTES = 4 * MiB


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    host: str
    port: int  # the bound port (the chosen one, for port 0)
    tls: bool

    @property
    def address(self) -> str:
        return f"{_host_part(self.host)}:{self.port}"

    async def stop(self, grace: float) -> None:
        """Refuse new calls; give open ones ``grace`` seconds, then cancel them."""
        await self.server.stop(grace)


def _host_part(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    if settings.grpc_tls_cert is None or settings.grpc_tls_key is None:
        return None
    try:
        cert = Path(settings.grpc_tls_cert).read_bytes()
        key = Path(settings.grpc_tls_key).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the gRPC TLS certificate or key: {exc}") from None
    return grpc.ssl_server_credentials([(key, cert)])


async def start_grpc(
    state: ServerState, settings: ServerSettings, verifier: TokenVerifier | None
) -> GrpcServer | None:
    """Bind and start the gRPC server of ``settings`` (None when gRPC is off). A port that cannot be
    bound raises ConfigurationError, before the HTTP server starts."""
    if not settings.grpc:
        return None
    credentials = _credentials(settings)
    limit = max(MIN_MESSAGE_BYTES, 2 * settings.max_body_bytes)
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.so_reuseport", 0)],
    )
    add_jobs_service(server, state, verifier)
    add_work_service(server, state, verifier)
    address = f"{_host_part(settings.grpc_host)}:{settings.grpc_port}"
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ConfigurationError(f"the gRPC server could not listen on {address}: {exc}") from None
    await server.start()
    bound = GrpcServer(server, settings.grpc_host, port, credentials is not None)
    if bound.tls:
        log.info("gRPC API over TLS, certificate %s", settings.grpc_tls_cert)
    log.info("gRPC API listening on %s", bound.address)  # the last word is the address: tests read it
    return bound


__all__ = ["GrpcServer", "start_grpc"]
