"""The workflow endpoints: definitions, trigger, runs (get, list, cancel) and retrying a step, on each
backend of FLOW_BACKENDS; bad input answered 4xx with Relay's error body and nothing stored; scopes; the
OpenAPI document; a server that refuses to start on a bad definition; and the HTTP clients."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.app import Relay
from relay.client import AsyncRelayClient, RelayClient
from relay.client.wire import workflow_definition_to_json, workflow_run_to_json
from relay.errors import (
    ConfigurationError,
    InvalidTransitionError,
    InvalidWorkflowError,
    WorkflowNotFoundError,
    WorkflowRunNotFoundError,
)
from relay.server import ServerSettings, create_app, mint_token
from relay.settings import Settings
from relay.storage.params import ClaimParams, FinishItem, WorkflowListParams
from relay.types import AttemptError, JobState, Outcome, RunState, WorkflowRun, utcnow

from .conftest import FLOW_BACKENDS
from .helpers import SECRET, ServerThread, api_client

CI = """\
name: ci
description: test, then build
params:
  ref: main
steps:
  - name: test
    command: /bin/echo test ${{ params.ref }}
    max_retries: 0
  - name: build
    command: /bin/echo build
    depends_on: [test]
"""
DEPLOY = """\
name: deploy
params:
  target: {required: true}
steps:
  - name: ship
    command: /bin/echo ${{ params.target }}
    queue: b
"""
API = "/api/v1"


def write_workflows(directory: Path, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(textwrap.dedent(text))
    return directory


@pytest.fixture(params=FLOW_BACKENDS)
def wf_relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Relay]:
    """A Relay on each backend of FLOW_BACKENDS, serving the workflows ci and deploy."""
    directory = write_workflows(tmp_path / "workflows", ci=CI, deploy=DEPLOY)
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/relay.db"
    app = Relay(settings=Settings(database_url=url, poll_interval=0.05, workflows_dir=str(directory)))
    yield app
    app.close()


async def runs_of(relay: Relay) -> list[WorkflowRun]:
    return (await relay.storage.workflow_list(WorkflowListParams(limit=100))).runs


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    return error


async def fail_step(relay: Relay, run: WorkflowRun, step: str) -> None:
    """Claim the step's job (it must be claimable now) and fail it for good: its job goes dead."""
    job_id = run.step(step).job_id
    claimed = await relay.storage.job_claim(ClaimParams(queues=["default"], worker_id="w-1", limit=10))
    [job] = [j for j in claimed if j.id == job_id]
    assert job.lease_token is not None
    error = AttemptError(job.attempt, "RuntimeError", "boom", utcnow(), None, 1, None)
    item = FinishItem(job.id, job.lease_token, Outcome.FAILED, error=error, retryable=False)
    [finished] = await relay.storage.job_finish_many([item])
    assert finished.state is JobState.DEAD


# -- definitions and trigger --------------------------------------------------------------------------


async def test_the_definitions_loaded_at_start_are_listed(wf_relay: Relay) -> None:
    async with api_client(wf_relay) as api:
        response = await api.get(f"{API}/workflows")
    assert response.status_code == 200
    listed = response.json()["workflows"]
    definitions = wf_relay.workflows()
    assert listed == [workflow_definition_to_json(definitions[name]) for name in ("ci", "deploy")]
    ci = listed[0]
    assert [s["name"] for s in ci["steps"]] == ["test", "build"]
    assert ci["steps"][1]["depends_on"] == ["test"]
    assert ci["params"] == [{"name": "ref", "default": "main", "required": False}]
    assert listed[1]["params"] == [{"name": "target", "default": None, "required": True}]


async def test_a_trigger_starts_a_run_and_answers_it(wf_relay: Relay) -> None:
    async with api_client(wf_relay) as api:
        response = await api.post(f"{API}/workflows/ci/runs", json={"params": {"ref": "dev"}})
        assert response.status_code == 201, response.text
        body = response.json()
        fetched = await api.get(f"{API}/workflow-runs/{body['id']}")
    assert body["workflow"] == "ci"
    assert body["state"] == "running"
    assert body["params"] == {"ref": "dev"}
    assert [(s["name"], s["state"], s["held"]) for s in body["steps"]] == [
        ("test", "pending", False),
        ("build", "pending", True),
    ]
    [stored] = await runs_of(wf_relay)
    assert body == workflow_run_to_json(stored) == fetched.json()
    job = await wf_relay.storage.job_get(stored.step("test").job_id)
    assert job is not None
    assert job.payload["argv"] == ["/bin/echo", "test", "dev"]


