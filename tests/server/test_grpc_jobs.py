"""The job API over gRPC (service relay.v1.Jobs), against the real grpc.aio server that serve_async
starts beside uvicorn, on a memory and a SQLite Relay: every RPC, bad input, auth, Watch, and the
Python gRPC clients (sync and async) raising what the HTTP clients raise."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import orjson
import pytest

from relay.app import Relay
from relay.client import (
    AsyncGrpcRelayClient,
    AuthenticationError,
    GrpcRelayClient,
    IdempotencyConflictError,
    PermissionDeniedError,
    ServerUnavailableError,
)
from relay.errors import (
    ConfigurationError,
    DuplicateJobError,
    InvalidJobError,
    InvalidTransitionError,
    JobNotFoundError,
)
from relay.grpc.v1 import relay_pb2 as pb
from relay.grpc.v1 import relay_pb2_grpc
from relay.server import ServerSettings, mint_token, serve_async
from relay.settings import Settings
from relay.storage.params import ClaimParams, FinishItem, ListParams, LogAppend
from relay.types import JobKind, JobState, Outcome
from servers.tls import self_signed

from .helpers import SECRET, api_client, eventually

BACKENDS = ("memory", "sqlite")
LISTENING = re.compile(r"gRPC API listening on (\S+)")
CI = """\
name: ci
steps:
  - name: test
    command: /bin/echo test
"""
SHELL = {"type": "shell", "payload": {"command": "echo hi"}}


@pytest.fixture(params=BACKENDS)
def grpc_relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Relay]:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "ci.yaml").write_text(CI)
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/relay.db"
    relay = Relay(settings=Settings(database_url=url, poll_interval=0.05, workflows_dir=str(workflows)))
    yield relay
    relay.close()


class _Address(logging.Handler):
    """Catches the line that says where the gRPC server listens (how port 0 is learned)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.found = asyncio.get_running_loop().create_future()

    def emit(self, record: logging.LogRecord) -> None:
        match = LISTENING.search(record.getMessage())
        if match and not self.found.done():
            self.found.set_result(match.group(1))


@dataclass
class Served:
    address: str
    channel: grpc.aio.Channel

    @property
    def stub(self) -> Any:
        return relay_pb2_grpc.JobsStub(self.channel)  # type: ignore[no-untyped-call]

    @property
    def url(self) -> str:
        return f"grpc://{self.address}"


