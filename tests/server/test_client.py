"""The HTTP client, sync and async: every call, and errors mapped back to Relay's exceptions."""

from __future__ import annotations

import ast
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

import relay.client as client_package
from relay.app import Relay
from relay.client import (
    ApiError,
    AsyncRelayClient,
    AuthenticationError,
    Enqueued,
    IdempotencyConflictError,
    PermissionDeniedError,
    RelayClient,
    ServerUnavailableError,
)
from relay.errors import (
    DuplicateJobError,
    InvalidJobError,
    InvalidLimitError,
    InvalidScheduleError,
    InvalidTransitionError,
    JobNotFoundError,
    ScheduleNotFoundError,
)
from relay.server import ServerSettings, create_app, mint_token
from relay.storage.params import ClaimParams, FinishItem, LogAppend
from relay.types import NO_LIMITS, CatchUp, JobState, OrderingDead, Outcome, QueueLimits, RateLimit

from .helpers import SECRET, ServerThread

SHELL = {"type": "shell", "payload": {"command": "/bin/true"}, "max_retries": 0}


@pytest.fixture
def server(relay: Relay) -> Iterator[ServerThread]:
    thread = ServerThread(relay, ServerSettings(events_interval=0, jwt_secret=SECRET)).start()
    yield thread
    thread.stop()


@pytest.fixture
def flow_server(flow_relay: Relay) -> Iterator[ServerThread]:
    thread = ServerThread(flow_relay, ServerSettings(events_interval=0, jwt_secret=SECRET)).start()
    yield thread
    thread.stop()


REPORT = {"type": "shell", "payload": {"command": "/usr/local/bin/report.sh"}, "queue": "a"}
NIGHTLY = {"schedule": "0 3 * * *", "timezone": "Europe/Berlin", "job": REPORT}


def kill(relay: Relay, job_id: str) -> None:
    [job] = relay.call(relay.storage.job_claim(ClaimParams(["default"], "w", 1)))
    assert job.id == job_id
    relay.call(relay.storage.job_finish_many([FinishItem(job.id, job.lease_token or "", Outcome.FAILED)]))


def test_sync_client_end_to_end(server: ServerThread, relay: Relay) -> None:
    token = mint_token(SECRET, "enqueue:* read:* admin:*", 60)
    with RelayClient(server.url, token=token) as client:
        assert client.ready()
        # Priority 10: the claims of kill() take this job before the others.
        document = {**SHELL, "idempotency_key": "k", "priority": 10}
        first = client.enqueue(document)
        assert first.created
        assert first.job.state is JobState.PENDING
        assert client.enqueue(document) == Enqueued(first.job, False)
        batch = client.enqueue_many([{**SHELL, "queue": "other"}, {**SHELL, "tags": ["x"]}])
        assert [e.job.queue for e in batch] == ["other", "default"]
        assert client.get(first.job.id) == first.job
        page = client.list_jobs(limit=2)
        assert [j.id for j in page.jobs] == [batch[1].job.id, batch[0].job.id]
        rest = client.list_jobs(cursor=page.next_cursor)
        assert [j.id for j in rest.jobs] == [first.job.id]
        assert rest.next_cursor is None
        assert [j.queue for j in client.list_jobs(queues=["other"]).jobs] == ["other"]
        relay.call(relay.storage.job_log_append([LogAppend(first.job.id, 1, "stdout", "hello\n")]))
        [line] = client.logs(first.job.id)
        assert (line.text, line.attempt) == ("hello\n", 1)
        kill(relay, first.job.id)
        assert [j.id for j in client.dlq_list().jobs] == [first.job.id]
        assert client.dlq_requeue(first.job.id).state is JobState.PENDING
        kill(relay, first.job.id)
        assert client.dlq_requeue_all(queue="default") == [first.job.id]
        assert client.cancel(first.job.id).state is JobState.CANCELLED
        assert client.retry(first.job.id).state is JobState.PENDING
        kill(relay, first.job.id)
        assert client.dlq_purge() == 1
        client.pause_queue("other")
        assert {q.name: q.paused for q in client.queues()} == {"default": False, "other": True}
        client.resume_queue("other")
        assert client.workers() == []


