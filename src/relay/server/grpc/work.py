"""The worker stream (service ``relay.v1.Workers``): being written (issue 14); registers nothing yet."""

from __future__ import annotations

import grpc

from relay.server.state import ServerState
from relay.server.tokens import TokenVerifier


def add_work_service(server: grpc.aio.Server, state: ServerState, verifier: TokenVerifier | None) -> None:
    """Register the ``Workers`` service on ``server``."""
    del server, state, verifier