async def test_a_trigger_without_a_body_takes_the_defaults(wf_relay: Relay) -> None:
    async with api_client(wf_relay) as api:
        response = await api.post(f"{API}/workflows/ci/runs")
    assert response.status_code == 201, response.text
    assert response.json()["params"] == {"ref": "main"}


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "field"),
    [
        ("nope", {"params": {}}, 404, "not_found", None),
        ("ci", {"params": {"reff": "x"}}, 422, "invalid_workflow", "params.reff"),
        ("ci", {"params": {"ref": 3}}, 422, "invalid_workflow", "params.ref"),
        ("ci", {"params": ["ref"]}, 422, "invalid_workflow", "params"),
        ("ci", {"parameters": {}}, 422, "invalid_workflow", "parameters"),
        ("ci", ["params"], 422, "invalid_workflow", "body"),
        ("deploy", {}, 422, "invalid_workflow", "params.target"),
        ("no%20such", {}, 422, "invalid_request", "path.name"),
    ],
)
async def test_a_bad_trigger_is_refused_and_starts_nothing(
    wf_relay: Relay, path: str, body: Any, status: int, code: str, field: str | None
) -> None:
    async with api_client(wf_relay) as api:
        response = await api.post(f"{API}/workflows/{path}/runs", json=body)
        not_json = await api.post(f"{API}/workflows/ci/runs", content=b"{params")
    assert response.status_code == status, response.text
    error = error_of(response)
    assert (error["code"], error["field"]) == (code, field)
    if path == "nope":
        assert error["detail"] == {"workflow": "nope"}
    assert not_json.status_code == 400
    assert error_of(not_json)["code"] == "invalid_json"
    assert await runs_of(wf_relay) == []
    assert (await wf_relay.storage.queue_list()) == []  # not one job either


# -- runs: list, get, cancel, retry -------------------------------------------------------------------


async def test_runs_are_listed_newest_first_in_pages(wf_relay: Relay) -> None:
    async with api_client(wf_relay) as api:
        ids = []
        for params in ({"ref": "1"}, {"ref": "2"}, {"ref": "3"}):
            ids.append((await api.post(f"{API}/workflows/ci/runs", json={"params": params})).json()["id"])
        deploy = (await api.post(f"{API}/workflows/deploy/runs", json={"params": {"target": "x"}})).json()
        first = (await api.get(f"{API}/workflow-runs", params={"workflow": "ci", "limit": 2})).json()
        second = await api.get(
            f"{API}/workflow-runs", params={"workflow": "ci", "limit": 2, "cursor": first["next_cursor"]}
        )
        every = (await api.get(f"{API}/workflow-runs")).json()
        bad_cursor = await api.get(f"{API}/workflow-runs", params={"cursor": "not-a-cursor"})
        bad_limit = await api.get(f"{API}/workflow-runs", params={"limit": 0})
    assert [r["id"] for r in first["runs"]] == [ids[2], ids[1]]
    assert first["next_cursor"]
    assert [r["id"] for r in second.json()["runs"]] == [ids[0]]
    assert second.json()["next_cursor"] is None
    assert [r["id"] for r in every["runs"]] == [deploy["id"], *reversed(ids)]
    assert (bad_cursor.status_code, error_of(bad_cursor)["field"]) == (422, "query.cursor")
    assert (bad_limit.status_code, error_of(bad_limit)["field"]) == (422, "query.limit")


async def test_an_unknown_run_is_404_everywhere(wf_relay: Relay) -> None:
    async with api_client(wf_relay) as api:
        answers = [
            await api.get(f"{API}/workflow-runs/nope"),
            await api.post(f"{API}/workflow-runs/nope/cancel"),
            await api.post(f"{API}/workflow-runs/nope/steps/test/retry"),
        ]
    for response in answers:
        assert response.status_code == 404
        error = error_of(response)
        assert error["code"] == "not_found"
        assert error["detail"] == {"run_id": "nope"}


