"""The relay-rs runner protocol, end to end: a shell script that speaks nothing but HTTP (curl),
against a real uvicorn server on a free loopback port, with the reaper running in the server."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.app import Relay
from relay.server import ServerSettings, mint_token
from relay.storage.params import ClaimParams, ListParams
from relay.types import JobKind, JobState

from .helpers import SECRET, ServerThread, api_client, wait_until

RUNNER = Path(__file__).with_name("runner.sh")


def runner(*args: str, token: str | None = None) -> list[str]:
    env = {**os.environ, "RELAY_TOKEN": token or ""}
    done = subprocess.run(
        ["sh", str(RUNNER), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def rs_job(job_id: str, **fields: object) -> str:
    return json.dumps(
        {"id": job_id, "queue": "q", "timeout": 1, "max_retries": 0, "payload": {"n": 1}, **fields}
    )


@pytest.fixture
def server(relay: Relay) -> Iterator[ServerThread]:
    thread = ServerThread(relay, ServerSettings(events_interval=0)).start()
    yield thread
    thread.stop()


def test_enqueue_next_heartbeat_complete(server: ServerThread, relay: Relay) -> None:
    url = server.url
    assert runner("enqueue", url, rs_job("r1", persist_data=True, state={"step": 0})) == ["202"]
    assert runner("enqueue", url, rs_job("r1")) == ["409"]
    assert runner("next", url, "other") == ["204", ""]
    # Six beats 0.2s apart outlast the 1s timeout: heartbeats keep the lease, the job is not handed out again.
    assert runner("work", url, "q", "6") == ["r1"]
    job = relay.get_job("r1")
    assert (job.state, job.attempt, job.checkpoint, job.kind) == (
        JobState.COMPLETED,
        1,
        {"step": 6},
        JobKind.EXTERNAL,
    )
    assert runner("next", url, "q") == ["204", ""]
    assert runner("complete", url, "q", "r1") == ["404"]
    assert runner("beat", url, "q", "r1", "{}") == ["404"]


def test_next_returns_the_relay_rs_body(server: ServerThread) -> None:
    runner("enqueue", server.url, rs_job("with-state", persist_data=True, state={"cursor": 3}, max_retries=2))
    status, body = runner("next", server.url, "q")
    assert status == "200"
    assert json.loads(body) == {
        "id": "with-state",
        "queue": "q",
        "timeout": 1,
        "persist_data": True,
        "max_retries": 2,
        "payload": {"n": 1},
        "state": {"cursor": 3},
    }
    runner("enqueue", server.url, rs_job("no-state"))
    assert "state" not in json.loads(runner("next", server.url, "q")[1])  # absent, as in relay-rs


def test_a_runner_that_stops_heartbeating(server: ServerThread, relay: Relay) -> None:
    url = server.url
    runner("enqueue", url, rs_job("r2", max_retries=1, state={"cursor": 0}))
    [first] = runner("abandon", url, "q")
    assert json.loads(first)["state"] == {"cursor": 0}
    assert runner("beat", url, "q", "r2", '{"cursor": 5}') == ["202"]  # progress saved, then silence
    # The reaper returns it once its 1s timeout passes; the next runner gets it, with the saved state.
    [second] = runner("abandon", url, "q")
    assert json.loads(second)["state"] == {"cursor": 5}
    assert relay.get_job("r2").attempt == 2
    # Silence again, and max_retries (1) is spent: the job is dead, never handed out again.
    dead = wait_until(lambda: relay.get_job("r2").state is JobState.DEAD or None, what="the job to die")
    job = relay.get_job("r2")
    assert dead
    assert [e.type for e in job.errors] == ["LeaseExpired", "LeaseExpired"]
    assert runner("next", url, "q") == ["204", ""]
    assert runner("beat", url, "q", "r2", "{}") == ["404"]


def test_invalid_enqueue_is_422_and_bad_json_400(server: ServerThread, relay: Relay) -> None:
    assert runner("enqueue", server.url, json.dumps({"id": "x", "queue": "q"})) == ["422"]  # no timeout
    assert runner("enqueue", server.url, rs_job("x", timeout=0)) == ["422"]
    assert runner("enqueue", server.url, rs_job("x", queue="bad queue")) == ["422"]
    assert runner("enqueue", server.url, "{oops") == ["400"]
    assert runner("enqueue", server.url, rs_job("x", unknown_field=1, persist_data=None)) == ["202"]
    assert runner("beat", server.url, "q", "x", "{oops") == ["400"]


def test_heartbeat_of_a_cancelled_job_cancels_it(server: ServerThread, relay: Relay) -> None:
    runner("enqueue", server.url, rs_job("c1", timeout=30))
    runner("abandon", server.url, "q")
    relay.call(relay.storage.job_cancel("c1"))
    assert runner("beat", server.url, "q", "c1", "{}") == ["404"]
    assert relay.get_job("c1").state is JobState.CANCELLED


def test_heartbeat_and_complete_only_touch_external_jobs_of_that_queue(
    server: ServerThread, relay: Relay
) -> None:
    relay.enqueue_shell(["/bin/true"], queue="q")
    [shell_job] = relay.call(relay.storage.job_claim(ClaimParams(["q"], "a-worker", 1)))
    assert runner("complete", server.url, "q", shell_job.id) == ["404"]
    runner("enqueue", server.url, rs_job("e1", timeout=30))
    runner("abandon", server.url, "q")
    assert runner("complete", server.url, "elsewhere", "e1") == ["404"]
    assert relay.get_job(shell_job.id).state is JobState.RUNNING
    assert runner("complete", server.url, "q", "e1") == ["200"]


def test_runner_with_auth(relay: Relay) -> None:
    settings = ServerSettings(events_interval=0, jwt_secret=SECRET)
    thread = ServerThread(relay, settings).start()
    try:
        worker = mint_token(SECRET, "enqueue:q work:q", 60)
        assert runner("enqueue", thread.url, rs_job("a1")) == ["401"]
        assert runner("enqueue", thread.url, rs_job("a1"), token=worker) == ["202"]
        assert runner("next", thread.url, "other", token=worker)[0] == "403"
        assert runner("work", thread.url, "q", "1", token=worker) == ["a1"]
    finally:
        thread.stop()


async def test_storage_unavailable_is_429_on_the_runner_protocol(relay: Relay) -> None:
    async with api_client(relay) as api:
        await relay.storage.close()
        response = await api.post("/enqueue", content=rs_job("z"))
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert (await api.get("/v1/next", params={"queue": "q"})).status_code == 429


async def test_lease_token_extension_fences_exactly(relay: Relay) -> None:
    async with api_client(relay) as api:
        await api.post("/enqueue", content=rs_job("t1", timeout=30))
        claimed = await api.get("/v1/next", params={"queue": "q"})
        token = claimed.headers["Relay-Lease-Token"]
        stale = await api.patch(
            "/v1/heartbeat", params={"queue": "q", "job_id": "t1", "lease_token": "stale"}
        )
        assert stale.status_code == 404
        fresh = await api.patch(
            "/v1/heartbeat", params={"queue": "q", "job_id": "t1", "lease_token": token}, content=b'{"s":1}'
        )
        assert fresh.status_code == 202
        assert (
            await api.delete("/v1/complete", params={"queue": "q", "job_id": "t1", "lease_token": token})
        ).status_code == 200
        assert (await relay.get_job_async("t1")).checkpoint == {"s": 1}


async def test_a_taken_id_is_still_409_with_the_existing_job_unchanged(flow_relay: Relay) -> None:
    """The native API answers a duplicate idempotency key 200 with ``duplicate: true``; the runner
    protocol keeps relay-rs's answer for a taken id, 409, and enqueues nothing."""
    async with api_client(flow_relay) as api:
        body = {"id": "r1", "queue": "q", "timeout": 5, "payload": {"n": 1}}
        assert (await api.post("/enqueue", json=body)).status_code == 202
        before = await flow_relay.storage.job_get("r1")
        again = await api.post("/enqueue", json={**body, "payload": {"n": 2}})
        assert again.status_code == 409
        assert again.json() == {
            "error": {
                "code": "duplicate_id",
                "message": "job with id 'r1' already exists in queue 'q'",
                "field": "id",
                "detail": {"job_id": "r1"},
            }
        }
        same = await api.post("/enqueue", json=body)  # the very same job: still 409, as relay-rs says
        assert same.status_code == 409
    assert await flow_relay.storage.job_get("r1") == before
    page = await flow_relay.storage.job_list(ListParams(queues=["q"]))
    assert [job.id for job in page.jobs] == ["r1"]