def test_sync_client_errors(server: ServerThread) -> None:
    with RelayClient(server.url, token=mint_token(SECRET, "enqueue:* read:* admin:default", 60)) as client:
        with pytest.raises(JobNotFoundError, match="no job with id 'nope'"):
            client.get("nope")
        with pytest.raises(InvalidJobError) as invalid:
            client.enqueue({"type": "shell", "payload": {"command": ""}})
        assert invalid.value.field == "payload.command"
        job = client.enqueue({**SHELL, "id": "fixed"}).job
        with pytest.raises(DuplicateJobError):
            client.enqueue({**SHELL, "id": "fixed"})
        client.cancel(job.id)
        with pytest.raises(InvalidTransitionError, match="cannot cancel job 'fixed': it is cancelled"):
            client.cancel(job.id)
        client.enqueue({**SHELL, "idempotency_key": "k"})
        with pytest.raises(IdempotencyConflictError) as conflict:
            client.enqueue_many([{**SHELL, "queue": "q2"}, {**SHELL, "idempotency_key": "k", "priority": 3}])
        assert "the other 1 were enqueued" in str(conflict.value)
        assert conflict.value.results[1] is None
        with pytest.raises(PermissionDeniedError, match="admin:other"):
            client.pause_queue("other")
    with RelayClient(server.url, token="bad") as client, pytest.raises(AuthenticationError):
        client.queues()


def test_sync_client_flow_control(flow_server: ServerThread, flow_relay: Relay) -> None:
    with RelayClient(flow_server.url, token=mint_token(SECRET, "read:* enqueue:* admin:a", 60)) as client:
        queue = client.set_queue_limits(
            "a", {"rate": "100/s", "burst": 20, "concurrency": 5, "ordering_dead": "block"}
        )
        expected = QueueLimits(rate=RateLimit(100.0, 20), concurrency=5, ordering_dead=OrderingDead.BLOCK)
        assert (queue.name, queue.limits, queue.tokens) == ("a", expected, 20.0)
        assert client.queue("a") == queue
        assert client.queues() == [queue]
        with pytest.raises(InvalidLimitError) as invalid_limit:
            client.set_queue_limits("a", {"rate": 10, "burst": 0})
        assert (invalid_limit.value.field, invalid_limit.value.message) == (
            "burst",
            "must be at least 1, got 0",
        )
        assert client.queue("a").limits == expected
        with pytest.raises(PermissionDeniedError, match="admin:b"):
            client.set_queue_limits("b", {})
        with pytest.raises(ApiError) as missing:
            client.queue("nope")
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        assert client.set_queue_limits("a", {}).limits == NO_LIMITS

        schedule = client.put_schedule("nightly", NIGHTLY)
        assert (schedule.name, schedule.spec, schedule.timezone) == ("nightly", "0 3 * * *", "Europe/Berlin")
        assert (schedule.catch_up, schedule.paused, schedule.job.queue) == (CatchUp.ONCE, False, "a")
        assert schedule.next_run_at == datetime(2026, 3, 7, 2, 0, tzinfo=UTC)
        assert client.schedule("nightly") == schedule
        assert client.schedules() == [schedule]
        assert flow_relay.call(flow_relay.storage.schedule_get("nightly")) == schedule
        assert client.pause_schedule("nightly").paused
        assert not client.resume_schedule("nightly").paused
        with pytest.raises(InvalidScheduleError) as invalid_schedule:
            client.put_schedule("nightly", {**NIGHTLY, "timezone": "Nowhere/Land"})
        assert invalid_schedule.value.field == "timezone"
        with pytest.raises(InvalidJobError) as invalid_job:
            client.put_schedule("nightly", {**NIGHTLY, "job": {"type": "shell", "payload": {"command": ""}}})
        assert invalid_job.value.field == "job.payload.command"
        with pytest.raises(PermissionDeniedError, match="admin:b"):
            client.put_schedule("other", {**NIGHTLY, "job": {**REPORT, "queue": "b"}})
        client.remove_schedule("nightly")
        assert client.schedules() == []
        for call in (client.schedule, client.remove_schedule, client.pause_schedule, client.resume_schedule):
            with pytest.raises(ScheduleNotFoundError, match="no schedule named 'nightly'"):
                call("nightly")