async def test_a_cancelled_run_cancels_its_waiting_steps(wf_relay: Relay) -> None:
    async with api_client(wf_relay) as api:
        run = (await api.post(f"{API}/workflows/ci/runs")).json()
        response = await api.post(f"{API}/workflow-runs/{run['id']}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "cancelled"
    assert body["cancelled"] is True
    assert {s["state"] for s in body["steps"]} == {"cancelled"}
    stored = await wf_relay.storage.workflow_get(run["id"])
    assert stored is not None
    assert stored.state is RunState.CANCELLED


async def test_a_failed_step_is_retried_and_the_run_goes_on(wf_relay: Relay) -> None:
    async with api_client(wf_relay) as api:
        run_id = (await api.post(f"{API}/workflows/ci/runs")).json()["id"]
        pending = await api.post(f"{API}/workflow-runs/{run_id}/steps/test/retry")
        before = await wf_relay.storage.workflow_get(run_id)
        assert before is not None
        await fail_step(wf_relay, before, "test")
        failed = (await api.get(f"{API}/workflow-runs/{run_id}")).json()
        unknown_step = await api.post(f"{API}/workflow-runs/{run_id}/steps/nope/retry")
        retried = await api.post(f"{API}/workflow-runs/{run_id}/steps/test/retry")
    # A step that has not failed cannot be retried, and nothing changes.
    assert pending.status_code == 409
    assert error_of(pending)["code"] == "invalid_state"
    assert [s.state for s in before.steps] == [JobState.PENDING, JobState.PENDING]
    assert failed["state"] == "failed"
    assert [s["state"] for s in failed["steps"]] == ["dead", "cancelled"]
    assert unknown_step.status_code == 404
    assert error_of(unknown_step)["field"] == "step"
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert body["state"] == "running"
    assert [(s["name"], s["state"], s["held"]) for s in body["steps"]] == [
        ("test", "pending", False),
        ("build", "pending", True),
    ]


# -- scopes ---------------------------------------------------------------------------------------------


AUTH = ServerSettings(events_interval=0, jwt_secret=SECRET)


def bearer(scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, [scope], '1h')}"}


async def test_scopes_are_those_of_the_steps_queues(wf_relay: Relay) -> None:
    read, enqueue, read_b = bearer("read:default"), bearer("enqueue:default"), bearer("read:b")
    async with api_client(wf_relay, AUTH, token=mint_token(SECRET, ["admin:*", "enqueue:*"], "1h")) as api:
        assert (await api.get(f"{API}/workflows", headers={"Authorization": ""})).status_code == 401
        listed = (await api.get(f"{API}/workflows", headers=read)).json()["workflows"]
        assert [w["name"] for w in listed] == ["ci"]
        refused = await api.post(f"{API}/workflows/ci/runs", headers=read)
        assert (refused.status_code, error_of(refused)["code"]) == (403, "forbidden")
        hidden = await api.post(
            f"{API}/workflows/deploy/runs", json={"params": {"target": "x"}}, headers=enqueue
        )
        assert hidden.status_code == 404
        run = (await api.post(f"{API}/workflows/ci/runs", headers=enqueue)).json()
        deploy = (await api.post(f"{API}/workflows/deploy/runs", json={"params": {"target": "x"}})).json()
        assert (await api.get(f"{API}/workflow-runs/{run['id']}", headers=read)).status_code == 200
        assert (await api.get(f"{API}/workflow-runs/{run['id']}", headers=read_b)).status_code == 404
        shown = (await api.get(f"{API}/workflow-runs", headers=read_b)).json()["runs"]
        assert [r["id"] for r in shown] == [deploy["id"]]
        assert (await api.get(f"{API}/workflow-runs", headers=enqueue)).status_code == 403
        cancel = await api.post(f"{API}/workflow-runs/{run['id']}/cancel", headers=read)
        retry = await api.post(f"{API}/workflow-runs/{run['id']}/steps/test/retry", headers=read)
        assert (cancel.status_code, retry.status_code) == (403, 403)
        assert error_of(cancel)["code"] == "forbidden"
        stored = await wf_relay.storage.workflow_get(run["id"])
        assert stored is not None
        assert stored.state is RunState.RUNNING  # nothing was cancelled
        admin = bearer("admin:default")
        assert (await api.post(f"{API}/workflow-runs/{run['id']}/cancel", headers=admin)).status_code == 200


