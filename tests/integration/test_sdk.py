"""The producer API: tasks, options, bulk and shell enqueue, handles, settings, and relay.testing."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay import JobFailedError, Relay, job_context
from relay.errors import InvalidJobError
from relay.settings import Settings
from relay.storage.params import ListParams
from relay.testing import assert_enqueued, inline_mode, memory_relay, refute_enqueued
from relay.types import JobKind, JobState


def test_enqueue_stores_a_task_job_with_the_task_options_and_per_call_options(app: Relay) -> None:
    @app.task(queue="billing", max_retries=5, timeout="30s", name="billing.charge")
    def charge(customer_id: int, cents: int) -> str:
        return f"{customer_id}:{cents}"

    handle = charge.options(priority=7, delay="1h", idempotency_key="order-1").enqueue(42, cents=1999)
    job = handle.job
    assert job.kind is JobKind.TASK
    assert job.payload == {"task": "billing.charge", "args": [42], "kwargs": {"cents": 1999}}
    assert (job.queue, job.max_retries, job.timeout, job.priority) == ("billing", 5, 30.0, 7)
    assert job.state is JobState.SCHEDULED
    assert handle.created
    again = charge.options(idempotency_key="order-1").enqueue(42, cents=1999)
    assert again.id == handle.id
    assert not again.created
    assert charge(1, 2) == "1:2"  # still a plain function


def test_task_arguments_must_be_json(app: Relay) -> None:
    @app.task
    def takes(value: object) -> None: ...

    with pytest.raises(InvalidJobError) as err:
        takes.enqueue({1, 2})
    assert err.value.field == "payload.args"
    assert app.call(app.storage.job_list(ListParams())).jobs == []


def test_invalid_options_name_the_field(app: Relay) -> None:
    with pytest.raises(InvalidJobError) as err:

        @app.task(queue="has spaces")
        def bad() -> None: ...

    assert err.value.field == "queue"


def test_enqueue_many_is_one_transaction(app: Relay) -> None:
    @app.task
    def square(n: int) -> int:
        return n * n

    handles = square.enqueue_many([square.call(n) for n in range(50)])
    assert len({h.id for h in handles}) == 50
    docs = [{"type": "shell", "payload": {"command": "true"}}, {"type": "shell", "payload": {}}]
    with pytest.raises(InvalidJobError) as err:
        app.enqueue_many(docs)
    assert err.value.field == "[1].payload.command"
    assert len(app.call(app.storage.job_list(ListParams(limit=500))).jobs) == 50


def test_enqueue_shell_runs_argv_lists_split_strings_and_explicit_shells(app: Relay, tmp_path: Path) -> None:
    argv = app.enqueue_shell(["printf", "%s|", "a b", "$HOME"])
    split = app.enqueue_shell("printf '%s|' 'a b' c")
    shell = app.enqueue_shell("echo one && echo two", shell=True, cwd=str(tmp_path), env={"X": "1"})
    assert argv.job.payload["argv"] == ["printf", "%s|", "a b", "$HOME"]
    assert split.job.payload["argv"] == ["printf", "%s|", "a b", "c"]
    assert shell.job.payload["argv"] == ["/bin/sh", "-c", "echo one && echo two"]
    assert app.drain() == 3
    logs = {h.id: _stdout(app, h.id) for h in (argv, split, shell)}
    assert logs[argv.id] == ["a b|$HOME|"]  # no shell: $HOME is not expanded
    assert logs[split.id] == ["a b|c|"]
    assert logs[shell.id] == ["one", "two"]


def _stdout(app: Relay, job_id: str) -> list[str]:
    from relay.storage.params import LogParams

    lines = app.call(app.storage.job_logs(LogParams(job_id)))
    return [line.text for line in lines if line.stream == "stdout"]


def test_handle_wait_returns_the_result_or_raises_for_a_dead_job(app: Relay) -> None:
    @app.task
    def ok() -> str:
        return "fine"

    @app.task(max_retries=0)
    def broken() -> None:
        raise KeyError("missing")

    good, bad = ok.enqueue(), broken.enqueue()
    app.drain()
    assert good.wait(timeout=5) == "fine"
    with pytest.raises(JobFailedError) as err:
        bad.wait(timeout=5)
    assert err.value.job.state is JobState.DEAD
    assert "KeyError" in str(err.value)


def test_settings_come_from_the_environment_with_the_legacy_alias(tmp_path: Path) -> None:
    legacy = Settings.from_env({"RELAY_DB_DSN": f"sqlite:///{tmp_path}/a.db", "RELAY_CONCURRENCY": "3"})
    assert legacy.database_url == f"sqlite:///{tmp_path}/a.db"
    assert legacy.concurrency == 3
    both = Settings.from_env({"RELAY_DB_DSN": "sqlite:///x.db", "RELAY_DATABASE_URL": "memory://"})
    assert both.database_url == "memory://"
    assert Settings.from_env({}, database_url="memory://").database_url == "memory://"


def test_job_context_outside_a_job_is_an_error() -> None:
    with pytest.raises(LookupError):
        job_context()


def test_relay_testing_helpers() -> None:
    relay = memory_relay()
    try:

        @relay.task(name="mail.welcome")
        def welcome(address: str) -> str:
            return f"sent to {address}"

        welcome.enqueue("ada@example.com")
        job = assert_enqueued(relay, task=welcome, args=["ada@example.com"])
        assert job.queue == "default"
        refute_enqueued(relay, task=welcome, args=["bob@example.com"])
        with pytest.raises(AssertionError, match="no enqueued job matches"):
            assert_enqueued(relay, task="mail.other")
        assert relay.drain() == 1
        refute_enqueued(relay, task=welcome)
        with inline_mode(relay):
            handle = welcome.enqueue("grace@example.com")
        assert handle.job.state is JobState.COMPLETED
        assert handle.job.result == "sent to grace@example.com"
    finally:
        relay.close()
