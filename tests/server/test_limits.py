"""The limits: body size (413), JSON depth (422), batch size (413); on the native API and the runner
protocol alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from relay.app import Relay
from relay.server import ServerSettings

from .helpers import api_client

SETTINGS = ServerSettings(events_interval=0, max_body_bytes=2000, max_json_depth=8, max_batch=3)
SHELL = {"type": "shell", "payload": {"command": "/bin/true"}}


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_body_over_the_limit_is_413(relay: Relay) -> None:
    async with api_client(relay, SETTINGS) as api:
        big = {**SHELL, "metadata": {"blob": "x" * 3000}}
        response = await api.post("/api/v1/jobs", json=big)
        assert response.status_code == 413
        assert response.json()["error"] == {
            "code": "body_too_large",
            "message": "the request body is larger than 2000 bytes",
            "field": None,
        }
        heartbeat = await api.patch(
            "/v1/heartbeat", params={"queue": "q", "job_id": "x"}, json={"s": "x" * 3000}
        )
        assert heartbeat.status_code == 413
        assert (
            await api.post("/enqueue", json={"id": "x", "queue": "q", "timeout": 1, "payload": "x" * 3000})
        ).status_code == 413
        assert (
            await api.post("/api/v1/jobs", json={**SHELL, "metadata": {"blob": "x" * 1500}})
        ).status_code == 201


async def test_a_streamed_body_is_cut_at_the_limit(relay: Relay) -> None:
    # No Content-Length: the server counts what it reads, and stops reading past the limit.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "shell", "payload": {"command": "/bin/true"}, "metadata": {"blob": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}}'

    async with api_client(relay, SETTINGS) as api:
        response = await api.post("/api/v1/jobs", content=chunks())
        assert response.status_code == 413
        assert await relay.storage.queue_list() == []


async def test_json_deeper_than_the_limit_is_422(relay: Relay) -> None:
    async with api_client(relay, SETTINGS) as api:
        response = await api.post("/api/v1/jobs", json={"type": "external", "payload": nested(8)})
        assert response.status_code == 422
        assert response.json()["error"] == {
            "code": "json_too_deep",
            "message": "JSON nested deeper than 8 levels",
            "field": "payload[0][0][0][0][0][0][0]",
        }
        assert (
            await api.post("/api/v1/jobs", json={"type": "external", "payload": nested(7)})
        ).status_code == 201
        state = await api.patch(
            "/v1/heartbeat", params={"queue": "q", "job_id": "x"}, content=json.dumps(nested(20))
        )
        assert state.status_code == 422


async def test_json_past_the_parsers_own_limit_is_422(relay: Relay) -> None:
    # orjson refuses more than 1024 levels by itself: still 422, never a 500 or a RecursionError.
    async with api_client(relay) as api:
        response = await api.post("/api/v1/jobs", content=b"[" * 1500 + b"]" * 1500)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "json_too_deep")


async def test_batch_over_the_limit_is_413(relay: Relay) -> None:
    async with api_client(relay, SETTINGS) as api:
        response = await api.post("/api/v1/jobs/batch", json=[SHELL] * 4)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "batch_too_large"
        assert (await api.post("/api/v1/jobs/batch", json=[SHELL] * 3)).status_code == 201
        not_a_list = await api.post("/api/v1/jobs/batch", json=SHELL)
        assert (not_a_list.status_code, not_a_list.json()["error"]["code"]) == (422, "invalid_job")


async def test_a_body_that_does_not_say_it_is_json_is_415(relay: Relay) -> None:
    # Browsers send text/plain and form bodies across sites without asking: never accept them.
    async with api_client(relay) as api:
        for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            response = await api.post(
                "/api/v1/jobs",
                content=b'{"type": "shell", "payload": {"command": "touch /tmp/pwned"}}',
                headers={"Content-Type": media},
            )
            assert response.status_code == 415, media
            assert response.json()["error"]["code"] == "unsupported_media_type"
        assert (await api.get("/api/v1/jobs")).json()["jobs"] == []


async def test_without_auth_other_sites_and_non_loopback_hosts_are_refused(relay: Relay) -> None:
    job = {"type": "shell", "payload": {"command": "touch /tmp/pwned"}}
    async with api_client(relay) as api:
        foreign = await api.post("/api/v1/jobs", json=job, headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403
        assert foreign.json()["error"]["code"] == "cross_origin"
        rebound = await api.post("/api/v1/jobs", json=job, headers={"Host": "evil.example:4000"})
        assert rebound.status_code == 421
        same_machine = await api.post("/api/v1/jobs", json=job, headers={"Origin": "http://localhost:4000"})
        assert same_machine.status_code == 201
        assert len((await api.get("/api/v1/jobs")).json()["jobs"]) == 1
