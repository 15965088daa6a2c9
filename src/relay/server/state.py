"""What every handler needs, in one object on ``app.state``, and the dependencies that hand it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from relay.app import Relay
from relay.server.auth import request_grants
from relay.server.feed import ChangeFeed
from relay.server.limits import Limits
from relay.server.metrics import ServerMetrics
from relay.server.scopes import Grants
from relay.server.settings import ServerSettings
from relay.storage.base import Storage
from relay.workflows.definitions import WorkflowDefinition


@dataclass
class ServerState:
    relay: Relay
    settings: ServerSettings
    limits: Limits
    metrics: ServerMetrics
    feed: ChangeFeed | None
    # Loaded once at start (relay.server.workflows.load_definitions): a changed file needs a restart.
    workflows: dict[str, WorkflowDefinition] = field(default_factory=dict)

    @property
    def storage(self) -> Storage:
        return self.relay.storage

    def now(self) -> datetime:
        return self.relay.clock.now()


async def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.relay_server
    # The lifespan opens storage; this covers an app mounted without one (opening is idempotent).
    await state.relay.open_async()
    return state


State = Annotated[ServerState, Depends(server_state)]
Auth = Annotated[Grants, Depends(request_grants)]
