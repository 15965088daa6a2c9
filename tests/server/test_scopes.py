"""The scope matrix: every action against every kind of grant, and no leak of another queue's jobs
through lists, searches, the DLQ, queue counts or the event stream."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from relay.app import Relay
from relay.server import ServerSettings, create_app, mint_token
from relay.storage.params import ClaimParams, FinishItem
from relay.types import AttemptError, Outcome, utcnow

from .helpers import SECRET, ServerThread, api_client, eventually

SETTINGS = ServerSettings(events_interval=0, jwt_secret=SECRET)
MATRIX_SETTINGS = ServerSettings(events_interval=60, jwt_secret=SECRET)
ALL = "enqueue:* read:* work:* admin:*"
SCOPES = ["enqueue:a", "read:a", "work:a", "admin:a", "read:b", "admin:b", "read:a*", ALL]
SHELL = {"type": "shell", "payload": {"command": "/bin/true"}, "queue": "a", "max_retries": 0}

_RANK = itertools.count(1)
Call = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Op:
    name: str
    call: Call
    ok: int
    allowed: frozenset[str]
    by_id: bool = False  # about one job: a token that cannot read its queue gets 404, not 403
    dead: bool = True  # the job the call is given is dead (else pending)
    admin: bool = False  # an admin action (else a read)


def op(
    name: str,
    call: Call,
    ok: int,
    allowed: set[str],
    by_id: bool = False,
    dead: bool = True,
    admin: bool = False,
) -> Op:
    return Op(name, call, ok, frozenset(allowed | {ALL}), by_id, dead, admin)


READERS = {"read:a", "admin:a", "read:a*"}
OPS = [
    op("enqueue", lambda api, j: api.post("/api/v1/jobs", json=SHELL), 201, {"enqueue:a"}),
    op("enqueue batch", lambda api, j: api.post("/api/v1/jobs/batch", json=[SHELL]), 201, {"enqueue:a"}),
    op(
        "enqueue chained into a",
        lambda api, j: api.post("/api/v1/jobs", json={**SHELL, "queue": "b", "on_success": SHELL}),
        201,
        set(),
    ),
    op(
        "runner enqueue",
        lambda api, j: api.post("/enqueue", json={"id": f"new-{j}", "queue": "a", "timeout": 5}),
        202,
        {"enqueue:a"},
    ),
    op("get", lambda api, j: api.get(f"/api/v1/jobs/{j}"), 200, READERS, by_id=True),
    op("logs", lambda api, j: api.get(f"/api/v1/jobs/{j}/logs"), 200, READERS, by_id=True),
    op("list queue a", lambda api, j: api.get("/api/v1/jobs", params={"queue": "a"}), 200, READERS),
    op("dlq of a", lambda api, j: api.get("/api/v1/dlq", params={"queue": "a"}), 200, READERS),
    op("queues", lambda api, j: api.get("/api/v1/queues"), 200, READERS | {"read:b", "admin:b"}),
    op(
        "events",
        lambda api, j: api.get("/api/v1/events", params={"cursor": "x"}),
        200,
        READERS | {"read:b", "admin:b"},
    ),
    op("workers", lambda api, j: api.get("/api/v1/workers"), 200, set()),
    op("metrics", lambda api, j: api.get("/metrics"), 200, set()),
    op("next", lambda api, j: api.get("/v1/next", params={"queue": "a"}), 204, {"work:a"}),
    op(
        "heartbeat",
        lambda api, j: api.patch("/v1/heartbeat", params={"queue": "a", "job_id": j}),
        404,  # allowed through, and the job is not running: the protocol's own answer
        {"work:a"},
    ),
    op(
        "complete",
        lambda api, j: api.delete("/v1/complete", params={"queue": "a", "job_id": j}),
        404,
        {"work:a"},
    ),
    op(
        "cancel",
        lambda api, j: api.post(f"/api/v1/jobs/{j}/cancel"),
        200,
        {"admin:a"},
        by_id=True,
        dead=False,
        admin=True,
    ),
    op("retry", lambda api, j: api.post(f"/api/v1/jobs/{j}/retry"), 200, {"admin:a"}, by_id=True, admin=True),
    op(
        "dlq requeue one",
        lambda api, j: api.post(f"/api/v1/dlq/{j}/requeue"),
        200,
        {"admin:a"},
        by_id=True,
        admin=True,
    ),
    op(
        "dlq requeue a",
        lambda api, j: api.post("/api/v1/dlq/requeue", params={"queue": "a"}),
        200,
        {"admin:a"},
    ),
    op("dlq requeue all", lambda api, j: api.post("/api/v1/dlq/requeue"), 200, set()),
    op("dlq purge a", lambda api, j: api.delete("/api/v1/dlq", params={"queue": "a"}), 200, {"admin:a"}),
    op("dlq purge all", lambda api, j: api.delete("/api/v1/dlq"), 200, set()),
    op("pause a", lambda api, j: api.post("/api/v1/queues/a/pause"), 200, {"admin:a"}),
    op("resume a", lambda api, j: api.post("/api/v1/queues/a/resume"), 200, {"admin:a"}),
]


async def dead_job(relay: Relay, queue: str, dead: bool = True) -> str:
    """A job of ``queue``: dead (out of attempts, in the DLQ), or else pending."""
    await relay.open_async()
    # Each new job outranks the ones before it, so that the claim below takes this one.
    new = relay.shell_job(["/bin/false"], queue=queue, max_retries=0, priority=next(_RANK))
    [result] = await relay.storage.job_insert_many([new])
    if not dead:
        return result.job.id
    await relay.storage.queue_resume(queue)  # a previous call may have paused it
    [job] = await relay.storage.job_claim(ClaimParams([queue], "w", 1))
    error = AttemptError(1, "ExitCode", "exit 1", utcnow())
    await relay.storage.job_finish_many(
        [FinishItem(job.id, job.lease_token or "", Outcome.FAILED, error=error)]
    )
    return result.job.id


def expected(operation: Op, scope: str) -> int:
    if scope in operation.allowed:
        return operation.ok
    # A token that may act so on other queues but cannot see this job's queue gets "not found": the
    # job's existence must not leak. A token without the action anywhere is refused before any lookup.
    hidden_from = {"admin:b"} if operation.admin else {"read:b", "admin:b"}
    return 404 if operation.by_id and scope in hidden_from else 403


@pytest.mark.parametrize("operation", OPS, ids=[o.name for o in OPS])
async def test_scope_matrix(relay: Relay, operation: Op) -> None:
    for scope in SCOPES:
        job_id = await dead_job(relay, "a", operation.dead)  # a fresh job: every action on it is valid
        app = create_app(relay, MATRIX_SETTINGS)
        # A closed feed ends each event stream after its opening events, so the in-process transport
        # (which waits for the whole body) gets a response: the status is what is checked here.
        app.state.relay_server.feed.close()
        async with api_client(relay, token=mint_token(SECRET, scope, 60), app=app) as api:
            status = (await operation.call(api, job_id)).status_code
        assert status == expected(operation, scope), f"{operation.name} with {scope!r}"


async def test_listings_never_show_another_queues_jobs(relay: Relay) -> None:
    async with api_client(relay, SETTINGS, mint_token(SECRET, ALL, 60)) as admin:
        for queue in ("a", "a2", "b"):
            await admin.post(
                "/api/v1/jobs", json={**SHELL, "queue": queue, "payload": {"command": f"/bin/{queue}"}}
            )
    for queue in ("a", "b"):
        await dead_job(relay, queue)
    async with api_client(relay, SETTINGS, mint_token(SECRET, "read:a*", 60)) as api:
        jobs = (await api.get("/api/v1/jobs")).json()["jobs"]
        assert {j["queue"] for j in jobs} == {"a", "a2"}
        assert (await api.get("/api/v1/jobs", params={"text": "/bin/b"})).json()["jobs"] == []
        assert (await api.get("/api/v1/jobs", params={"queue": "b"})).status_code == 403
        assert (await api.get("/api/v1/jobs", params=[("queue", "a"), ("queue", "b")])).status_code == 403
        assert {j["queue"] for j in (await api.get("/api/v1/dlq")).json()["jobs"]} == {"a"}
        assert {q["name"] for q in (await api.get("/api/v1/queues")).json()["queues"]} == {"a", "a2"}
    async with api_client(relay, SETTINGS, mint_token(SECRET, "read:nothing-here", 60)) as api:
        assert (await api.get("/api/v1/jobs")).json() == {"jobs": [], "next_cursor": None}
        assert (await api.get("/api/v1/queues")).json() == {"queues": []}


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    kind, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield kind, json.loads(data)
            kind, data = "message", ""


async def test_events_never_show_another_queues_jobs(relay: Relay) -> None:
    settings = ServerSettings(events_interval=0.05, jwt_secret=SECRET, events_keepalive=0.2)
    server = await asyncio.to_thread(ServerThread(relay, settings).start)
    admin = {"Authorization": f"Bearer {mint_token(SECRET, ALL, 60)}"}
    reader = {"Authorization": f"Bearer {mint_token(SECRET, 'read:a', 60)}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await http.post("/api/v1/jobs", json={**SHELL, "queue": "b"}, headers=admin)
            await eventually(lambda: feed_polls(http, admin), what="the feed's first poll")
            seen: list[tuple[str, dict[str, Any]]] = []
            async with http.stream("GET", "/api/v1/events", headers=reader) as stream, asyncio.timeout(10):
                for queue in ("b", "b", "a", "b"):
                    await http.post("/api/v1/jobs", json={**SHELL, "queue": queue}, headers=admin)
                async for kind, data in sse_events(stream):
                    seen.append((kind, data))
                    if kind == "job" and data["queue"] == "a":
                        break
            queues = {d.get("queue", d.get("name")) for _, d in seen}
            assert queues == {"a"}, seen
    finally:
        await asyncio.to_thread(server.stop)


async def feed_polls(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """How many times the server's change feed has polled (0 until its baseline is taken)."""
    for line in (await http.get("/metrics", headers=headers)).text.splitlines():
        if line.startswith("relay_change_feed_polls_total "):
            return int(float(line.split()[1]))
    return 0
