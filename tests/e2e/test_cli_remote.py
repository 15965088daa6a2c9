"""Every operator command of the CLI against a remote server (`--server URL`, RELAY_TOKEN), and
`relay up` serving the API next to its worker."""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import pytest

SECRET = "s" * 40  # HS256 needs a secret of at least 32 bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def server_url(relay_cli: Any, wait_until: Any) -> str:
    port = free_port()
    env = {"RELAY_AUTH": "required", "RELAY_JWT_SECRET": SECRET}
    relay_cli.start("server", "--port", str(port), env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: healthy(url), timeout=20)
    return url


@pytest.mark.slow
def test_operator_commands_work_through_a_server_with_a_token(relay_cli: Any, server_url: str) -> None:
    scopes = ["--scope", "admin:*", "--scope", "enqueue:*"]
    token = relay_cli("token", "create", *scopes, "--ttl", "1h", env={"RELAY_JWT_SECRET": SECRET})
    assert token.returncode == 0, token.stderr
    remote = {"RELAY_SERVER_URL": server_url, "RELAY_TOKEN": token.stdout.strip(), "RELAY_DATABASE_URL": ""}
    submitted = relay_cli(
        "submit", "--type=shell", '--payload={"command": "echo hi"}', "--queue", "q", env=remote
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    listed = relay_cli("list", "--json", env=remote)
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]
    assert relay_cli("cancel", job_id, env=remote).returncode == 0
    shown = relay_cli("status", job_id, "--json", env=remote)
    assert json.loads(shown.stdout)["state"] == "cancelled"
    assert relay_cli("retry", job_id, env=remote).returncode == 0
    # The server stores in the same SQLite file: the job is there, as the remote commands said.
    local = relay_cli.json("status", job_id)
    assert local["state"] == "pending"


@pytest.mark.slow
def test_a_bad_token_and_local_only_commands_fail_with_one_line(relay_cli: Any, server_url: str) -> None:
    bad = relay_cli("list", env={"RELAY_SERVER_URL": server_url, "RELAY_TOKEN": "not-a-token"})
    assert bad.returncode != 0
    assert bad.stderr.startswith("error:")
    assert len(bad.stderr.strip().splitlines()) == 1
    worker = relay_cli("--server", server_url, "worker", "--burst")
    assert worker.returncode == 2
    assert "talks to storage directly" in worker.stderr


@pytest.mark.slow
def test_relay_up_serves_the_api_beside_its_worker(relay_cli: Any, wait_until: Any) -> None:
    port = free_port()
    up = relay_cli.start("up", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: healthy(url), timeout=20)
    request = urllib.request.Request(
        f"{url}/api/v1/jobs",
        data=json.dumps({"type": "shell", "payload": {"command": "echo from-api"}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        job_id = json.loads(response.read())["job"]["id"]
    wait_until(lambda: relay_cli.json("status", job_id)["state"] == "completed", timeout=20)
    assert relay_cli("logs", job_id).stdout.strip() == "from-api"
    assert up.stop() == 0