# -- the OpenAPI document, and starting -----------------------------------------------------------------


async def test_the_openapi_document_lists_the_workflow_operations(wf_relay: Relay) -> None:
    async with api_client(wf_relay) as api:
        document = (await api.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths[f"{API}/workflows"]) == {"get"}
    assert set(paths[f"{API}/workflows/{{name}}/runs"]) == {"post"}
    assert set(paths[f"{API}/workflow-runs"]) == {"get"}
    assert set(paths[f"{API}/workflow-runs/{{run_id}}"]) == {"get"}
    assert set(paths[f"{API}/workflow-runs/{{run_id}}/cancel"]) == {"post"}
    assert set(paths[f"{API}/workflow-runs/{{run_id}}/steps/{{step}}/retry"]) == {"post"}
    trigger = paths[f"{API}/workflows/{{name}}/runs"]["post"]
    ref = trigger["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/WorkflowTrigger")
    assert {"201", "404", "422"} <= set(trigger["responses"])
    assert "409" in paths[f"{API}/workflow-runs/{{run_id}}/steps/{{step}}/retry"]["post"]["responses"]
    schemas = document["components"]["schemas"]
    assert {"WorkflowsOut", "WorkflowRunOut", "WorkflowRunsOut", "WorkflowTrigger"} <= set(schemas)


def test_a_bad_definition_stops_the_server_from_starting(tmp_path: Path) -> None:
    bad = "name: ci\nsteps:\n  - name: a\n    command: /bin/true\n    depends_on: [nope]\n"
    directory = write_workflows(tmp_path / "workflows", ci=bad)
    relay = Relay(settings=Settings(database_url="memory://", workflows_dir=str(directory)))
    with pytest.raises(ConfigurationError) as raised:
        create_app(relay, ServerSettings(events_interval=0))
    message = str(raised.value)
    assert f"{directory / 'ci.yaml'}:5: steps[0].depends_on" in message, message
    assert "no step is named 'nope'" in message


# -- the clients -----------------------------------------------------------------------------------------


async def test_the_async_client_covers_every_endpoint(wf_relay: Relay) -> None:
    app = create_app(wf_relay, ServerSettings(events_interval=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncRelayClient("http://127.0.0.1:4000", transport=transport) as client:
            assert [w["name"] for w in await client.list_workflows()] == ["ci", "deploy"]
            run = await client.trigger_workflow("ci", {"ref": "x"})
            assert run.params == {"ref": "x"}
            assert await client.get_workflow_run(run.id) == run
            page = await client.list_workflow_runs("ci", limit=10)
            assert [r.id for r in page.runs] == [run.id]
            assert page.next_cursor is None
            with pytest.raises(InvalidTransitionError):
                await client.retry_workflow_step(run.id, "test")
            cancelled = await client.cancel_workflow_run(run.id)
            assert cancelled.state is RunState.CANCELLED
            with pytest.raises(WorkflowNotFoundError):
                await client.trigger_workflow("nope", {})
            with pytest.raises(InvalidWorkflowError) as bad:
                await client.trigger_workflow("ci", {"reff": "x"})
            assert bad.value.field == "params.reff"
            with pytest.raises(WorkflowRunNotFoundError):
                await client.get_workflow_run("nope")


def test_the_sync_client_against_a_real_server(tmp_path: Path) -> None:
    directory = write_workflows(tmp_path / "workflows", ci=CI)
    relay = Relay(
        settings=Settings(database_url=f"sqlite:///{tmp_path}/relay.db", workflows_dir=str(directory))
    )
    server = ServerThread(relay, ServerSettings(events_interval=0, port=0)).start()
    try:
        with RelayClient(server.url) as client:
            assert [w["name"] for w in client.list_workflows()] == ["ci"]
            run = client.trigger_workflow("ci")
            assert client.get_workflow_run(run.id).steps == run.steps
            assert [r.id for r in client.list_workflow_runs().runs] == [run.id]
            with pytest.raises(InvalidTransitionError):
                client.retry_workflow_step(run.id, "build")
            assert client.cancel_workflow_run(run.id).state is RunState.CANCELLED
    finally:
        server.stop()
        relay.close()
