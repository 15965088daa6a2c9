"""The native API end to end: httpx against the ASGI app, on a real SQLite file."""

from __future__ import annotations

from typing import Any

import httpx

from relay.app import Relay
from relay.server import ServerSettings
from relay.storage.params import ClaimParams, FinishItem, LogAppend
from relay.types import AttemptError, JobKind, JobState, Outcome, utcnow

from .helpers import api_client

SHELL = {"type": "SHELL", "payload": {"command": "/bin/echo", "args": ["hi"]}, "max_retries": 0}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"code", "message", "field"} <= set(error)
    return error


async def test_enqueue_returns_201_with_the_job(relay: Relay) -> None:
    document = {
        "type": "SHELL",
        "payload": {
            "command": "/usr/local/bin/process-data.sh",
            "args": ["--input", "/data/file.csv"],
            "timeout": "5m",
        },
        "on_success": {"type": "SHELL", "payload": {"command": "/usr/local/bin/notify.sh"}},
        "max_retries": 3,
        "backoff": "exponential",
    }
    async with api_client(relay) as api:
        response = await api.post("/api/v1/jobs", json=document)
        assert response.status_code == 201
        body = response.json()
        assert (body["created"], body["duplicate"]) == (True, False)
        job = body["job"]
        assert job["state"] == "pending"
        assert job["kind"] == "shell"
        assert job["timeout"] == 300.0
        assert job["on_success"]["payload"]["command"] == "/usr/local/bin/notify.sh"
        assert "lease_token" not in job
        fetched = await api.get(f"/api/v1/jobs/{job['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == job


async def test_repeated_idempotency_key_returns_the_same_job(relay: Relay) -> None:
    document = {**SHELL, "idempotency_key": "order-7", "delay": "10s"}
    async with api_client(relay) as api:
        first = await api.post("/api/v1/jobs", json=document)
        again = await api.post("/api/v1/jobs", json=document)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == {"created": False, "duplicate": True, "job": first.json()["job"]}
        different = await api.post("/api/v1/jobs", json={**document, "payload": {"command": "/bin/false"}})
        assert different.status_code == 409
        assert error_of(different) == {
            "code": "idempotency_conflict",
            "message": "idempotency key 'order-7' already names a different job",
            "field": "idempotency_key",
        }
        listed = (await api.get("/api/v1/jobs")).json()["jobs"]
        assert [j["id"] for j in listed] == [first.json()["job"]["id"]]


async def test_invalid_document_is_422_with_the_field_named(relay: Relay) -> None:
    async with api_client(relay) as api:
        response = await api.post(
            "/api/v1/jobs", json={"type": "shell", "payload": {"command": "x", "args": [1]}}
        )
        assert response.status_code == 422
        error = error_of(response)
        assert (error["code"], error["field"]) == ("invalid_job", "payload.args[0]")
        unknown = await api.post(
            "/api/v1/jobs", json={"type": "shell", "payload": {"command": "x"}, "retries": 3}
        )
        assert (unknown.status_code, error_of(unknown)["field"]) == (422, "retries")
        not_json = await api.post(
            "/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert (not_json.status_code, error_of(not_json)["code"]) == (400, "invalid_json")
        empty = await api.post("/api/v1/jobs")
        assert empty.status_code == 400
        assert (await api.get("/api/v1/jobs")).json()["jobs"] == []


async def test_duplicate_client_id_is_409(relay: Relay) -> None:
    async with api_client(relay) as api:
        assert (await api.post("/api/v1/jobs", json={**SHELL, "id": "job-1"})).status_code == 201
        again = await api.post("/api/v1/jobs", json={**SHELL, "id": "job-1"})
        assert again.status_code == 409
        assert error_of(again)["code"] == "duplicate_id"


async def test_nul_in_an_id_or_idempotency_key_is_refused(relay: Relay) -> None:
    async with api_client(relay) as api:
        for field in ("id", "idempotency_key"):
            response = await api.post("/api/v1/jobs", json={**SHELL, field: "a\u0000b"})
            assert (response.status_code, error_of(response)["field"]) == (422, field)
        runner = await api.post("/enqueue", json={"id": "a\u0000b", "queue": "q", "timeout": 5})
        assert (runner.status_code, error_of(runner)["field"]) == (422, "id")


async def test_batch_is_one_transaction(relay: Relay) -> None:
    async with api_client(relay) as api:
        bad = await api.post("/api/v1/jobs/batch", json=[SHELL, {"type": "shell"}])
        assert bad.status_code == 422
        assert error_of(bad)["field"] == "[1].payload"
        assert (await api.get("/api/v1/jobs")).json()["jobs"] == []
        good = await api.post("/api/v1/jobs/batch", json=[SHELL, {**SHELL, "queue": "other"}])
        assert good.status_code == 201
        items = good.json()["jobs"]
        assert [(i["created"], i["duplicate"], i["job"]["queue"], i["error"]) for i in items] == [
            (True, False, "default", None),
            (True, False, "other", None),
        ]
        assert (await api.post("/api/v1/jobs/batch", json=[])).status_code == 200


async def test_batch_reports_an_idempotency_conflict_per_document(relay: Relay) -> None:
    async with api_client(relay) as api:
        await api.post("/api/v1/jobs", json={**SHELL, "idempotency_key": "k"})
        response = await api.post(
            "/api/v1/jobs/batch",
            json=[{**SHELL, "queue": "q2"}, {**SHELL, "idempotency_key": "k", "priority": 5}],
        )
        assert response.status_code == 201
        first, second = response.json()["jobs"]
        assert (first["created"], first["duplicate"]) == (True, False)
        assert (second["created"], second["duplicate"], second["job"]) == (False, False, None)
        assert second["error"]["code"] == "idempotency_conflict"
        assert second["error"]["field"] == "[1].idempotency_key"


async def test_get_unknown_job_is_404(relay: Relay) -> None:
    async with api_client(relay) as api:
        response = await api.get("/api/v1/jobs/nope")
        assert response.status_code == 404
        assert error_of(response) == {
            "code": "not_found",
            "message": "no job with id 'nope'",
            "field": None,
            "detail": {"job_id": "nope"},
        }
        assert (await api.get("/api/v1/no-such-route")).status_code == 404
        assert error_of(await api.delete("/api/v1/jobs"))["code"] == "method_not_allowed"


async def test_ids_with_a_slash_are_addressable(relay: Relay) -> None:
    async with api_client(relay) as api:
        await api.post("/api/v1/jobs", json={**SHELL, "id": "user/42"})
        response = await api.get("/api/v1/jobs/user%2F42")
        assert response.status_code == 200
        assert response.json()["id"] == "user/42"
        assert (await api.get("/api/v1/jobs/user%2F42/logs")).json() == {"lines": [], "last_seq": 0}


async def test_list_filters_and_cursor_pagination(relay: Relay) -> None:
    async with api_client(relay) as api:
        ids = []
        for n in range(5):
            doc = {"type": "external", "payload": {"n": n, "needle": n == 3}, "queue": "a" if n % 2 else "b"}
            ids.append((await api.post("/api/v1/jobs", json=doc)).json()["job"]["id"])
        await api.post("/api/v1/jobs", json=SHELL)
        page = (await api.get("/api/v1/jobs", params={"limit": 2, "kind": "external"})).json()
        assert [j["id"] for j in page["jobs"]] == [ids[4], ids[3]]
        rest = (
            await api.get("/api/v1/jobs", params={"kind": "external", "cursor": page["next_cursor"]})
        ).json()
        assert [j["id"] for j in rest["jobs"]] == [ids[2], ids[1], ids[0]]
        assert rest["next_cursor"] is None
        by_queue = (await api.get("/api/v1/jobs", params=[("queue", "a")])).json()["jobs"]
        assert [j["id"] for j in by_queue] == [ids[3], ids[1]]
        by_text = (await api.get("/api/v1/jobs", params={"text": '"needle":true'})).json()["jobs"]
        assert [j["id"] for j in by_text] == [ids[3]]
        by_state = (await api.get("/api/v1/jobs", params=[("state", "dead"), ("state", "running")])).json()
        assert by_state == {"jobs": [], "next_cursor": None}
        bad_state = await api.get("/api/v1/jobs", params={"state": "exploded"})
        assert (bad_state.status_code, error_of(bad_state)["field"]) == (422, "query.state.0")
        bad_cursor = await api.get("/api/v1/jobs", params={"cursor": "not-a-cursor"})
        assert (bad_cursor.status_code, error_of(bad_cursor)["field"]) == (422, "query.cursor")
        bad_limit = await api.get("/api/v1/jobs", params={"limit": 0})
        assert (bad_limit.status_code, error_of(bad_limit)["field"]) == (422, "query.limit")


async def test_logs_by_attempt_and_after_seq(relay: Relay) -> None:
    async with api_client(relay) as api:
        job_id = (await api.post("/api/v1/jobs", json=SHELL)).json()["job"]["id"]
        await relay.storage.job_log_append(
            [LogAppend(job_id, 1, "stdout", "one\n"), LogAppend(job_id, 2, "stderr", "two\n")]
        )
        everything = (await api.get(f"/api/v1/jobs/{job_id}/logs")).json()
        assert [(line["attempt"], line["stream"], line["text"]) for line in everything["lines"]] == [
            (1, "stdout", "one\n"),
            (2, "stderr", "two\n"),
        ]
        first_seq = everything["lines"][0]["seq"]
        newer = (await api.get(f"/api/v1/jobs/{job_id}/logs", params={"after_seq": first_seq})).json()
        assert [line["text"] for line in newer["lines"]] == ["two\n"]
        assert newer["last_seq"] == everything["last_seq"]
        second = (await api.get(f"/api/v1/jobs/{job_id}/logs", params={"attempt": 2})).json()
        assert [line["text"] for line in second["lines"]] == ["two\n"]
        assert (await api.get("/api/v1/jobs/missing/logs")).status_code == 404


async def _make_dead(relay: Relay, queue: str = "default") -> str:
    [result] = await relay.storage.job_insert_many(
        [relay.shell_job(["/bin/false"], queue=queue, max_retries=0)]
    )
    [job] = await relay.storage.job_claim(ClaimParams([queue], "w", 1))
    error = AttemptError(1, "ExitCode", "exit 1", utcnow(), exit_code=1)
    await relay.storage.job_finish_many(
        [FinishItem(job.id, job.lease_token or "", Outcome.FAILED, error=error)]
    )
    return result.job.id


async def test_cancel_and_retry(relay: Relay) -> None:
    async with api_client(relay) as api:
        job_id = (await api.post("/api/v1/jobs", json=SHELL)).json()["job"]["id"]
        cancelled = await api.post(f"/api/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        again = await api.post(f"/api/v1/jobs/{job_id}/cancel")
        assert again.status_code == 409
        assert error_of(again)["detail"] == {"job_id": job_id, "state": "cancelled", "action": "cancel"}
        retried = await api.post(f"/api/v1/jobs/{job_id}/retry")
        assert retried.status_code == 200
        assert retried.json()["state"] == "pending"
        assert (await api.post(f"/api/v1/jobs/{job_id}/retry")).status_code == 409
        assert (await api.post("/api/v1/jobs/missing/cancel")).status_code == 404


async def test_running_job_cancel_is_requested(relay: Relay) -> None:
    async with api_client(relay) as api:
        await api.post("/api/v1/jobs", json=SHELL)
        [job] = await relay.storage.job_claim(ClaimParams(["default"], "w", 1))
        response = await api.post(f"/api/v1/jobs/{job.id}/cancel")
        assert response.json()["state"] == "running"
        assert response.json()["cancel_requested"] is True


async def test_dlq_list_requeue_and_purge(relay: Relay) -> None:
    async with api_client(relay) as api:
        dead = [await _make_dead(relay), await _make_dead(relay, "other"), await _make_dead(relay, "other")]
        listed = (await api.get("/api/v1/dlq")).json()
        assert {j["id"] for j in listed["jobs"]} == set(dead)
        assert listed["jobs"][0]["errors"][0]["type"] == "ExitCode"
        one = await api.post(f"/api/v1/dlq/{dead[0]}/requeue")
        assert one.status_code == 200
        assert one.json()["state"] == "pending"
        not_dead = await api.post(f"/api/v1/dlq/{dead[0]}/requeue")
        assert (not_dead.status_code, error_of(not_dead)["code"]) == (409, "invalid_state")
        all_other = (await api.post("/api/v1/dlq/requeue", params={"queue": "other"})).json()
        assert all_other["requeued"] == 2
        assert set(all_other["jobs"]) == set(dead[1:])
        dead_again = await _make_dead(relay, "third")
        assert (await api.delete("/api/v1/dlq", params={"queue": "other"})).json() == {"purged": 0}
        assert (await api.delete("/api/v1/dlq")).json() == {"purged": 1}
        assert (await api.get(f"/api/v1/jobs/{dead_again}")).status_code == 404


async def test_queues_counts_pause_and_resume(relay: Relay) -> None:
    async with api_client(relay) as api:
        await api.post("/api/v1/jobs", json=SHELL)
        await api.post("/api/v1/jobs", json={**SHELL, "queue": "emails", "delay": "1h"})
        paused = await api.post("/api/v1/queues/emails/pause")
        assert paused.json() == {"name": "emails", "paused": True}
        queues = {q["name"]: q for q in (await api.get("/api/v1/queues")).json()["queues"]}
        assert queues["default"]["counts"]["pending"] == 1
        assert queues["default"]["paused"] is False
        assert queues["default"]["oldest_pending_age_seconds"] >= 0
        assert queues["emails"]["counts"] == {s.value: int(s is JobState.SCHEDULED) for s in JobState}
        assert queues["emails"]["paused"] is True
        assert queues["emails"]["oldest_pending_at"] is None
        await api.post("/api/v1/queues/emails/resume")
        assert not any(q["paused"] for q in (await api.get("/api/v1/queues")).json()["queues"])
        bad = await api.post("/api/v1/queues/bad name/pause")
        assert (bad.status_code, error_of(bad)["field"]) == (422, "path.name")


async def test_workers(relay: Relay) -> None:
    worker = relay.worker(queues=("default",), concurrency=2)
    async with api_client(relay) as api:
        await relay.storage.worker_heartbeat(worker._worker_info())
        [listed] = (await api.get("/api/v1/workers")).json()["workers"]
        assert listed["id"] == worker.id
        assert listed["queues"] == ["default"]
        assert listed["running_count"] == 0
        assert isinstance(listed["pid"], int)
        assert listed["host"]
        assert listed["last_heartbeat_at"]


async def test_storage_unavailable_is_503(relay: Relay) -> None:
    async with api_client(relay) as api:
        await relay.storage.close()  # every call now fails as storage would when the disk is gone
        response = await api.get("/api/v1/jobs/x")
        assert (response.status_code, error_of(response)["code"]) == (503, "storage_unavailable")
        ready = await api.get("/readyz")
        assert (ready.status_code, error_of(ready)["code"]) == (503, "storage_unavailable")


async def test_external_jobs_are_not_claimed_by_workers(relay: Relay) -> None:
    async with api_client(relay) as api:
        await api.post("/api/v1/jobs", json={"type": "external", "payload": [1, 2]})
        assert await relay.storage.job_claim(ClaimParams(["default"], "w", 1)) == []
        [job] = await relay.storage.job_claim(ClaimParams(["default"], "w", 1, (JobKind.EXTERNAL,)))
        assert job.payload == [1, 2]


async def test_a_server_can_refuse_commands_run_by_a_shell(relay: Relay) -> None:
    piped = {"type": "shell", "payload": {"command": "ls | wc -l", "shell": True}}
    async with api_client(relay, ServerSettings(events_interval=0, allow_shell=False)) as api:
        refused = await api.post("/api/v1/jobs", json=piped)
        assert (refused.status_code, error_of(refused)["field"]) == (422, "payload.shell")
        chained = await api.post("/api/v1/jobs", json={**SHELL, "on_success": piped})
        assert (chained.status_code, error_of(chained)["field"]) == (422, "on_success.payload.shell")
        assert (await api.post("/api/v1/jobs", json=SHELL)).status_code == 201
