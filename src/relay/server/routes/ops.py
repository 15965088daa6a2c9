"""``/healthz`` (the process is up), ``/readyz`` (storage answers) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from relay.server.auth import require_all
from relay.server.errors import ApiError, json_response
from relay.server.schemas import ReadyOut, StatusOut, responses
from relay.server.scopes import Action
from relay.server.state import Auth, ServerState, State

router = APIRouter(tags=["operations"])
READY_TIMEOUT = 5.0  # seconds storage gets to answer a readiness probe
_PROBE_ID = "relay-readiness-probe"  # a primary-key lookup: cheap on every backend, finds nothing


@router.get("/healthz", response_model=None, responses=responses({200: StatusOut}))
async def healthz() -> Response:
    """200 while the process serves requests; says nothing about storage (that is /readyz)."""
    return json_response(200, {"status": "ok"})


@router.get("/readyz", response_model=None, responses=responses({200: ReadyOut}, 503))
async def readyz(request: Request) -> Response:
    """200 when storage answers a query within 5 seconds, else 503 with the reason."""
    state: ServerState = request.app.state.relay_server  # not the State dependency: it opens storage
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await state.relay.open_async()
            await state.storage.job_get(_PROBE_ID)
    except Exception as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        raise ApiError(503, "storage_unavailable", f"storage is not reachable: {reason}") from None
    body: dict[str, object] = {"status": "ready"}
    report = getattr(state.storage, "durability_report", None)  # backends that can lose jobs say how
    if callable(report):
        body["durability"] = report()
    return json_response(200, body)


@router.get(
    "/metrics",
    response_model=None,
    responses=responses({200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}}, 403),
)
async def metrics(state: State, grants: Auth) -> Response:
    """Prometheus metrics (docs/api.md lists them). Needs ``read:*``: they name every queue."""
    require_all(grants, Action.READ)
    body = await state.metrics.render(state.storage, state.now())
    return Response(body, media_type=CONTENT_TYPE_LATEST)
