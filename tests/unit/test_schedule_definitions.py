"""Schedule definitions from their documents, the settings file and ``--schedule`` (bad input refused
with the field named)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.cli.config_file import load_schedules, parse_schedule_flag, schedules_for
from relay.errors import ConfigurationError, InvalidJobError, InvalidScheduleError
from relay.runtime.schedules import define, schedule_from_document, tick_job
from relay.types import CatchUp, JobKind, NewJob, Schedule


def test_a_document_with_a_job() -> None:
    definition = schedule_from_document(
        {
            "name": "report",
            "schedule": "0 3 * * *",
            "timezone": "Europe/Berlin",
            "catch_up": "skip",
            "job": {"type": "task", "payload": {"task": "reports.build", "args": [1]}, "queue": "reports"},
        }
    )
    assert definition.name == "report"
    assert (definition.spec.cron, definition.spec.timezone, definition.catch_up) == (
        "0 3 * * *",
        "Europe/Berlin",
        CatchUp.SKIP,
    )
    assert definition.job.kind is JobKind.TASK
    assert definition.job.queue == "reports"
    params = definition.params(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    assert params.next_run_at == datetime(2026, 1, 2, 2, 0, tzinfo=UTC)


def test_a_command_is_short_for_a_shell_job() -> None:
    definition = schedule_from_document({"name": "b", "schedule": "@daily", "command": ["/bin/echo", "a b"]})
    assert definition.job.payload["argv"] == ["/bin/echo", "a b"]
    assert definition.spec.timezone == "UTC"
    assert definition.catch_up is CatchUp.ONCE


def test_a_template_drops_what_each_tick_sets_itself() -> None:
    job = NewJob(
        JobKind.SHELL, {"command": "x"}, id="fixed", delay=30.0, idempotency_key="k", unique_for=60.0
    )
    template = define("t", "@hourly", job).job
    assert (template.id, template.delay, template.idempotency_key, template.unique_for) == (
        None,
        0.0,
        None,
        None,
    )


def test_a_ticks_job_carries_the_tick_in_its_key_and_metadata() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    template = NewJob(JobKind.SHELL, {"command": "x"}, metadata={"owner": "ops"})
    schedule = Schedule("s", "@hourly", "UTC", template, CatchUp.ONCE, False, now, None, None, now, now)
    job = tick_job(schedule, now)
    assert job.idempotency_key == "relay:schedule:s:2026-01-01T00:00:00+00:00"
    assert job.metadata == {"owner": "ops", "schedule": "s", "tick": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"name": "a b", "schedule": "@daily", "command": "x"}, "name"),
        ({"schedule": "@daily", "command": "x"}, "name"),
        ({"name": "n", "schedule": "61 * * * *", "command": "x"}, "schedule"),
        ({"name": "n", "command": "x"}, "schedule"),
        ({"name": "n", "schedule": "@daily", "timezone": "Nowhere/City", "command": "x"}, "timezone"),
        ({"name": "n", "schedule": "@daily", "catch_up": "all", "command": "x"}, "catch_up"),
        ({"name": "n", "schedule": "@daily"}, "job"),
        ({"name": "n", "schedule": "@daily", "command": "x", "job": {"type": "shell"}}, "job"),
        ({"name": "n", "schedule": "@daily", "command": 5}, "command"),
        ({"name": "n", "schedule": "@daily", "command": "x", "paused": True}, "paused"),
    ],
)
def test_bad_documents_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        schedule_from_document(doc, path="schedules[2]")
    assert caught.value.field == f"schedules[2].{field}"


def test_a_bad_job_names_the_field_inside_the_job() -> None:
    with pytest.raises(InvalidJobError) as caught:
        schedule_from_document({"name": "n", "schedule": "@daily", "job": {"type": "shell", "payload": {}}})
    assert caught.value.field == "job.payload.command"


def test_the_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        '[[schedules]]\nname = "a"\nschedule = "*/5 * * * *"\ncommand = "/bin/true"\n\n'
        '[[schedules]]\nname = "b"\nschedule = "every 30s"\n'
        'job = { type = "shell", payload = { command = "/bin/echo hi" }, queue = "ops" }\n'
    )
    [a, b] = load_schedules(config)
    assert (a.name, a.spec.cron, b.name, b.spec.interval, b.job.queue) == (
        "a",
        "*/5 * * * *",
        "b",
        30.0,
        "ops",
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[[schedules]]\nname = 1\n", "schedules[0].name"),
        ("[[schedules]\n", "not valid TOML"),
        ("[workers]\nconcurrency = 5\n", "unknown section 'workers'"),
        ("schedules = 5\n", "array of tables"),
    ],
)
def test_a_bad_settings_file_names_the_file_and_the_field(tmp_path: Path, text: str, words: str) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        load_schedules(config)
    assert str(config) in str(caught.value)
    assert words in str(caught.value)


def test_schedule_flags() -> None:
    backup = parse_schedule_flag("backup=0 3 * * * /usr/bin/backup.sh --full 'two words'")
    assert (backup.name, backup.spec.cron) == ("backup", "0 3 * * *")
    assert backup.job.payload["argv"] == ["/usr/bin/backup.sh", "--full", "two words"]
    assert parse_schedule_flag("@hourly /usr/bin/true").name == "true"
    assert parse_schedule_flag("ping=every 30s curl -fsS http://x/").spec.interval == 30.0


@pytest.mark.parametrize("text", ["x=61 * * * * cmd", "@hourly", "every 30s", "* * * * *", "n=@daily 'open"])
def test_bad_schedule_flags(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_schedule_flag(text)
    assert "--schedule" in str(caught.value)


def test_two_schedules_with_one_name_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no relay.toml here
    monkeypatch.delenv("RELAY_CONFIG", raising=False)
    with pytest.raises(ConfigurationError, match="two schedules are named 'true'"):
        schedules_for(None, ["@hourly /bin/true", "@daily /usr/bin/true"])


def test_a_settings_file_named_but_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the settings file"):
        schedules_for(str(tmp_path / "absent.toml"), [])


def test_a_bad_command_is_named_as_the_documents_command() -> None:
    with pytest.raises(InvalidScheduleError) as caught:
        schedule_from_document({"name": "n", "schedule": "@daily", "command": "   "}, path="schedules[0]")
    assert caught.value.field == "schedules[0].command"