async def test_async_client_flow_control(flow_relay: Relay) -> None:
    app = create_app(flow_relay, ServerSettings(events_interval=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncRelayClient("http://127.0.0.1:4000", transport=transport) as client:
            queue = await client.set_queue_limits("a", {"key_rate": "10/m", "key_concurrency": 2})
            assert queue.limits == QueueLimits(key_rate=RateLimit(10 / 60, 1), key_concurrency=2)
            assert queue.tokens is None  # no queue-wide bucket
            assert await client.queue("a") == queue
            with pytest.raises(InvalidLimitError) as invalid:
                await client.set_queue_limits("a", {"key_burst": 3})
            assert invalid.value.field == "key_burst"
            schedule = await client.put_schedule("tick", {"schedule": "every 30s", "command": "/bin/true"})
            assert schedule.next_run_at == datetime(2026, 3, 6, 12, 0, 30, tzinfo=UTC)
            assert await client.schedules() == [schedule]
            assert await client.schedule("tick") == schedule
            assert (await client.pause_schedule("tick")).paused
            assert not (await client.resume_schedule("tick")).paused
            await client.remove_schedule("tick")
            with pytest.raises(ScheduleNotFoundError):
                await client.schedule("tick")
            with pytest.raises(InvalidScheduleError) as bad_spec:
                await client.put_schedule("tick", {"schedule": "* * *", "command": "/bin/true"})
            assert bad_spec.value.field == "schedule"
            assert await client.schedules() == []


def test_enqueued_says_duplicate(flow_server: ServerThread) -> None:
    with RelayClient(flow_server.url, token=mint_token(SECRET, "enqueue:*", 60)) as client:
        first = client.enqueue({**SHELL, "idempotency_key": "once"})
        again = client.enqueue({**SHELL, "idempotency_key": "once"})
        [batched] = client.enqueue_many([{**SHELL, "idempotency_key": "once"}])
    assert (first.created, first.duplicate) == (True, False)
    assert (again.created, again.duplicate, again.job) == (False, True, first.job)
    assert (batched.duplicate, batched.job) == (True, first.job)


def test_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    with (
        RelayClient(f"http://127.0.0.1:{port}") as client,
        pytest.raises(ServerUnavailableError, match="cannot reach"),
    ):
        client.get("x")


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_SERVER_URL", "http://relay.example:4000/")
    monkeypatch.setenv("RELAY_TOKEN", "tok")
    client = RelayClient()
    assert client.base_url == "http://relay.example:4000"
    assert client._http.headers["Authorization"] == "Bearer tok"
    client.close()


async def test_async_client(relay: Relay) -> None:
    app = create_app(relay, ServerSettings(events_interval=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncRelayClient("http://127.0.0.1:4000", transport=transport) as client:
            enqueued = await client.enqueue(SHELL)
            assert (await client.get(enqueued.job.id)).id == enqueued.job.id
            assert [j.id for j in (await client.list_jobs(states=["pending"])).jobs] == [enqueued.job.id]
            assert (await client.cancel(enqueued.job.id)).state is JobState.CANCELLED
            with pytest.raises(JobNotFoundError):
                await client.retry("missing")
            assert [q.name for q in await client.queues()] == ["default"]


def test_the_client_imports_only_types_and_errors() -> None:
    package = Path(client_package.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("relay"):
                # relay.grpc.v1: the stubs generated from relay.proto, which import nothing of Relay
                allowed = node.module in (
                    "relay.types",
                    "relay.errors",
                    "relay.grpc.v1",
                ) or node.module.startswith("relay.client")
                assert allowed, f"{module.name} imports {node.module}"
