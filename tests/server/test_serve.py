"""Running the server: ``serve`` as ``relay server`` does (a process, stopped by SIGTERM), and
``serve_async`` beside a worker in one event loop, as ``relay up`` does."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from relay.app import Relay
from relay.client import AsyncRelayClient, ServerUnavailableError
from relay.errors import ConfigurationError
from relay.server import ServerSettings, serve, serve_async
from relay.types import JobState

from .helpers import eventually, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    code = (
        f"from relay import Relay; from relay.server import serve; serve(Relay('sqlite:///{tmp_path}/r.db'))"
    )
    env = {"RELAY_PORT": str(port), "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return process.poll() is not None  # stop waiting if it died

        wait_until(healthy, timeout=20, what="the server to listen")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        enqueued = httpx.post(f"http://127.0.0.1:{port}/api/v1/jobs", json={"type": "external"})
        assert enqueued.status_code == 201
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=20)
        assert process.returncode == 0, errors
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_serve_refuses_to_listen_beyond_loopback_without_a_key(relay: Relay) -> None:
    with pytest.raises(ConfigurationError, match="beyond loopback"):
        serve(relay, host="0.0.0.0", port=free_port())


async def test_server_beside_a_worker_in_one_event_loop(relay: Relay) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = asyncio.Event()
    settings = ServerSettings(events_interval=0.05, maintenance=False)
    server = asyncio.create_task(serve_async(relay, settings, stop=stop, sockets=[sock]))
    worker = relay.worker(queues=("default",), poll_interval=0.05)
    working = asyncio.create_task(worker.run())
    try:
        async with AsyncRelayClient(url) as client:
            await eventually(lambda: _ready(client), what="the server to listen")
            job = (await client.enqueue({"type": "shell", "payload": {"command": "/bin/echo hello"}})).job

            async def completed() -> bool:
                return (await client.get(job.id)).state is JobState.COMPLETED

            await eventually(completed, what="the worker to run the job")
            assert [line.text.strip() for line in await client.logs(job.id)] == ["hello"]

            async def registered() -> bool:
                return [w.id for w in await client.workers()] == [worker.id]

            await eventually(registered, what="the worker's registration")
    finally:
        worker.request_stop()
        await asyncio.wait_for(working, timeout=30)
        stop.set()
        await asyncio.wait_for(server, timeout=30)
        sock.close()


async def _ready(client: AsyncRelayClient) -> bool:
    try:
        return await client.ready()
    except ServerUnavailableError:
        return False


async def test_an_address_in_use_is_a_configuration_error(relay: Relay) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = ServerSettings(port=taken.getsockname()[1], events_interval=0, maintenance=False)
        with pytest.raises(ConfigurationError, match=r"could not start on 127\.0\.0\.1"):
            await serve_async(relay, settings, stop=asyncio.Event())
