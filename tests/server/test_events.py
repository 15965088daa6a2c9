"""Server-sent events of job state changes, against a real uvicorn server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from relay.app import Relay
from relay.server import ServerSettings
from relay.storage.params import ClaimParams, FinishItem
from relay.types import Outcome

from .helpers import ServerThread, eventually

SHELL = {"type": "shell", "payload": {"command": "/bin/true"}}


@pytest.fixture
def server(relay: Relay) -> Iterator[ServerThread]:
    thread = ServerThread(relay, ServerSettings(events_interval=0.02, events_keepalive=0.1)).start()
    yield thread
    thread.stop()


async def read_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each event as ``{"id", "event", "data"}``; comments (keep-alives) as ``{"comment": ...}``."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line.startswith(("id: ", "event: ")):
            name, _, value = line.partition(": ")
            event[name] = value
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif line == "" and "data" in event:
            yield event
            event = {}


async def until(events: AsyncIterator[dict[str, Any]], wanted: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        async for event in events:
            seen.append(event)
            if wanted(event):
                return seen
    raise AssertionError(f"the stream ended before the event: {seen}")


async def polled(http: httpx.AsyncClient) -> bool:
    return "relay_change_feed_polls_total 0.0" not in (await http.get("/metrics")).text


def is_job(state: str) -> Any:
    return lambda e: e.get("event") == "job" and e["data"]["state"] == state


async def test_job_state_changes_stream_and_resume(server: ServerThread, relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await eventually(lambda: polled(http), what="the feed's baseline")
        async with http.stream("GET", "/api/v1/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_events(response)
            job_id = (await http.post("/api/v1/jobs", json=SHELL)).json()["job"]["id"]
            pending = (await until(events, is_job("pending")))[-1]
            assert pending["data"] | {"updated_at": None} == {
                "id": job_id,
                "queue": "default",
                "kind": "shell",
                "state": "pending",
                "previous_state": None,
                "attempt": 0,
                "updated_at": None,
            }
            [job] = await relay.storage.job_claim(ClaimParams(["default"], "w", 1))
            running = (await until(events, is_job("running")))[-1]
            assert (running["data"]["previous_state"], running["data"]["attempt"]) == ("pending", 1)
            await relay.storage.job_finish_many(
                [FinishItem(job.id, job.lease_token or "", Outcome.COMPLETED)]
            )
            completed = await until(events, is_job("completed"))
            queue_events = [e for e in completed if e.get("event") == "queue"]
            assert queue_events
            assert queue_events[-1]["data"]["counts"]["completed"] == 1
            assert any("comment" in e for e in [*completed, *(await until(events, lambda e: "comment" in e))])
        # Reconnecting after the "pending" event replays what came after it.
        async with http.stream("GET", "/api/v1/events", headers={"Last-Event-ID": pending["id"]}) as again:
            replayed = await until(read_events(again), is_job("completed"))
            assert [e["data"]["state"] for e in replayed if e.get("event") == "job"] == [
                "running",
                "completed",
            ]
        async with http.stream("GET", "/api/v1/events", params={"cursor": "gone-7"}) as stale:
            first = await until(read_events(stale), lambda e: "event" in e)
            assert first[-1]["event"] == "reset"


async def test_the_stream_opens_with_the_queues(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await http.post("/api/v1/jobs", json={**SHELL, "queue": "emails"})
        await eventually(lambda: polled(http), what="the feed's baseline")
        async with http.stream("GET", "/api/v1/events", params=[("queue", "emails")]) as response:
            [snapshot] = await until(read_events(response), lambda e: e.get("event") == "queue")
            assert snapshot["data"]["name"] == "emails"
            assert "id" not in snapshot  # not a change: nothing to resume from


def test_open_streams_end_when_the_server_stops(relay: Relay) -> None:
    thread = ServerThread(relay, ServerSettings(events_interval=0.05, events_keepalive=60)).start()
    with httpx.stream("GET", f"{thread.url}/api/v1/events", timeout=30) as response:
        assert response.status_code == 200
        thread.stop(timeout=5)  # shutdown would wait 10s for the open stream if it did not end it
        assert b"retry: 3000" in response.read()