@asynccontextmanager
async def served(relay: Relay, **overrides: Any) -> AsyncIterator[Served]:
    """``serve_async`` (HTTP on a socket of its own, gRPC on port 0) until the block ends."""
    settings = ServerSettings(events_interval=0.02, grpc=True, grpc_port=0, maintenance=False, **overrides)
    logger = logging.getLogger("relay.server")
    handler, level = _Address(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    stop = asyncio.Event()
    task = asyncio.create_task(serve_async(relay, settings, stop=stop, sockets=[sock]))
    try:
        done, _ = await asyncio.wait({task, handler.found}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert handler.found in done, f"the gRPC server did not start: {task}"
        address = handler.found.result()
        async with grpc.aio.insecure_channel(address) as channel:
            yield Served(address, channel)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        stop.set()
        await asyncio.wait_for(task, 20)
        sock.close()


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def stored(relay: Relay) -> list[Any]:
    return list((await relay.storage.job_list(ListParams(limit=100))).jobs)


# -- every RPC ------------------------------------------------------------------------------------------


async def test_submit_get_list_cancel_retry_and_logs(grpc_relay: Relay) -> None:
    async with served(grpc_relay) as server:
        spec = pb.JobSpec(
            type="shell",
            payload='{"command": "echo hello"}',
            queue="emails",
            max_retries=3,
            priority=5,
            tags=["a", "b"],
            metadata='{"team": "x"}',
            timeout="30s",
            idempotency_key="k-1",
        )
        submitted = await server.stub.Submit(pb.SubmitRequest(job=spec))
        assert submitted.created
        job = submitted.job
        assert (job.queue, job.type, job.state, job.max_retries, job.priority) == (
            "emails",
            "shell",
            "pending",
            3,
            5,
        )
        assert list(job.tags) == ["a", "b"]
        assert orjson.loads(job.json)["metadata"] == {"team": "x"}
        again = await server.stub.Submit(pb.SubmitRequest(job=spec))
        assert not again.created
        assert again.job.id == job.id

        got = await server.stub.Get(pb.GetRequest(id=job.id))
        assert got.id == job.id
        stored, answered = orjson.loads(got.json), orjson.loads(job.json)
        differing = {
            k: (stored.get(k), answered.get(k)) for k in stored | answered if stored.get(k) != answered.get(k)
        }
        assert not differing, f"Get and Submit disagree on {differing}"

        many = await server.stub.SubmitMany(
            pb.SubmitManyRequest(
                jobs=[pb.JobSpec(document=orjson.dumps(SHELL).decode()), pb.JobSpec(type="external")]
            )
        )
        assert [r.created for r in many.results] == [True, True]
        listed = await server.stub.List(pb.ListRequest(limit=2))
        assert len(listed.jobs) == 2
        assert listed.next_cursor
        rest = await server.stub.List(pb.ListRequest(limit=2, cursor=listed.next_cursor))
        assert len(rest.jobs) == 1
        assert not rest.next_cursor
        only = await server.stub.List(pb.ListRequest(queues=["emails"], states=["pending"]))
        assert [j.id for j in only.jobs] == [job.id]
        externals = await server.stub.List(pb.ListRequest(types=["external"]))
        assert [j.type for j in externals.jobs] == ["external"]

        cancelled = await server.stub.Cancel(pb.CancelRequest(id=job.id))
        assert cancelled.state == "cancelled"
        retried = await server.stub.Retry(pb.RetryRequest(id=job.id))
        assert retried.state == "pending"

        [claimed] = await grpc_relay.storage.job_claim(ClaimParams(["emails"], "w-1", 1))
        await grpc_relay.storage.job_log_append(
            [LogAppend(claimed.id, 1, "stdout", "one\n"), LogAppend(claimed.id, 1, "stderr", "two\n")]
        )
        logs = await server.stub.Logs(pb.LogsRequest(id=job.id))
        assert [(line.stream, line.text) for line in logs.lines] == [("stdout", "one\n"), ("stderr", "two\n")]
        after = await server.stub.Logs(pb.LogsRequest(id=job.id, after_seq=logs.lines[0].seq))
        assert [line.text for line in after.lines] == ["two\n"]


async def test_a_workflow_run_is_read_over_grpc(grpc_relay: Relay) -> None:
    async with served(grpc_relay) as server:
        async with api_client(grpc_relay) as http:
            response = await http.post("/api/v1/workflows/ci/runs", json={})
            assert response.status_code == 201, response.text
            run_id = response.json()["id"]
        run = await server.stub.GetWorkflowRun(pb.GetWorkflowRunRequest(id=run_id))
        assert (run.id, run.workflow, run.state) == (run_id, "ci", "running")
        assert [s["name"] for s in orjson.loads(run.json)["steps"]] == ["test"]
        missing = await refused(server.stub.GetWorkflowRun(pb.GetWorkflowRunRequest(id="nope")))
        assert missing.code() is grpc.StatusCode.NOT_FOUND


async def test_errors_have_their_status_codes(grpc_relay: Relay) -> None:
    async with served(grpc_relay) as server:
        missing = await refused(server.stub.Get(pb.GetRequest(id="nope")))
        assert missing.code() is grpc.StatusCode.NOT_FOUND
        job = (await server.stub.Submit(pb.SubmitRequest(job=pb.JobSpec(type="external", id="x-1")))).job
        await server.stub.Cancel(pb.CancelRequest(id=job.id))
        twice = await refused(server.stub.Cancel(pb.CancelRequest(id=job.id)))
        assert twice.code() is grpc.StatusCode.FAILED_PRECONDITION
        taken = await refused(server.stub.Submit(pb.SubmitRequest(job=pb.JobSpec(type="external", id="x-1"))))
        assert taken.code() is grpc.StatusCode.ALREADY_EXISTS
        key = pb.JobSpec(type="external", idempotency_key="k")
        await server.stub.Submit(pb.SubmitRequest(job=key))
        other = pb.JobSpec(type="external", idempotency_key="k", queue="elsewhere")
        conflict = await refused(server.stub.Submit(pb.SubmitRequest(job=other)))
        assert conflict.code() is grpc.StatusCode.ALREADY_EXISTS
        assert "idempotency_key" in (conflict.details() or "")


# -- bad input ------------------------------------------------------------------------------------------


BAD_SPECS = [
    (pb.JobSpec(payload='{"command": "x"}'), "type"),
    (pb.JobSpec(type="shell"), "payload"),
    (pb.JobSpec(type="shell", payload='{"command": "x"}', queue="bad queue!"), "queue"),
    (pb.JobSpec(type="shell", payload='{"command": '), "payload"),
    (pb.JobSpec(type="shell", payload='{"command": "x"}', metadata="[1]"), "metadata"),
    (pb.JobSpec(type="external", delay="soon"), "delay"),
    (pb.JobSpec(type="external", document='{"type": "external"}'), "document"),
    (pb.JobSpec(document="{nope"), "document"),
    (pb.JobSpec(type="shell", payload=orjson.dumps({"command": "x" * 5000}).decode()), "payload"),
    (pb.JobSpec(type="external", payload="[" * 20 + "]" * 20), "payload"),
]


@pytest.mark.parametrize(("spec", "field"), BAD_SPECS)
async def test_bad_input_is_invalid_argument_naming_the_field(
    grpc_relay: Relay, spec: pb.JobSpec, field: str
) -> None:
    async with served(grpc_relay, max_body_bytes=4096, max_json_depth=8) as server:
        error = await refused(server.stub.Submit(pb.SubmitRequest(job=spec)))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(field), error.details()
        assert await stored(grpc_relay) == []


async def test_a_bad_batch_stores_nothing(grpc_relay: Relay) -> None:
    async with served(grpc_relay, max_batch=2) as server:
        good = pb.JobSpec(type="external")
        bad = pb.JobSpec(type="shell", payload='{"command": "x"}', queue="no spaces")
        error = await refused(server.stub.SubmitMany(pb.SubmitManyRequest(jobs=[good, bad])))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith("[1].queue")
        too_many = await refused(server.stub.SubmitMany(pb.SubmitManyRequest(jobs=[good] * 3)))
        assert too_many.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (too_many.details() or "").startswith("jobs")
        missing = await refused(server.stub.Submit(pb.SubmitRequest()))
        assert (missing.details() or "").startswith("job")
        for request in (
            pb.ListRequest(states=["nope"]),
            pb.ListRequest(limit=5000),
            pb.ListRequest(cursor="x"),
        ):
            listing = await refused(server.stub.List(request))
            assert listing.code() is grpc.StatusCode.INVALID_ARGUMENT
        both = await refused(_first(server.stub.Watch(pb.WatchRequest())))
        assert both.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert await stored(grpc_relay) == []


async def _first(stream: Any) -> Any:
    async for event in stream:
        return event
    return None


# -- auth -----------------------------------------------------------------------------------------------


async def test_tokens_and_scopes(grpc_relay: Relay) -> None:
    async with served(grpc_relay, jwt_secret=SECRET) as server:
        enqueue_emails = mint_token(SECRET, ["enqueue:emails"], 60)
        read_emails = mint_token(SECRET, ["read:emails"], 60)
        spec = pb.JobSpec(type="external", queue="emails")
        job = (await server.stub.Submit(pb.SubmitRequest(job=spec), metadata=auth(enqueue_emails))).job

        elsewhere = pb.SubmitRequest(job=pb.JobSpec(type="external", queue="billing"))
        denied = await refused(server.stub.Submit(elsewhere, metadata=auth(enqueue_emails)))
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "enqueue:billing" in (denied.details() or "")
        cannot_cancel = await refused(
            server.stub.Cancel(pb.CancelRequest(id=job.id), metadata=auth(read_emails))
        )
        assert cannot_cancel.code() is grpc.StatusCode.PERMISSION_DENIED
        assert (await server.stub.Get(pb.GetRequest(id=job.id), metadata=auth(read_emails))).id == job.id
        # A job of a queue the token cannot read does not exist, for that token.
        other = mint_token(SECRET, ["read:billing"], 60)
        hidden = await refused(server.stub.Get(pb.GetRequest(id=job.id), metadata=auth(other)))
        assert hidden.code() is grpc.StatusCode.NOT_FOUND

        expired = jwt.encode({"scope": "read:*", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256")
        for metadata in ((), auth("not-a-token"), auth(expired), auth(mint_token("x" * 40, ["read:*"], 60))):
            error = await refused(server.stub.List(pb.ListRequest(), metadata=metadata))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert await stored(grpc_relay) != []


async def test_a_worker_token_reads_the_runs_whose_steps_it_serves(grpc_relay: Relay) -> None:
    """A gRPC worker reads a step's inputs with its work token (GetWorkflowRun), read scope or not."""
    async with served(grpc_relay, jwt_secret=SECRET) as server:
        started = await grpc_relay.workflow_async("ci")  # its step runs on the default queue
        request = pb.GetWorkflowRunRequest(id=started.id)
        worker = mint_token(SECRET, ["work:default"], 60)
        assert (await server.stub.GetWorkflowRun(request, metadata=auth(worker))).id == started.id
        elsewhere = mint_token(SECRET, ["work:billing"], 60)
        hidden = await refused(server.stub.GetWorkflowRun(request, metadata=auth(elsewhere)))
        assert hidden.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


# -- Watch ----------------------------------------------------------------------------------------------


async def test_watch_sees_a_job_go_pending_running_completed(grpc_relay: Relay) -> None:
    async with served(grpc_relay) as server:
        job = (await server.stub.Submit(pb.SubmitRequest(job=pb.JobSpec(type="external")))).job
        events = server.stub.Watch(pb.WatchRequest(job_id=job.id))
        seen: list[str] = []

        async def next_state() -> str:
            event = await asyncio.wait_for(events.read(), 10)
            seen.append(event.job.state)
            return str(event.job.state)

        assert await next_state() == "pending"
        [claimed] = await grpc_relay.storage.job_claim(
            ClaimParams(["default"], "w-1", 1, kinds=[JobKind.EXTERNAL])
        )
        assert await next_state() == "running"
        item = FinishItem(claimed.id, claimed.lease_token or "", Outcome.COMPLETED, result={"ok": 1})
        await grpc_relay.storage.job_finish_many([item])
        assert await next_state() == "completed"
        assert await asyncio.wait_for(events.read(), 10) is grpc.aio.EOF  # it ends at a final state
        assert seen == ["pending", "running", "completed"]


async def test_watch_a_queue(grpc_relay: Relay) -> None:
    async with served(grpc_relay) as server:
        events = server.stub.Watch(pb.WatchRequest(queue="q"))
        # One read, never cancelled (a cancelled read cancels the whole call): the stream starts when
        # the server takes the call, so submit until a change reaches it.
        first = asyncio.ensure_future(events.read())
        ids: set[str] = set()

        async def submit_and_see() -> bool:
            job = await server.stub.Submit(pb.SubmitRequest(job=pb.JobSpec(type="external", queue="q")))
            ids.add(job.job.id)
            done, _ = await asyncio.wait({first}, timeout=1)
            return bool(done)

        await eventually(submit_and_see, what="a queue event")
        event = first.result()
        assert event.job.queue == "q"
        assert event.job.id in ids
        events.cancel()


# -- the Python clients ---------------------------------------------------------------------------------


async def test_the_clients_raise_what_the_http_clients_raise(grpc_relay: Relay) -> None:
    async with served(grpc_relay, jwt_secret=SECRET) as server:
        token = mint_token(SECRET, ["enqueue:*", "admin:*"], 60)
        async with AsyncGrpcRelayClient(server.url, token=token) as client:
            assert await client.ready()
            enqueued = await client.enqueue({**SHELL, "max_retries": 3, "id": "j-1"})
            assert enqueued.created
            assert enqueued.job.max_retries == 3
            assert (await client.get("j-1")).state is JobState.PENDING
            [first, second] = await client.enqueue_many([SHELL, {"type": "external"}])
            page = await client.list_jobs(states=["pending"], limit=2)
            assert len(page.jobs) == 2
            assert page.next_cursor is not None
            assert (await client.cancel(first.job.id)).state is JobState.CANCELLED
            assert (await client.retry(first.job.id)).state is JobState.PENDING
            assert await client.logs(first.job.id) == []
            watched = [job.state async for job in _until_first(client.watch(second.job.id))]
            assert watched == [JobState.PENDING]
            with pytest.raises(JobNotFoundError):
                await client.get("nope")
            with pytest.raises(InvalidJobError) as invalid:
                await client.enqueue({"type": "shell", "payload": {}})
            assert invalid.value.field == "payload.command"
            with pytest.raises(DuplicateJobError):
                await client.enqueue({**SHELL, "id": "j-1"})
            with pytest.raises(InvalidTransitionError):
                await client.retry("j-1")
            await client.enqueue({"type": "external", "idempotency_key": "k"})
            with pytest.raises(IdempotencyConflictError):
                await client.enqueue({"type": "external", "idempotency_key": "k", "priority": 3})
        async with AsyncGrpcRelayClient(server.url, token=mint_token(SECRET, ["read:*"], 60)) as reader:
            with pytest.raises(PermissionDeniedError):
                await reader.enqueue(SHELL)
        async with AsyncGrpcRelayClient(server.url, token="bad") as stranger:
            with pytest.raises(AuthenticationError):
                await stranger.get("j-1")

        def sync_calls() -> None:
            with GrpcRelayClient(server.url, token=token) as client:
                assert client.ready()
                job = client.enqueue(SHELL).job
                assert client.get(job.id).id == job.id
                assert [j.state for j in _until_first_sync(client.watch(job.id))] == [JobState.PENDING]
                with pytest.raises(JobNotFoundError):
                    client.cancel("nope")

        await asyncio.to_thread(sync_calls)


async def _until_first(jobs: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for job in jobs:
        yield job
        break


def _until_first_sync(jobs: Iterator[Any]) -> Iterator[Any]:
    for job in jobs:
        yield job
        break


def test_an_unreachable_server_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with GrpcRelayClient(f"grpc://127.0.0.1:{port}") as client, pytest.raises(ServerUnavailableError):
        client.get("x")


# -- serving: TLS, settings -----------------------------------------------------------------------------


async def test_tls_with_a_certificate_and_a_key(grpc_relay: Relay, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    async with served(grpc_relay, grpc_tls_cert=str(cert), grpc_tls_key=str(key)) as server:
        port = server.address.rsplit(":", 1)[1]
        trusted = AsyncGrpcRelayClient(f"grpcs://127.0.0.1:{port}", root_certificates=cert.read_bytes())
        async with trusted as client:
            job = (await client.enqueue(SHELL)).job
            assert (await client.get(job.id)).id == job.id
        async with AsyncGrpcRelayClient(f"grpc://127.0.0.1:{port}", timeout=5) as plain:
            with pytest.raises(ServerUnavailableError):  # plain text to a TLS port: no answer
                await plain.get(job.id)


async def test_a_taken_grpc_port_stops_the_server_before_http_listens(grpc_relay: Relay) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = ServerSettings(events_interval=0, grpc=True, grpc_port=port, maintenance=False)
        with pytest.raises(ConfigurationError, match="gRPC server could not listen"):
            await serve_async(grpc_relay, settings, stop=asyncio.Event())


def test_grpc_settings() -> None:
    assert not ServerSettings().grpc  # settings built in code serve no gRPC unless asked to
    default = ServerSettings.from_env({})
    assert (default.grpc, default.grpc_host, default.grpc_port) == (True, "127.0.0.1", 50051)
    addr = ServerSettings.from_env({"RELAY_GRPC_ADDR": "[::1]:7000"}, grpc_port=7001)
    assert (addr.grpc_host, addr.grpc_port) == ("::1", 7001)
    assert not ServerSettings.from_env({"RELAY_GRPC": "off"}).grpc
    assert not ServerSettings.from_env({}, grpc=False).grpc
    with pytest.raises(ConfigurationError, match="RELAY_GRPC_ADDR"):
        ServerSettings.from_env({"RELAY_GRPC_ADDR": "nowhere"})
    # Beyond loopback only with auth, as for HTTP: the gRPC address counts too.
    wide = ServerSettings.from_env({"RELAY_GRPC_ADDR": "0.0.0.0:50051"})
    assert wide.auth_required
    with pytest.raises(ConfigurationError, match=r"0\.0\.0\.0, beyond loopback"):
        wide.check()
    ServerSettings.from_env({"RELAY_GRPC_ADDR": "0.0.0.0:50051", "RELAY_JWT_SECRET": SECRET}).check()
    assert not ServerSettings.from_env({"RELAY_GRPC_ADDR": "0.0.0.0:1", "RELAY_GRPC": "0"}).auth_required
    with pytest.raises(ConfigurationError, match="both a certificate and a key"):
        ServerSettings(grpc=True, grpc_tls_cert="cert.pem").check()
    with pytest.raises(ConfigurationError, match="gRPC port"):
        ServerSettings(grpc=True, grpc_port=70000).check()
