"""The ``relay`` command, run as a real subprocess against a SQLite file.

Each test drives the CLI the way a user would (files, stdin, flags, exit codes, stdout vs stderr); the
worker tests run real workers (``relay worker --burst``, ``relay up``, ``relay worker --processes 2``).
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from relay.runtime.supervisor import Supervisor

if TYPE_CHECKING:
    from .conftest import RelayCLI  # for annotations only: pytest, not an import, provides conftest

pytestmark = pytest.mark.slow

#: DESIGN.md section 3's legacy document, adapted to programs that exist on every machine.
LEGACY_DOCUMENT = {
    "type": "SHELL",
    "payload": {"command": "/bin/echo", "args": ["--input", "/data/file.csv"], "timeout": "5m"},
    "on_success": {"type": "SHELL", "payload": {"command": "/bin/echo notify"}},
    "max_retries": 3,
    "backoff": "exponential",
}
# Workers poll fast and elect a leader quickly, so that tests wait for conditions, not for timers.
FAST = {"RELAY_POLL_INTERVAL": "0.1", "RELAY_REAPER_INTERVAL": "0.2", "RELAY_LEADER_TTL": "2"}

Wait = Callable[..., Any]


def shell_doc(command: str, **fields: Any) -> dict[str, Any]:
    return {"type": "shell", "payload": {"command": command}, **fields}


def write_json(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def submit_one(relay_cli: RelayCLI, command: str, *flags: str) -> str:
    result = relay_cli("submit", "--type=shell", f"--payload={json.dumps({'command': command})}", *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def job(relay_cli: RelayCLI, job_id: str) -> dict[str, Any]:
    value: dict[str, Any] = relay_cli.json("status", job_id)
    return value


def assert_one_error(result: Any, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and said why in exactly one ``error:`` line on stderr."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    line: str = lines[0]
    return line


# -- submit -----------------------------------------------------------------------------------------


def test_legacy_document_is_accepted_and_listed_pending(relay_cli: RelayCLI, tmp_path: Path) -> None:
    submitted = relay_cli("submit", write_json(tmp_path / "job.json", LEGACY_DOCUMENT))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    listed = relay_cli("list")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith(job_id))
    assert row.split()[1:5] == ["default", "shell", "pending", "0/4"]
    assert "/bin/echo --input /data/file.csv" in row

    [stored] = relay_cli.json("list")
    assert stored["id"] == job_id
    assert (stored["max_retries"], stored["timeout"], stored["backoff"]["kind"]) == (3, 300.0, "exponential")
    assert stored["payload"]["argv"] == ["/bin/echo", "--input", "/data/file.csv"]
    assert stored["on_success"]["payload"] == {"command": "/bin/echo notify"}


def test_submit_json_array_enqueues_every_document(relay_cli: RelayCLI, tmp_path: Path) -> None:
    docs = [shell_doc(f"echo {i}") for i in range(3)]
    result = relay_cli("submit", write_json(tmp_path / "jobs.json", docs))
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 3
    assert {j["id"] for j in relay_cli.json("list", "--status=pending")} == set(ids)


def test_submit_json_lines_from_stdin(relay_cli: RelayCLI) -> None:
    lines = "\n".join(json.dumps(shell_doc(f"echo {i}", queue="lines")) for i in range(4))
    result = relay_cli("submit", "-", input=lines + "\n\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 4
    assert len(relay_cli.json("list", "--queue", "lines")) == 4


@pytest.mark.parametrize("form", ["array", "lines"])
def test_one_invalid_document_enqueues_none(relay_cli: RelayCLI, tmp_path: Path, form: str) -> None:
    docs = [shell_doc("echo 0"), shell_doc("echo 1"), {"type": "shell", "payload": {"command": ""}}]
    text = json.dumps(docs) if form == "array" else "\n".join(json.dumps(d) for d in docs)
    (tmp_path / "jobs.json").write_text(text)

    result = relay_cli("submit", "jobs.json")

    assert_one_error(result, 1, "[2].payload.command")
    assert result.stdout == ""
    assert relay_cli.json("list") == []


def test_submit_flag_form_and_idempotency_key(relay_cli: RelayCLI) -> None:
    flags = ("--queue=mail", "--retries=5", "--priority=7", "--delay=10s", "--idempotency-key=welcome-42")
    first = submit_one(relay_cli, "echo hello", *flags)
    stored = job(relay_cli, first)
    assert (stored["queue"], stored["max_retries"], stored["priority"]) == ("mail", 5, 7)
    assert stored["state"] == "scheduled"  # the delay puts it in the future

    again = relay_cli("submit", "--type=shell", '--payload={"command": "echo hello"}', *flags)
    assert again.returncode == 0
    assert again.stdout.strip() == first
    assert "existing job" in again.stderr
    assert len(relay_cli.json("list")) == 1


def test_json_outputs_parse(relay_cli: RelayCLI, tmp_path: Path) -> None:
    one = relay_cli.json("submit", write_json(tmp_path / "one.json", shell_doc("echo one")))
    many = relay_cli.json(
        "submit", write_json(tmp_path / "many.json", [shell_doc("echo a"), shell_doc("echo b")])
    )
    flag = relay_cli.json("submit", "--type=task", '--payload={"task": "billing.charge", "args": [42]}')
    assert one["created"] is True
    assert [j["state"] for j in many] == ["pending", "pending"]
    assert flag["payload"] == {"task": "billing.charge", "args": [42], "kwargs": {}}
    assert "lease_token" not in one

    assert len(relay_cli.json("list")) == 4
    assert relay_cli.json("status", one["id"])["id"] == one["id"]
    assert relay_cli.json("logs", one["id"]) == []
    assert relay_cli.json("dlq", "list") == []
    [default] = relay_cli.json("stats")["queues"]
    assert default["counts"]["pending"] == 4


# -- reading and steering jobs ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "show"])
def test_status_shows_the_job(relay_cli: RelayCLI, command: str) -> None:
    job_id = submit_one(relay_cli, "echo [bold]not markup[/bold]")
    result = relay_cli(command, job_id)
    assert result.returncode == 0, result.stderr
    assert job_id in result.stdout
    assert "pending" in result.stdout
    assert "echo '[bold]not' 'markup[/bold]'" in result.stdout


def test_cancel_then_retry(relay_cli: RelayCLI) -> None:
    job_id = submit_one(relay_cli, "echo cancel me")

    cancelled = relay_cli("cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert job(relay_cli, job_id)["state"] == "cancelled"
    assert_one_error(relay_cli("cancel", job_id), 1, "cannot cancel", "cancelled")

    retried = relay_cli("retry", job_id)
    assert retried.returncode == 0, retried.stderr
    assert job(relay_cli, job_id)["state"] == "pending"
    assert_one_error(relay_cli("retry", job_id), 1, "cannot requeue", "pending")


def test_list_filters_by_state_and_limit(relay_cli: RelayCLI) -> None:
    ids = [submit_one(relay_cli, f"echo {i}") for i in range(3)]
    relay_cli("cancel", ids[0])
    assert [j["id"] for j in relay_cli.json("list", "--status=pending")] == [ids[2], ids[1]]  # newest first
    assert [j["id"] for j in relay_cli.json("list", "--status=cancelled,pending", "--limit=1")] == [ids[2]]
    listed = relay_cli("list", "--limit=1")
    assert "more jobs match" in listed.stderr


def test_queue_pause_and_resume(relay_cli: RelayCLI) -> None:
    job_id = submit_one(relay_cli, "echo paused")
    assert relay_cli("queue", "pause", "default").returncode == 0
    assert relay_cli.json("stats")["queues"][0]["paused"] is True
    assert relay_cli("worker", "--burst", env=FAST).returncode == 0
    assert job(relay_cli, job_id)["state"] == "pending"

    assert relay_cli("queue", "resume", "default").returncode == 0
    assert relay_cli("worker", "--burst", env=FAST).returncode == 0
    assert job(relay_cli, job_id)["state"] == "completed"


def test_stats_counts_every_state(relay_cli: RelayCLI) -> None:
    submit_one(relay_cli, "echo hi")
    submit_one(relay_cli, "echo later", "--delay=1h", "--queue=later")
    stats = relay_cli.json("stats")
    by_name = {q["name"]: q for q in stats["queues"]}
    assert set(by_name["default"]["counts"]) == {
        "pending",
        "scheduled",
        "running",
        "completed",
        "failed",
        "dead",
        "cancelled",
    }
    assert by_name["default"]["counts"]["pending"] == 1
    assert by_name["later"]["counts"]["scheduled"] == 1
    table = relay_cli("stats").stdout
    assert "SCHEDULED" in table
    assert "later" in table


def test_migrate_reports_what_it_applied(relay_cli: RelayCLI) -> None:
    first = relay_cli("migrate")
    assert first.returncode == 0, first.stderr
    assert "applied " in first.stdout
    assert relay_cli.json("migrate") == {"applied": []}


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["status"], ["show"], ["logs"], ["cancel"], ["retry"], ["dlq", "requeue"]]
)
def test_unknown_job_id(relay_cli: RelayCLI, command: list[str]) -> None:
    relay_cli("migrate")
    line = assert_one_error(relay_cli(*command, "x"), 1)
    assert line == "error: no job with id 'x'"


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["list", "--status=finished"], 2, ["'finished' is not a job state", "pending, scheduled, running"]),
        (["submit", "no-such-file.json"], 1, ["cannot read no-such-file.json"]),
        (["submit", "--type=shell", '--payload={"command": ""}'], 1, ["--payload: command"]),
        (["submit", "--type=shell", "--payload={"], 2, ["--payload", "not valid JSON"]),
        (["submit", "--type=shell", '--payload={"command": "x"}', "--retries=-1"], 1, ["--retries"]),
        (["list", "--no-such-option"], 2, ["--no-such-option"]),
        (["--database-url", "sqlite:////nonexistent-dir/x.db", "list"], 3, ["nonexistent-dir"]),
        (["--database-url", "nosuch://x", "list"], 3, ["unknown storage URL scheme"]),
        (["worker", "--app", "no_such_module:relay"], 3, ["no module named 'no_such_module'"]),
        (["--database-url", "sqlite:////nonexistent-dir/x.db", "worker", "--burst"], 3, ["cannot open"]),
        (
            ["--database-url", "sqlite:////nonexistent-dir/x.db", "worker", "--processes=2"],
            3,
            ["cannot open"],
        ),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    relay_cli: RelayCLI, args: list[str], code: int, fragments: list[str]
) -> None:
    assert_one_error(relay_cli(*args), code, *fragments)


def test_database_url_from_flag_env_or_alias(relay_cli: RelayCLI, tmp_path: Path) -> None:
    default_db = relay_cli.env.pop("RELAY_DATABASE_URL")
    alias_db, flag_db = f"sqlite:///{tmp_path / 'alias.db'}", f"sqlite:///{tmp_path / 'flag.db'}"
    from_alias = submit_one(relay_cli, "echo alias", "--queue=alias")
    assert (tmp_path / "relay.db").exists()  # no variable at all: sqlite:///relay.db in the cwd
    relay_cli.env["RELAY_DB_DSN"] = alias_db
    from_dsn = submit_one(relay_cli, "echo dsn")
    from_flag = relay_cli("--database-url", flag_db, "submit", "--type=shell", '--payload={"command": "x"}')

    assert [j["id"] for j in relay_cli.json("list")] == [from_dsn]
    assert [j["id"] for j in relay_cli.json("list", env={"RELAY_DATABASE_URL": default_db})] == [from_alias]
    assert [j["id"] for j in relay_cli.json("--database-url", flag_db, "list")] == [from_flag.stdout.strip()]


def test_invalid_document_names_the_field(relay_cli: RelayCLI, tmp_path: Path) -> None:
    path = write_json(tmp_path / "bad.json", {"type": "shell", "payload": {"command": "x"}, "delay": "soon"})
    assert_one_error(relay_cli("submit", path), 1, "delay")


def test_unreadable_file(relay_cli: RelayCLI, tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    assert_one_error(relay_cli("submit", "a-directory"), 1, "cannot read a-directory")
    (tmp_path / "garbage.json").write_text("{not json")
    assert_one_error(relay_cli("submit", "garbage.json"), 1, "garbage.json is not valid JSON")


# -- running jobs -----------------------------------------------------------------------------------


def test_worker_burst_runs_a_shell_job_and_keeps_its_output(relay_cli: RelayCLI) -> None:
    job_id = submit_one(relay_cli, "echo hello")

    worker = relay_cli("worker", "--burst", env=FAST)
    assert worker.returncode == 0, worker.stderr

    completed = relay_cli("list", "--status=completed")
    assert job_id in completed.stdout
    logs = relay_cli("logs", job_id)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "hello\n"
    [line] = relay_cli.json("logs", job_id)
    assert (line["stream"], line["text"].strip(), line["attempt"]) == ("stdout", "hello", 1)


def test_dead_letter_queue(relay_cli: RelayCLI) -> None:
    dead_id = submit_one(relay_cli, "sh -c 'echo boom >&2; exit 3'", "--retries=0")
    assert relay_cli("worker", "--burst", env=FAST).returncode == 0

    listed = relay_cli("dlq", "list")
    assert dead_id in listed.stdout
    assert "exited with code 3" in listed.stdout
    status = relay_cli("status", dead_id).stdout
    assert "ExitCode" in status
    assert "boom" in status  # the stderr tail of the attempt

    assert relay_cli("dlq", "requeue", "--all").returncode == 0
    assert job(relay_cli, dead_id)["state"] == "pending"
    assert relay_cli("worker", "--burst", env=FAST).returncode == 0
    assert job(relay_cli, dead_id)["state"] == "dead"

    refused = relay_cli("dlq", "purge")  # stdin is not a terminal and there is no --yes
    assert_one_error(refused, 1, "--yes")
    assert job(relay_cli, dead_id)["state"] == "dead"
    purged = relay_cli("dlq", "purge", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 dead jobs" in purged.stdout
    assert relay_cli.json("dlq", "list") == []


def test_task_jobs_run_with_app(relay_cli: RelayCLI, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(
        textwrap.dedent(
            """
            from relay import Relay

            relay = Relay()

            @relay.task(name="math.add")
            def add(a, b):
                return a + b
            """
        )
    )
    task_id = relay_cli.json("submit", "--type=task", '--payload={"task": "math.add", "args": [2, 3]}')["id"]
    unknown_id = relay_cli.json("submit", "--type=task", '--payload={"task": "math.nope"}', "--retries=0")[
        "id"
    ]

    worker = relay_cli(
        "worker", "--app", "tasks:relay", "--burst", "--log-format=json", "--log-level=debug", env=FAST
    )
    assert worker.returncode == 0, worker.stderr
    events = [json.loads(line) for line in worker.stderr.splitlines()]
    assert {"claimed", "completed", "dead"} <= {e.get("event") for e in events}

    assert job(relay_cli, task_id)["result"] == 5
    unknown = job(relay_cli, unknown_id)
    assert unknown["state"] == "dead"
    assert unknown["errors"][-1]["type"] == "TaskNotFoundError"


def test_logs_follow_until_the_job_is_final(relay_cli: RelayCLI, wait_until: Wait) -> None:
    job_id = submit_one(relay_cli, "sh -c 'echo one; echo two >&2; echo three'")
    follower = relay_cli.start("logs", job_id, "--follow")
    relay_cli("worker", "--burst", env=FAST)
    assert follower.wait() == 0
    assert follower.stdout() == "one\nthree\n"
    assert follower.stderr() == "two\n"


def test_up_serves_until_sigterm(relay_cli: RelayCLI, wait_until: Wait) -> None:
    up = relay_cli.start("up", "--concurrency", "2", env=FAST)
    banner = wait_until(lambda: up.stdout().strip())
    assert "relay up:" in banner
    assert "relay.db" in banner
    assert "submit --type=shell" in banner

    job_id = submit_one(relay_cli, "echo from up")
    wait_until(lambda: job(relay_cli, job_id)["state"] == "completed")

    up.send_signal(signal.SIGTERM)
    assert up.wait() == 0
    assert "stopped" in up.stderr()


def test_supervisor_restarts_a_worker_killed_by_its_job(
    relay_cli: RelayCLI, tmp_path: Path, wait_until: Wait
) -> None:
    # The first attempt kills its own worker process (the job's parent); the second one succeeds.
    marker = tmp_path / "killed-once"
    command = f"if [ -e {marker} ]; then echo survived; else touch {marker}; kill -9 $PPID; fi"
    doc = {"type": "shell", "payload": {"command": command, "shell": True}, "lease": 1, "max_retries": 2}
    job_id = relay_cli.json("submit", write_json(tmp_path / "job.json", doc))["id"]

    supervisor = relay_cli.start("worker", "--processes", "2", env=FAST)
    wait_until(lambda: job(relay_cli, job_id)["state"] == "completed", timeout=30)

    done = job(relay_cli, job_id)
    assert done["attempt"] >= 2
    assert done["errors"][0]["type"] == "LeaseExpired"
    assert relay_cli("logs", job_id).stdout.strip() == "survived"
    wait_until(lambda: "restarting it" in supervisor.stderr())
    wait_until(lambda: supervisor.stderr().count(" serving ") >= 3)  # the restarted child is up too

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait() == 0
    log = supervisor.stderr()
    assert "all worker processes have exited" in log
    assert log.count("stopped after") >= 2  # every child stopped gracefully


def test_supervisor_forwards_a_second_signal(relay_cli: RelayCLI, wait_until: Wait) -> None:
    job_id = submit_one(relay_cli, "sleep 60")
    supervisor = relay_cli.start("worker", "--processes", "2", env=FAST)
    wait_until(lambda: job(relay_cli, job_id)["state"] == "running")
    wait_until(lambda: supervisor.stderr().count(" serving ") == 2)  # both children are up

    supervisor.send_signal(signal.SIGINT)  # phase one: the job would get its 30s grace period
    wait_until(lambda: "finish running jobs" in supervisor.stderr())
    supervisor.send_signal(signal.SIGINT)  # phase two: release it now

    assert supervisor.wait(timeout=15) == 0, supervisor.stderr()
    released = job(relay_cli, job_id)
    assert (released["state"], released["attempt"]) == ("pending", 0)
    assert "release running jobs now" in supervisor.stderr()


# A child that fails (exit code from argv[2]) on its first run and exits 0 on the next.
FLAKY_CHILD = """
import pathlib, sys
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.touch()
    sys.exit(int(sys.argv[2]))
"""


@pytest.mark.parametrize("dies_by", ["exit code 1", "SIGKILL"])
def test_supervisor_restarts_a_child_that_dies(tmp_path: Path, dies_by: str) -> None:
    script = FLAKY_CHILD
    if dies_by == "SIGKILL":
        script = script.replace("sys.exit(int(sys.argv[2]))", "import os; os.kill(os.getpid(), 9)")
    supervisor = Supervisor(
        [str(tmp_path / "ran-once"), "1"], 1, command_prefix=[sys.executable, "-c", script], backoff=0.01
    )
    assert supervisor.run() == 0  # the restarted child exited 0: nothing left to supervise
    assert supervisor.restarts == 1


def test_supervisor_gives_up_on_a_usage_error(tmp_path: Path) -> None:
    supervisor = Supervisor(
        [str(tmp_path / "ran-once"), "2"], 2, command_prefix=[sys.executable, "-c", FLAKY_CHILD], backoff=0.01
    )
    assert supervisor.run() == 2
    assert supervisor.restarts == 0
