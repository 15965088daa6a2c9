"""Flow control on the HTTP API: queue limits (``/api/v1/queues/{name}``, ``.../limits``), schedules
(``/api/v1/schedules``), their errors, their scopes and their OpenAPI entries, in-process against each
backend of FLOW_BACKENDS, on an injected clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from relay.app import Relay
from relay.clock import ManualClock
from relay.server import ServerSettings, mint_token
from relay.server.schemas import (
    BatchOut,
    ChainedJob,
    EnqueuedOut,
    JobOut,
    QueueOut,
    ScheduleOut,
    SchedulesOut,
)

from .conftest import START
from .helpers import SECRET, api_client

ALL = "enqueue:* read:* work:* admin:*"
AUTH = ServerSettings(events_interval=0, jwt_secret=SECRET)
LIMITS = {
    "rate": "100/s",
    "burst": 20,
    "key_rate": "10/m",
    "key_concurrency": 1,
    "concurrency": 5,
    "ordering_dead": "block",
}
LIMITS_JSON = {
    "rate": 100.0,
    "burst": 20,
    "key_rate": 10 / 60,
    "key_burst": 1,  # one second's worth of 10/m, at least 1
    "concurrency": 5,
    "key_concurrency": 1,
    "ordering_dead": "block",
}
NO_LIMITS_JSON = {
    "rate": None,
    "burst": None,
    "key_rate": None,
    "key_burst": None,
    "concurrency": None,
    "key_concurrency": None,
    "ordering_dead": "continue",
}
JOB = {"type": "shell", "payload": {"command": "/usr/local/bin/report.sh"}, "queue": "a"}
NIGHTLY = {"schedule": "0 3 * * *", "timezone": "Europe/Berlin", "job": JOB}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


def token(scope: str) -> str:
    return mint_token(SECRET, scope, 60)


# -- queue limits -----------------------------------------------------------------------------------


async def test_set_limits_answers_the_queue_with_its_limits_and_tokens(flow_relay: Relay) -> None:
    async with api_client(flow_relay) as api:
        response = await api.put("/api/v1/queues/emails/limits", json=LIMITS)
        assert response.status_code == 200, response.text
        queue = response.json()
        assert queue["name"] == "emails"
        assert queue["limits"] == pytest.approx(LIMITS_JSON)
        assert queue["tokens"] == 20.0  # a new bucket is full
        assert (await api.get("/api/v1/queues/emails")).json() == queue
        [listed] = (await api.get("/api/v1/queues")).json()["queues"]
        assert listed == queue
        [info] = await flow_relay.storage.queue_list()
        assert info.limits.rate is not None
        assert (info.limits.rate.rate, info.limits.rate.burst) == (100.0, 20)
        assert info.limits.concurrency == 5


async def test_empty_limits_clear_every_limit(flow_relay: Relay) -> None:
    async with api_client(flow_relay) as api:
        await api.put("/api/v1/queues/emails/limits", json=LIMITS)
        cleared = await api.put("/api/v1/queues/emails/limits", json={})
        assert cleared.status_code == 200
        assert (cleared.json()["limits"], cleared.json()["tokens"]) == (NO_LIMITS_JSON, None)
        [info] = await flow_relay.storage.queue_list()
        assert not info.limits.limited


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": -5}, "rate"),
        ({"rate": "-1/s"}, "rate"),
        ({"rate": "fast"}, "rate"),
        ({"rate": 10, "burst": 0}, "burst"),
        ({"burst": 5}, "burst"),
        ({"key_rate": "1/s", "key_burst": -1}, "key_burst"),
        ({"key_burst": 5}, "key_burst"),
        ({"concurrency": 0}, "concurrency"),
        ({"key_concurrency": "two"}, "key_concurrency"),
        ({"ordering_dead": "maybe"}, "ordering_dead"),
        ({"speed": 1}, "speed"),
        ([LIMITS], None),
    ],
)
async def test_invalid_limits_are_422_naming_the_field_and_change_nothing(
    flow_relay: Relay, document: Any, field: str | None
) -> None:
    async with api_client(flow_relay) as api:
        before = (await api.put("/api/v1/queues/emails/limits", json=LIMITS)).json()
        error = error_of(await api.put("/api/v1/queues/emails/limits", json=document), 422)
        assert (error["code"], error["field"]) == ("invalid_limit", field)
        assert (await api.get("/api/v1/queues/emails")).json() == before
        # Nor is a queue registered by a refused request.
        error_of(await api.put("/api/v1/queues/fresh/limits", json=document), 422)
        error_of(await api.get("/api/v1/queues/fresh"), 404)
    assert [q.name for q in await flow_relay.storage.queue_list()] == ["emails"]


async def test_a_limits_body_must_be_json(flow_relay: Relay) -> None:
    async with api_client(flow_relay) as api:
        error = error_of(await api.put("/api/v1/queues/emails/limits", content=b"rate=5"), 400)
        assert error["code"] == "invalid_json"
        error = error_of(await api.put("/api/v1/queues/emails/limits"), 400)
        assert error["code"] == "invalid_json"
    assert await flow_relay.storage.queue_list() == []


async def test_one_queue_is_404_when_unknown(flow_relay: Relay) -> None:
    async with api_client(flow_relay) as api:
        error = error_of(await api.get("/api/v1/queues/nope"), 404)
        assert error == {
            "code": "not_found",
            "message": "no queue named 'nope'",
            "field": None,
            "detail": {"queue": "nope"},
        }
        assert error_of(await api.get("/api/v1/queues/bad%20name"), 422)["field"] == "path.name"
        await api.post("/api/v1/jobs", json=JOB)
        queue = (await api.get("/api/v1/queues/a")).json()
        assert (queue["counts"]["pending"], queue["limits"], queue["tokens"]) == (1, NO_LIMITS_JSON, None)


# -- schedules --------------------------------------------------------------------------------------


async def test_schedule_lifecycle(flow_relay: Relay, clock: ManualClock) -> None:
    async with api_client(flow_relay) as api:
        created = await api.put("/api/v1/schedules/nightly", json=NIGHTLY)
        assert created.status_code == 201, created.text
        schedule = created.json()
        assert {k: schedule[k] for k in ("name", "schedule", "timezone", "catch_up", "paused")} == {
            "name": "nightly",
            "schedule": "0 3 * * *",
            "timezone": "Europe/Berlin",
            "catch_up": "once",
            "paused": False,
        }
        assert schedule["description"] == "At 03:00 every day"
        assert schedule["next_run_at"] == "2026-03-07T02:00:00+00:00"  # 03:00 in Berlin (CET)
        assert (schedule["last_run_at"], schedule["last_job_id"]) == (None, None)
        assert (schedule["job"]["queue"], schedule["job"]["payload"]["command"]) == (
            "a",
            "/usr/local/bin/report.sh",
        )
        assert (await api.get("/api/v1/schedules/nightly")).json() == schedule
        assert (await api.get("/api/v1/schedules")).json() == {"schedules": [schedule]}

        # Redefined with another job, same spec: 200, its next run and creation kept.
        clock.advance(60)
        other_job = {**JOB, "priority": 7}
        redefined = await api.put("/api/v1/schedules/nightly", json={**NIGHTLY, "job": other_job})
        assert redefined.status_code == 200
        again = redefined.json()
        assert again["job"]["priority"] == 7
        assert (again["next_run_at"], again["created_at"]) == (
            schedule["next_run_at"],
            schedule["created_at"],
        )
        assert again["updated_at"] > schedule["updated_at"]
        moved = (await api.put("/api/v1/schedules/nightly", json={**NIGHTLY, "schedule": "@hourly"})).json()
        assert (moved["next_run_at"], moved["description"]) == (
            "2026-03-06T13:00:00+00:00",
            "At the start of every hour",
        )

        paused = await api.post("/api/v1/schedules/nightly/pause")
        assert (paused.status_code, paused.json()["paused"]) == (200, True)
        clock.set(START + timedelta(hours=5, minutes=30))  # 13:00 ... 17:00 pass while it is paused
        resumed = await api.post("/api/v1/schedules/nightly/resume")
        assert resumed.status_code == 200
        assert (resumed.json()["paused"], resumed.json()["next_run_at"]) == (
            False,
            "2026-03-06T18:00:00+00:00",
        )
        # Resuming a schedule that runs changes nothing (its due tick is not skipped).
        clock.advance(3600)
        assert (await api.post("/api/v1/schedules/nightly/resume")).json() == resumed.json()

        removed = await api.delete("/api/v1/schedules/nightly")
        assert (removed.status_code, removed.content) == (204, b"")
        assert await flow_relay.storage.schedule_list() == []
        for response in (
            await api.get("/api/v1/schedules/nightly"),
            await api.delete("/api/v1/schedules/nightly"),
            await api.post("/api/v1/schedules/nightly/pause"),
            await api.post("/api/v1/schedules/nightly/resume"),
        ):
            assert error_of(response, 404) == {
                "code": "not_found",
                "message": "no schedule named 'nightly'",
                "field": None,
                "detail": {"schedule": "nightly"},
            }
        assert (await api.get("/api/v1/schedules")).json() == {"schedules": []}


async def test_a_schedule_from_a_command_and_an_interval(flow_relay: Relay) -> None:
    document = {"name": "tick", "schedule": "every 30s", "command": ["/bin/echo", "tick"], "catch_up": "skip"}
    async with api_client(flow_relay) as api:
        schedule = (await api.put("/api/v1/schedules/tick", json=document)).json()
    assert (schedule["description"], schedule["catch_up"]) == ("every 30s", "skip")
    assert schedule["next_run_at"] == "2026-03-06T12:00:30+00:00"
    assert schedule["job"]["kind"] == "shell"
    assert schedule["job"]["payload"]["argv"] == ["/bin/echo", "tick"]
    stored = await flow_relay.storage.schedule_get("tick")
    assert stored is not None
    assert stored.job.payload["argv"] == ["/bin/echo", "tick"]


async def test_the_body_name_must_be_the_path_name(flow_relay: Relay) -> None:
    async with api_client(flow_relay) as api:
        error = error_of(await api.put("/api/v1/schedules/nightly", json={**NIGHTLY, "name": "other"}), 422)
        assert (error["code"], error["field"]) == ("invalid_schedule", "name")
        assert await flow_relay.storage.schedule_list() == []
        same = await api.put("/api/v1/schedules/nightly", json={**NIGHTLY, "name": "nightly"})
        assert (same.status_code, same.json()["name"]) == (201, "nightly")
        error = error_of(await api.put("/api/v1/schedules/has%20space", json=NIGHTLY), 422)
        assert (error["code"], error["field"]) == ("invalid_request", "path.name")


@pytest.mark.parametrize(
    ("document", "code", "field"),
    [
        ({**NIGHTLY, "schedule": "61 * * * *"}, "invalid_schedule", "schedule"),
        ({**NIGHTLY, "schedule": "* * *"}, "invalid_schedule", "schedule"),
        ({**NIGHTLY, "schedule": "@sometimes"}, "invalid_schedule", "schedule"),
        ({**NIGHTLY, "schedule": "every 0s"}, "invalid_schedule", "schedule"),
        ({**NIGHTLY, "schedule": "0 0 30 2 *"}, "invalid_schedule", "schedule"),  # February 30th
        ({**NIGHTLY, "timezone": "Mars/Olympus_Mons"}, "invalid_schedule", "timezone"),
        ({**NIGHTLY, "catch_up": "sometimes"}, "invalid_schedule", "catch_up"),
        ({**NIGHTLY, "job": {"type": "shell"}}, "invalid_job", "job.payload"),
        ({**NIGHTLY, "job": {**JOB, "queue": "no spaces"}}, "invalid_job", "job.queue"),
        ({**NIGHTLY, "command": "x"}, "invalid_schedule", "job"),  # job and command
        ({"schedule": "@daily"}, "invalid_schedule", "job"),  # neither
        ({**NIGHTLY, "every": "day"}, "invalid_schedule", "every"),
        ([NIGHTLY], "invalid_schedule", None),
    ],
)
async def test_invalid_schedules_are_422_naming_the_field_and_store_nothing(
    flow_relay: Relay, document: Any, code: str, field: str | None
) -> None:
    async with api_client(flow_relay) as api:
        error = error_of(await api.put("/api/v1/schedules/nightly", json=document), 422)
        assert (error["code"], error["field"]) == (code, field)
        assert await flow_relay.storage.schedule_list() == []
        # Nor does a bad redefinition touch the schedule it names.
        before = (await api.put("/api/v1/schedules/nightly", json=NIGHTLY)).json()
        error_of(await api.put("/api/v1/schedules/nightly", json=document), 422)
        assert (await api.get("/api/v1/schedules/nightly")).json() == before


async def test_a_server_without_shell_refuses_a_shell_schedule(flow_relay: Relay) -> None:
    settings = ServerSettings(events_interval=0, allow_shell=False)
    document = {**NIGHTLY, "job": {**JOB, "payload": {"command": "echo hi | wc", "shell": True}}}
    async with api_client(flow_relay, settings) as api:
        error = error_of(await api.put("/api/v1/schedules/nightly", json=document), 422)
        assert (error["code"], error["field"]) == ("invalid_job", "job.payload.shell")
    assert await flow_relay.storage.schedule_list() == []


# -- scopes -----------------------------------------------------------------------------------------


async def define(api: httpx.AsyncClient, name: str, queue: str) -> dict[str, Any]:
    response = await api.put(f"/api/v1/schedules/{name}", json={**NIGHTLY, "job": {**JOB, "queue": queue}})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_reading_needs_read_on_the_queue(flow_relay: Relay) -> None:
    async with api_client(flow_relay, AUTH, token(ALL)) as admin:
        in_a = await define(admin, "in-a", "a")
        await define(admin, "in-b", "b")
        await admin.put("/api/v1/queues/a/limits", json=LIMITS)
        await admin.put("/api/v1/queues/b/limits", json=LIMITS)
    async with api_client(flow_relay, AUTH, token("read:a")) as api:
        assert (await api.get("/api/v1/schedules")).json() == {"schedules": [in_a]}
        assert (await api.get("/api/v1/schedules/in-a")).json() == in_a
        error_of(await api.get("/api/v1/schedules/in-b"), 404)  # its existence does not leak
        assert (await api.get("/api/v1/queues/a")).json()["limits"] == pytest.approx(LIMITS_JSON)
        assert error_of(await api.get("/api/v1/queues/b"), 403)["detail"] == {"scope": "read:b"}
    async with api_client(flow_relay, AUTH, token("admin:a")) as api:  # admin implies read
        assert [s["name"] for s in (await api.get("/api/v1/schedules")).json()["schedules"]] == ["in-a"]
    async with api_client(flow_relay, AUTH, token("enqueue:*")) as api:
        for path in ("/api/v1/schedules", "/api/v1/schedules/in-a"):
            assert error_of(await api.get(path), 403)["detail"] == {"scope": "read:*"}


async def test_changing_needs_admin_on_the_queue(flow_relay: Relay) -> None:
    async with api_client(flow_relay, AUTH, token(ALL)) as admin:
        await define(admin, "in-a", "a")
        await define(admin, "in-b", "b")
        limits_a = (await admin.put("/api/v1/queues/a/limits", json=LIMITS)).json()
    before = (await flow_relay.storage.schedule_list(), await flow_relay.storage.queue_list())
    async with api_client(flow_relay, AUTH, token("read:* enqueue:*")) as reader:
        for response in (
            await reader.put("/api/v1/queues/a/limits", json={}),
            await reader.put("/api/v1/schedules/new", json=NIGHTLY),
            await reader.put("/api/v1/schedules/in-a", json=NIGHTLY),
            await reader.delete("/api/v1/schedules/in-a"),
            await reader.post("/api/v1/schedules/in-a/pause"),
            await reader.post("/api/v1/schedules/in-a/resume"),
        ):
            assert error_of(response, 403)["code"] == "forbidden"
    async with api_client(flow_relay, AUTH, token("admin:a read:b")) as api:
        b_job = {**JOB, "queue": "b"}
        chained_into_b = {**JOB, "on_success": b_job}
        refused = {
            "limits of b": await api.put("/api/v1/queues/b/limits", json={}),
            "a schedule of b": await api.put("/api/v1/schedules/new", json={**NIGHTLY, "job": b_job}),
            "a chain into b": await api.put("/api/v1/schedules/new", json={**NIGHTLY, "job": chained_into_b}),
            "b's schedule into a": await api.put("/api/v1/schedules/in-b", json=NIGHTLY),
            "delete b's": await api.delete("/api/v1/schedules/in-b"),
            "pause b's": await api.post("/api/v1/schedules/in-b/pause"),
        }
        for what, response in refused.items():
            assert error_of(response, 403)["detail"] == {"scope": "admin:b"}, what
        assert await flow_relay.storage.schedule_list() == before[0]
        assert await flow_relay.storage.queue_list() == before[1]
        # And on its own queue it may do everything.
        assert (await api.put("/api/v1/queues/a/limits", json=LIMITS)).json() == limits_a
        assert (await api.put("/api/v1/schedules/new", json=NIGHTLY)).status_code == 201
        assert (await api.post("/api/v1/schedules/in-a/pause")).json()["paused"] is True
        assert (await api.post("/api/v1/schedules/in-a/resume")).json()["paused"] is False
        assert (await api.delete("/api/v1/schedules/in-a")).status_code == 204
    async with api_client(flow_relay, AUTH, token("admin:a")) as api:
        # A schedule of a queue it cannot even read is not found; redefining it is refused unnamed.
        error_of(await api.delete("/api/v1/schedules/in-b"), 404)
        error_of(await api.post("/api/v1/schedules/in-b/resume"), 404)
        error = error_of(await api.put("/api/v1/schedules/in-b", json=NIGHTLY), 403)
        assert "queue" not in error.get("detail", {})
        assert "'b'" not in error["message"]
    assert [s.name for s in await flow_relay.storage.schedule_list()] == ["in-b", "new"]
    stored_b = await flow_relay.storage.schedule_get("in-b")
    assert stored_b is not None
    assert stored_b.job.queue == "b"


# -- the OpenAPI document ---------------------------------------------------------------------------


async def test_the_openapi_document_lists_the_new_operations(flow_relay: Relay) -> None:
    async with api_client(flow_relay) as api:
        document = (await api.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/api/v1/queues/{name}"]) == {"get"}
    assert set(paths["/api/v1/queues/{name}/limits"]) == {"put"}
    assert set(paths["/api/v1/schedules"]) == {"get"}
    assert set(paths["/api/v1/schedules/{name}"]) == {"get", "put", "delete"}
    assert set(paths["/api/v1/schedules/{name}/pause"]) == {"post"}
    assert set(paths["/api/v1/schedules/{name}/resume"]) == {"post"}

    def body_ref(path: str, method: str) -> str:
        ref: str = paths[path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[1]

    assert body_ref("/api/v1/queues/{name}/limits", "put") == "LimitsDocument"
    assert body_ref("/api/v1/schedules/{name}", "put") == "ScheduleDocument"
    assert set(paths["/api/v1/schedules/{name}"]["put"]["responses"]) >= {"200", "201", "403", "422"}
    schemas = document["components"]["schemas"]
    assert {"limits", "tokens"} <= set(schemas["QueueOut"]["required"])
    assert set(schemas["LimitsOut"]["properties"]) == set(NO_LIMITS_JSON)
    assert "description" in schemas["ScheduleOut"]["required"]
    assert set(schemas["ScheduleDocument"]["properties"]) == {
        "name",
        "schedule",
        "timezone",
        "catch_up",
        "job",
        "command",
    }
    assert {"duplicate", "created"} <= set(schemas["EnqueuedOut"]["required"])
    assert {"duplicate", "created"} <= set(schemas["BatchItemOut"]["required"])
    assert {"rate_key", "ordering_key", "held", "unique_until"} <= set(schemas["JobOut"]["required"])


# -- duplicate enqueues -----------------------------------------------------------------------------


async def test_a_duplicate_enqueue_answers_the_existing_job_with_duplicate_true(flow_relay: Relay) -> None:
    document = {**JOB, "idempotency_key": "report-7", "ordering_key": "acct-1", "unique_while": "active"}
    async with api_client(flow_relay) as api:
        first = await api.post("/api/v1/jobs", json=document)
        assert (first.status_code, first.json()["created"], first.json()["duplicate"]) == (201, True, False)
        job = first.json()["job"]
        assert (job["ordering_key"], job["unique_while"], job["held"]) == ("acct-1", "active", False)
        again = await api.post("/api/v1/jobs", json=document)
        assert again.status_code == 200
        assert again.json() == {"created": False, "duplicate": True, "job": job}
        batch = await api.post("/api/v1/jobs/batch", json=[document, {**JOB, "idempotency_key": "other"}])
        assert batch.status_code == 201
        assert [(i["created"], i["duplicate"], i["error"]) for i in batch.json()["jobs"]] == [
            (False, True, None),
            (True, False, None),
        ]
        assert batch.json()["jobs"][0]["job"] == job
        # The flow-control keys are part of the job: another ordering key is another job.
        conflict = await api.post("/api/v1/jobs", json={**document, "ordering_key": "acct-2"})
        assert error_of(conflict, 409)["code"] == "idempotency_conflict"
        listed = (await api.get("/api/v1/jobs", params={"queue": "a"})).json()["jobs"]
        assert len(listed) == 2


async def test_the_answers_match_their_declared_models(flow_relay: Relay) -> None:
    """The fuzz test's random schedules are rarely valid: check real answers against the models here."""
    async with api_client(flow_relay) as api:
        await api.post(
            "/api/v1/jobs", json={**JOB, "rate_key": "k", "idempotency_key": "i", "unique_for": "1h"}
        )
        enqueued = (
            await api.post("/api/v1/jobs", json={**JOB, "rate_key": "k", "idempotency_key": "i"})
        ).json()
        batch = (await api.post("/api/v1/jobs/batch", json=[JOB])).json()
        queue = (await api.put("/api/v1/queues/a/limits", json=LIMITS)).json()
        chained = {**JOB, "on_success": {**JOB, "ordering_key": "o"}}
        schedule = (await api.put("/api/v1/schedules/s", json={**NIGHTLY, "job": chained})).json()
        listed = (await api.get("/api/v1/schedules")).json()
    assert enqueued["duplicate"] is True
    assert enqueued["job"]["unique_until"] is not None
    EnqueuedOut.model_validate(enqueued)
    BatchOut.model_validate(batch)
    QueueOut.model_validate(queue)
    assert ScheduleOut.model_validate(schedule).job.on_success is not None
    SchedulesOut.model_validate(listed)
    for model, body in ((EnqueuedOut, enqueued), (QueueOut, queue), (ScheduleOut, schedule)):
        assert set(body) == set(model.model_fields), model.__name__
    assert set(enqueued["job"]) == set(JobOut.model_fields)
    assert set(schedule["job"]) == set(ChainedJob.model_fields)
