"""``/metrics`` (Prometheus text), ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from relay.app import Relay
from relay.server import ServerSettings
from relay.storage.params import ClaimParams, FinishItem
from relay.types import AttemptError, Outcome, utcnow

from .helpers import api_client, eventually

SHELL = {"type": "shell", "payload": {"command": "/bin/true"}, "max_retries": 0}


async def samples(api: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_from_storage_and_the_feed(relay: Relay) -> None:
    async with api_client(relay, ServerSettings(events_interval=0.01)) as api:
        await eventually(lambda: _polls(api), what="the feed's baseline")
        for _ in range(3):
            await api.post("/api/v1/jobs", json=SHELL)
        await api.post("/api/v1/jobs", json={**SHELL, "queue": "emails", "delay": "1h"})
        await api.post("/api/v1/queues/emails/pause")
        claimed = await relay.storage.job_claim(ClaimParams(["default"], "w", 2))
        error = AttemptError(1, "ExitCode", "exit 1", utcnow())
        await relay.storage.job_finish_many(
            [
                FinishItem(claimed[0].id, claimed[0].lease_token or "", Outcome.COMPLETED),
                FinishItem(claimed[1].id, claimed[1].lease_token or "", Outcome.FAILED, error=error),
            ]
        )

        async def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            found = await samples(api)
            done = found.get(("relay_jobs_dead_total", (("queue", "default"),)), 0) == 1
            return found if done else None

        found = await eventually(counted, what="the feed to count the outcomes")
        default = (("queue", "default"),)
        assert found[("relay_jobs_enqueued_total", default)] == 3
        assert found[("relay_jobs_enqueued_total", (("queue", "emails"),))] == 1
        assert found[("relay_jobs_completed_total", default)] == 1
        run_time = ("relay_job_run_seconds_count", (("outcome", "completed"), ("queue", "default")))
        assert found[run_time] == 1
        assert found[("relay_queue_jobs", (("queue", "default"), ("state", "pending")))] == 1
        assert found[("relay_queue_jobs", (("queue", "default"), ("state", "dead")))] == 1
        assert found[("relay_queue_jobs", (("queue", "emails"), ("state", "scheduled")))] == 1
        assert found[("relay_queue_paused", (("queue", "emails"),))] == 1
        assert found[("relay_queue_oldest_pending_age_seconds", default)] >= 0
        assert found[("relay_workers", ())] == 0
        assert found[("relay_storage_up", ())] == 1
        requests = (
            "relay_http_requests_total",
            (("method", "POST"), ("route", "/api/v1/jobs"), ("status", "201")),
        )
        assert found[requests] == 4


async def _polls(api: httpx.AsyncClient) -> bool:
    return (await samples(api)).get(("relay_change_feed_polls_total", ()), 0) > 0


async def test_metrics_when_storage_is_down(relay: Relay) -> None:
    async with api_client(relay) as api:
        await relay.storage.close()
        found = await samples(api)
        assert found[("relay_storage_up", ())] == 0
        assert not any(name == "relay_queue_jobs" for name, _ in found)


async def test_health_and_readiness(relay: Relay) -> None:
    async with api_client(relay) as api:
        assert (await api.get("/healthz")).json() == {"status": "ok"}
        assert (await api.get("/readyz")).json() == {"status": "ready"}
        await relay.storage.close()
        assert (await api.get("/healthz")).status_code == 200  # the process is up all the same
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "storage_unavailable"


async def test_readiness_on_redis_says_what_its_settings_can_lose(redis_server: object) -> None:
    from servers.redis import RedisTestServer

    assert isinstance(redis_server, RedisTestServer)
    relay = Relay(f"{redis_server.url}?prefix=readyz-test")
    try:
        async with api_client(relay) as api:
            body = (await api.get("/readyz")).json()
        assert body["status"] == "ready"
        assert set(body["durability"]) >= {"durable", "summary", "settings"}
        assert body["durability"]["settings"]["appendonly"] == "yes"  # the test server runs with AOF
    finally:
        relay.close()
