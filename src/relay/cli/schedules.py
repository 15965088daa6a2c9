"""``relay schedule list|show|add|remove|pause|resume``: periodic jobs kept in storage.

A schedule enqueues its job at every tick of its spec (``*/5 * * * *``, ``@hourly``, ``every 30s``),
exactly once per tick whatever the number of workers running the scheduler. ``add`` takes the job as a
command after ``--`` (run without a shell), a job document (``--job FILE``), or a task (``--task NAME
--args JSON``); a schedule added under an existing name replaces its definition and keeps its next run
unless the spec changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from relay.cli.context import CliState, pass_state
from relay.cli.options import json_option, parse_params
from relay.cli.output import emit_json, note, show
from relay.cli.views import describe_schedule, schedule_to_json, schedules_table, summary
from relay.errors import InvalidScheduleError, ScheduleNotFoundError
from relay.jobs.document import parse_job_document
from relay.runtime import schedules as definitions
from relay.runtime.workflows import workflow_job
from relay.types import JSON, NewJob, Schedule


@click.group()
def schedule() -> None:
    """Periodic jobs: list, add, remove, pause and resume schedules.

    \b
      relay schedule add nightly "0 3 * * *" --timezone Europe/Berlin -- /usr/local/bin/backup.sh --full
      relay schedule add heartbeat "every 30s" --job ping.json
      relay schedule list
    """


@schedule.command("list")
@json_option
@pass_state
def list_schedules(state: CliState) -> None:
    """Every schedule, with its next and last run."""
    found = state.run(lambda s: s.schedule_list())
    if state.json:
        emit_json({"schedules": [schedule_to_json(s) for s in found]})
    elif found:
        show(schedules_table(found, datetime.now(UTC)))
    else:
        note("no schedules yet: relay schedule add NAME SPEC -- COMMAND")


@schedule.command("show")
@click.argument("name")
@json_option
@pass_state
def show_schedule(state: CliState, name: str) -> None:
    """One schedule in full (JSON with --json)."""
    found = _get(state, name)
    if state.json:
        emit_json(schedule_to_json(found))
        return
    click.echo(f"{found.name}: {found.spec} ({describe_schedule(found)}), timezone {found.timezone}")
    click.echo(f"runs {summary(found.job)} on queue {found.job.queue}; missed ticks: {found.catch_up.value}")
    last = f"{found.last_run_at} (job {found.last_job_id})" if found.last_run_at else "-"
    click.echo(f"next run {found.next_run_at or '-'}; last run {last}")
    if found.paused:
        click.echo("paused")


@schedule.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("spec")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--timezone", default="UTC", show_default=True, help="An IANA name, e.g. Europe/Berlin.")
@click.option(
    "--catch-up",
    type=click.Choice(["once", "skip"]),
    default="once",
    show_default=True,
    help="Ticks missed while no worker ran: one job, or none.",
)
@click.option("--job", "job_file", metavar="FILE", help="The job to enqueue, as a job document.")
@click.option("--task", metavar="NAME", help="A registered task to call at each tick.")
@click.option("--args", "task_args", metavar="JSON", help="The task's arguments, a JSON array.")
@click.option("--workflow", metavar="NAME", help="A workflow to trigger at each tick (with --param).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter of --workflow.")
@click.option("--queue", help="The queue of a command's or a task's job (default: default).")
@json_option
@pass_state
def add(
    state: CliState,
    /,
    name: str,
    spec: str,
    command: tuple[str, ...],
    timezone: str,
    catch_up: str,
    job_file: str | None,
    task: str | None,
    task_args: str | None,
    workflow: str | None,
    params: tuple[str, ...],
    queue: str | None,
) -> None:
    """Create (or redefine) schedule NAME, firing at SPEC: a cron expression ("*/5 * * * *"), an alias
    (@hourly, @daily, ...) or an interval ("every 30s"). The job: a COMMAND after --, --job FILE, or
    --task NAME [--args JSON], or --workflow NAME [--param K=V]."""
    if workflow is not None:
        if command or job_file or task:
            raise click.UsageError("give one thing to run: a COMMAND, --job, --task or --workflow")
        job = workflow_job(workflow, parse_params(params), **({"queue": queue} if queue else {}))
    elif params:
        raise click.UsageError("--param goes with --workflow")
    else:
        job = _job(command, job_file, task, task_args, queue)
    definition = definitions.define(name, spec, job, timezone=timezone, catch_up=catch_up)
    [saved] = state.run(lambda s: definitions.save(s, [definition], datetime.now(UTC)))
    if state.json:
        emit_json(schedule_to_json(saved))
    else:
        click.echo(f"schedule {saved.name!r}: {describe_schedule(saved)}; next run {saved.next_run_at}")


@schedule.command()
@click.argument("name")
@pass_state
def remove(state: CliState, name: str) -> None:
    """Delete schedule NAME (the jobs it enqueued stay)."""
    if not state.run(lambda s: s.schedule_remove(name)):
        raise ScheduleNotFoundError(name)
    click.echo(f"removed schedule {name!r}")


@schedule.command()
@click.argument("name")
@pass_state
def pause(state: CliState, name: str) -> None:
    """Stop schedule NAME from enqueuing jobs."""
    state.run(lambda s: definitions.set_paused(s, name, True, datetime.now(UTC)))
    click.echo(f"paused schedule {name!r}")


@schedule.command()
@click.argument("name")
@pass_state
def resume(state: CliState, name: str) -> None:
    """Let schedule NAME enqueue again, from its next tick (ticks passed while paused are not run)."""
    resumed = state.run(lambda s: definitions.set_paused(s, name, False, datetime.now(UTC)))
    click.echo(f"resumed schedule {name!r}; next run {resumed.next_run_at}")


def _get(state: CliState, name: str) -> Schedule:
    found = state.run(lambda s: s.schedule_get(name))
    if found is None:
        raise ScheduleNotFoundError(name)
    return found


def _job(
    command: tuple[str, ...], job_file: str | None, task: str | None, task_args: str | None, queue: str | None
) -> NewJob:
    given = [bool(command), job_file is not None, task is not None]
    if sum(given) != 1:
        raise click.UsageError("give the job to run: a COMMAND after --, --job FILE, or --task NAME")
    if job_file is not None:
        if queue is not None:
            raise click.UsageError("--queue goes in the job document given with --job")
        return parse_job_document(_read_json(job_file), path="--job")
    doc: dict[str, JSON] = {"queue": queue} if queue else {}
    if task is not None:
        args = _read_args(task_args)
        return parse_job_document({**doc, "type": "task", "payload": {"task": task, "args": args}})
    if task_args is not None:
        raise click.UsageError("--args goes with --task")
    return parse_job_document(
        {**doc, "type": "shell", "payload": {"command": command[0], "args": list(command[1:])}}
    )


def _read_json(file: str) -> JSON:
    try:
        return orjson.loads(Path(file).read_bytes())
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise InvalidScheduleError("--job", f"{file} is not valid JSON: {exc}") from exc


def _read_args(text: str | None) -> list[JSON]:
    if text is None:
        return []
    try:
        args = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidScheduleError("--args", f"not valid JSON: {exc}") from exc
    if not isinstance(args, list):
        raise InvalidScheduleError("--args", "expected a JSON array of the task's arguments")
    return args
