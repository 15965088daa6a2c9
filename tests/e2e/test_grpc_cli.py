"""The CLI over gRPC (`relay --server grpc://HOST:PORT ...`) against a real `relay server --grpc-port 0`,
with a real worker on the same SQLite file: Orqestra's flows, the same answers as local commands give,
errors in one line, and TLS (`grpcs://`, a self-signed certificate)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from servers.tls import self_signed

from .conftest import RelayCLI, RelayProcess

SECRET = "s" * 40  # HS256 needs a secret of at least 32 bytes
LISTENING = re.compile(r"gRPC API listening on (\S+)")
VOLATILE = {"lease_expires_at", "updated_at", "progress", "checkpoint"}
STEP = 30.0  # seconds one step may take (a job runs, a cancel reaches its worker)

pytestmark = pytest.mark.slow


def grpc_address(server: RelayProcess, wait_until: Any) -> str:
    """The address the server logged for its gRPC API (how --grpc-port 0 is learned)."""

    def logged() -> str | None:
        match = LISTENING.search(server.stderr())
        return match.group(1) if match else None

    address: str = wait_until(logged, timeout=STEP)
    return address


def start_server(relay_cli: RelayCLI, wait_until: Any, *args: str) -> str:
    env = {"RELAY_AUTH": "required", "RELAY_JWT_SECRET": SECRET, "RELAY_EVENTS_INTERVAL": "0.1"}
    server = relay_cli.start("server", "--port", "0", "--grpc-port", "0", *args, env=env)
    return grpc_address(server, wait_until)


def remote_env(relay_cli: RelayCLI, url: str, **extra: str) -> dict[str, str]:
    scopes = ["--scope", "enqueue:*", "--scope", "admin:*"]
    token = relay_cli("token", "create", *scopes, "--ttl", "1h", env={"RELAY_JWT_SECRET": SECRET})
    assert token.returncode == 0, token.stderr
    # No storage URL: every command must go through the server.
    return {"RELAY_SERVER_URL": url, "RELAY_TOKEN": token.stdout.strip(), "RELAY_DATABASE_URL": "", **extra}


def ok(relay_cli: RelayCLI, *args: str, env: dict[str, str]) -> str:
    done = relay_cli(*args, env=env)
    assert done.returncode == 0, f"relay {' '.join(args)}: {done.stderr}"
    return done.stdout


def steady(job: dict[str, Any]) -> dict[str, Any]:
    """A running job without what its heartbeats change from one read to the next."""
    return {k: v for k, v in job.items() if k not in VOLATILE}


def state_of(relay_cli: RelayCLI, job_id: str, env: dict[str, str]) -> str:
    return str(json.loads(ok(relay_cli, "status", job_id, "--json", env=env))["state"])


def test_orqestras_flows_over_grpc(relay_cli: RelayCLI, wait_until: Any, tmp_path: Path) -> None:
    address = start_server(relay_cli, wait_until)
    relay_cli.start("worker", env={"RELAY_POLL_INTERVAL": "0.05", "RELAY_CANCEL_GRACE": "1"})
    remote = remote_env(relay_cli, f"grpc://{address}")

    job_id = ok(
        relay_cli, "submit", "--type=shell", '--payload={"command":"echo hello"}', "--retries=3", env=remote
    ).strip()
    wait_until(lambda: state_of(relay_cli, job_id, remote) == "completed", timeout=STEP)
    assert ok(relay_cli, "logs", job_id, env=remote).strip() == "hello"
    # The same job, field for field, as a local command reads it from storage.
    over_grpc = json.loads(ok(relay_cli, "status", job_id, "--json", env=remote))
    assert over_grpc == relay_cli.json("status", job_id)
    assert over_grpc["max_retries"] == 3
    assert ok(relay_cli, "status", job_id, env=remote).count(job_id) == 1

    # A job that runs until told otherwise (its lease short, so that the cancel reaches it quickly).
    release = tmp_path / "release"
    command = f"sh -c 'while [ ! -f {release} ]; do sleep 0.05; done'"
    document = {"type": "shell", "payload": {"command": command}, "lease": "1s", "queue": "default"}
    (tmp_path / "job.json").write_text(json.dumps(document))
    blocked = ok(relay_cli, "submit", str(tmp_path / "job.json"), env=remote).strip()
    wait_until(lambda: state_of(relay_cli, blocked, remote) == "running", timeout=STEP)
    table = ok(relay_cli, "list", "--status=running", env=remote)
    assert blocked in table
    assert job_id not in table
    running = json.loads(ok(relay_cli, "list", "--status=running", "--json", env=remote))
    local = relay_cli.json("list", "--status=running")
    assert [steady(job) for job in running] == [steady(job) for job in local]
    assert "cancel requested" in ok(relay_cli, "cancel", blocked, env=remote)
    wait_until(lambda: state_of(relay_cli, blocked, remote) == "cancelled", timeout=STEP)
    assert "pending again" in ok(relay_cli, "retry", blocked, env=remote)
    release.touch()
    wait_until(lambda: state_of(relay_cli, blocked, remote) == "completed", timeout=STEP)


def test_errors_over_grpc_are_one_line(relay_cli: RelayCLI, wait_until: Any) -> None:
    address = start_server(relay_cli, wait_until)
    remote = remote_env(relay_cli, f"grpc://{address}")
    missing = relay_cli("status", "nope", env=remote)
    assert (missing.returncode, missing.stderr) == (1, "error: no job with id 'nope'\n")
    invalid = relay_cli("submit", "--type=shell", '--payload={"command": ""}', env=remote)
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("error: --payload")
    bad_token = relay_cli("list", env={**remote, "RELAY_TOKEN": "not-a-token"})
    assert bad_token.returncode != 0
    assert len(bad_token.stderr.strip().splitlines()) == 1
    http_only = relay_cli("stats", env=remote)
    assert http_only.returncode == 3
    assert "http://" in http_only.stderr
    workflows = relay_cli("workflow", "list", env=remote)
    assert (workflows.returncode, workflows.stderr.count("\n")) == (3, 1)
    assert relay_cli.json("list") == []  # nothing was stored by the failed commands


def test_the_cli_over_grpc_with_tls(relay_cli: RelayCLI, wait_until: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    address = start_server(relay_cli, wait_until, "--grpc-tls-cert", str(cert), "--grpc-tls-key", str(key))
    port = address.rsplit(":", 1)[1]
    remote = remote_env(relay_cli, f"grpcs://127.0.0.1:{port}", RELAY_GRPC_TLS_CA=str(cert))
    job_id = ok(relay_cli, "submit", "--type=shell", '--payload={"command":"echo tls"}', env=remote).strip()
    assert state_of(relay_cli, job_id, remote) == "pending"
    plain = relay_cli("status", job_id, env={**remote, "RELAY_SERVER_URL": f"grpc://127.0.0.1:{port}"})
    assert plain.returncode == 3  # plain text to a TLS port: unreachable, in one line
    assert len(plain.stderr.strip().splitlines()) == 1
