"""The HTTP client, sync and async: every call, and errors mapped back to Relay's exceptions."""

from __future__ import annotations

import ast
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import relay.client as client_package
from relay.app import Relay
from relay.client import (
    AsyncRelayClient,
    AuthenticationError,
    Enqueued,
    IdempotencyConflictError,
    PermissionDeniedError,
    RelayClient,
    ServerUnavailableError,
)
from relay.errors import DuplicateJobError, InvalidJobError, InvalidTransitionError, JobNotFoundError
from relay.server import ServerSettings, create_app, mint_token
from relay.storage.params import ClaimParams, FinishItem, LogAppend
from relay.types import JobState, Outcome

from .helpers import SECRET, ServerThread

SHELL = {"type": "shell", "payload": {"command": "/bin/true"}, "max_retries": 0}


@pytest.fixture
def server(relay: Relay) -> Iterator[ServerThread]:
    thread = ServerThread(relay, ServerSettings(events_interval=0, jwt_secret=SECRET)).start()
    yield thread
    thread.stop()


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
                allowed = node.module in ("relay.types", "relay.errors") or node.module.startswith(
                    "relay.client"
                )
                assert allowed, f"{module.name} imports {node.module}"
