"""Flow control through the ``relay`` command, run as a real subprocess on a SQLite file: queue limits,
schedules (the CLI, ``--schedule`` and ``relay.toml``), the job fields of ``relay submit``, and bad input
refused with one ``error:`` line, a non-zero exit code and nothing stored."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .test_cli import FAST, assert_one_error

if TYPE_CHECKING:
    from .conftest import RelayCLI

pytestmark = pytest.mark.slow

Wait = Callable[..., Any]
EXIT_USER_ERROR, EXIT_USAGE, EXIT_CONFIGURATION = 1, 2, 3


def queue(relay_cli: RelayCLI, name: str) -> dict[str, Any]:
    queues = {q["name"]: q for q in relay_cli.json("queue", "list")["queues"]}
    found: dict[str, Any] = queues[name]
    return found


def test_queue_limits_are_set_merged_and_cleared(relay_cli: RelayCLI) -> None:
    result = relay_cli("queue", "limit", "emails", "--rate", "100/s", "--burst", "20", "--concurrency", "5")
    assert result.returncode == 0, result.stderr
    assert "rate 100/s, burst 20" in result.stdout
    limits = queue(relay_cli, "emails")["limits"]
    assert (limits["rate"], limits["burst"], limits["concurrency"]) == (100.0, 20, 5)
    assert queue(relay_cli, "emails")["tokens"] == 20.0

    relay_cli("queue", "limit", "emails", "--key-concurrency", "1", "--ordering-dead", "block")
    limits = queue(relay_cli, "emails")["limits"]
    assert (limits["rate"], limits["key_concurrency"], limits["ordering_dead"]) == (100.0, 1, "block")

    relay_cli("queue", "limit", "emails", "--rate", "10/m")  # a new rate gets its own default burst
    limits = queue(relay_cli, "emails")["limits"]
    assert (limits["rate"], limits["burst"]) == (pytest.approx(10 / 60), 1)

    relay_cli("queue", "limit", "emails", "--rate", "none")
    assert queue(relay_cli, "emails")["limits"]["rate"] is None
    relay_cli("queue", "limit", "emails", "--clear")
    limits = queue(relay_cli, "emails")["limits"]
    assert [v for k, v in limits.items() if k != "ordering_dead"] == [None] * 6
    table = relay_cli("queue", "list")
    assert table.returncode == 0
    assert "emails" in table.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--rate", "0/s"), ("--rate", "more than 0")),
        (("--rate", "-5/s"), ("--rate",)),
        (("--rate", "10/s", "--burst", "0"), ("--burst", "at least 1")),
        (("--burst", "5"), ("--burst", "needs a rate")),
        (("--concurrency", "0"), ("--concurrency", "at least 1")),
        (("--concurrency", "two"), ("--concurrency", "whole number")),
        (("--rate", "10/fortnight"), ("--rate", "unknown unit")),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(
    relay_cli: RelayCLI, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    relay_cli("queue", "limit", "emails", "--concurrency", "3")
    assert_one_error(relay_cli("queue", "limit", "emails", *args), EXIT_USER_ERROR, *fragments)
    limits = queue(relay_cli, "emails")["limits"]
    assert (limits["concurrency"], limits["rate"], limits["burst"]) == (3, None, None)


def test_schedules_are_added_listed_paused_resumed_and_removed(relay_cli: RelayCLI, tmp_path: Path) -> None:
    # --json before the command: after "--" everything is the command's own argv.
    result = relay_cli(
        "--json",
        "schedule",
        "add",
        "nightly",
        "0 3 * * *",
        "--timezone",
        "Europe/Berlin",
        "--",
        "/bin/echo",
        "a b",
    )
    assert result.returncode == 0, result.stderr
    added = json.loads(result.stdout)
    assert (added["name"], added["spec"], added["timezone"], added["paused"]) == (
        "nightly",
        "0 3 * * *",
        "Europe/Berlin",
        False,
    )
    assert added["job"]["payload"] == {"command": "/bin/echo", "args": ["a b"]}
    assert added["description"] == "At 03:00 every day"
    task_doc = tmp_path / "job.json"
    task_doc.write_text(
        json.dumps({"type": "task", "payload": {"task": "reports.build"}, "queue": "reports"})
    )
    relay_cli.json("schedule", "add", "report", "every 30s", "--job", str(task_doc))
    listed = relay_cli.json("schedule", "list")["schedules"]
    assert [s["name"] for s in listed] == ["nightly", "report"]
    assert listed[1]["job"]["queue"] == "reports"
    assert relay_cli("schedule", "pause", "nightly").returncode == 0
    assert relay_cli.json("schedule", "show", "nightly")["paused"] is True
    resumed = relay_cli("schedule", "resume", "nightly")
    assert resumed.returncode == 0
    assert "next run" in resumed.stdout
    table = relay_cli("schedule", "list")
    assert "At 03:00 every day" in table.stdout
    assert relay_cli("schedule", "remove", "report").returncode == 0
    assert_one_error(relay_cli("schedule", "remove", "report"), EXIT_USER_ERROR, "no schedule named 'report'")
    assert_one_error(relay_cli("schedule", "show", "report"), EXIT_USER_ERROR, "no schedule named 'report'")


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (("bad", "61 * * * *", "--", "/bin/true"), EXIT_USER_ERROR, ("schedule:", "Bad minute")),
        (("bad", "@reboot", "--", "/bin/true"), EXIT_USER_ERROR, ("schedule:", "unknown alias")),
        (("bad", "* * * *", "--", "/bin/true"), EXIT_USER_ERROR, ("expected 5 fields",)),
        (("bad", "@daily", "--timezone", "Mars/Olympus", "--", "/bin/true"), EXIT_USER_ERROR, ("timezone",)),
        (("bad", "every 0s", "--", "/bin/true"), EXIT_USER_ERROR, ("at least 1s",)),
        (("bad name", "@daily", "--", "/bin/true"), EXIT_USER_ERROR, ("name:",)),
        (("bad", "@daily"), EXIT_USAGE, ("give the job to run",)),
    ],
)
def test_bad_schedules_are_refused_and_store_nothing(
    relay_cli: RelayCLI, args: tuple[str, ...], code: int, fragments: tuple[str, ...]
) -> None:
    assert_one_error(relay_cli("schedule", "add", *args), code, *fragments)
    assert relay_cli.json("schedule", "list")["schedules"] == []


def test_submit_takes_the_flow_control_fields(relay_cli: RelayCLI) -> None:
    flags = ("--rate-key", "customer-7", "--concurrency-key", "acct-7", "--ordering-key", "ledger-7")
    unique = ("--idempotency-key", "k1", "--unique-for", "1h", "--unique-while", "active")
    payload = json.dumps({"command": "echo hi"})
    job_id = relay_cli("submit", "--type=shell", f"--payload={payload}", *flags, *unique).stdout.strip()
    job = relay_cli.json("status", job_id)
    assert (job["rate_key"], job["concurrency_key"], job["ordering_key"]) == (
        "customer-7",
        "acct-7",
        "ledger-7",
    )
    assert job["unique_while"] == "active"
    assert job["unique_until"] is not None
    second = relay_cli("submit", "--type=shell", f"--payload={payload}", "--ordering-key", "ledger-7")
    assert relay_cli.json("status", second.stdout.strip())["held"] is True
    bad = relay_cli("submit", "--type=shell", f"--payload={payload}", "--unique-for", "1h")
    assert_one_error(bad, EXIT_USER_ERROR, "--unique-for", "needs an idempotency_key")


def test_worker_defines_the_schedules_of_flags_and_the_settings_file(
    relay_cli: RelayCLI, tmp_path: Path, wait_until: Wait
) -> None:
    (tmp_path / "relay.toml").write_text(
        '[[schedules]]\nname = "from-file"\nschedule = "@daily"\n'
        'timezone = "Asia/Tokyo"\ncommand = "/bin/true"\n'
    )
    worker = relay_cli.start("worker", "--schedule", "ping=every 30s /bin/echo ping", env=FAST)

    def defined() -> list[str]:
        return [s["name"] for s in relay_cli.json("schedule", "list")["schedules"]]

    assert wait_until(lambda: defined() == ["from-file", "ping"])
    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0
    tokyo = relay_cli.json("schedule", "show", "from-file")
    assert tokyo["timezone"] == "Asia/Tokyo"


def test_a_bad_settings_file_or_schedule_flag_stops_the_worker_before_it_starts(
    relay_cli: RelayCLI, tmp_path: Path
) -> None:
    result = relay_cli("worker", "--schedule", "x=61 * * * * /bin/true")
    assert_one_error(result, EXIT_CONFIGURATION, "--schedule", "Bad minute")
    (tmp_path / "relay.toml").write_text('[[schedules]]\nname = "n"\nschedule = "@daily"\n')
    result = relay_cli("worker", "--burst")
    assert_one_error(result, EXIT_CONFIGURATION, "relay.toml", "schedules[0].job")
    assert relay_cli.json("schedule", "list")["schedules"] == []
