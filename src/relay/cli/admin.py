"""``relay stats``, ``relay migrate`` and ``relay queue list/pause/resume/limit``: the storage as a whole."""

from __future__ import annotations

import asyncio
import re

import click

from relay.app import storage_from_url
from relay.cli.context import CliState, display_url, pass_state, storage_open_error
from relay.cli.options import json_option
from relay.cli.output import emit_json, note, show
from relay.cli.views import (
    limits_table,
    limits_text,
    queue_to_json,
    queues_table,
    worker_to_json,
    workers_table,
)
from relay.client.wire import limits_to_json
from relay.errors import InvalidLimitError
from relay.jobs.limits import parse_limits
from relay.jobs.models import QUEUE_PATTERN
from relay.storage.base import Storage
from relay.types import JSON, NO_LIMITS, QueueLimits


@click.command()
@json_option
@pass_state
def stats(state: CliState) -> None:
    """Count jobs per queue and state.

    Also shows whether each queue is paused, and the workers that are alive."""
    queues = state.run(lambda s: s.queue_list())
    workers = state.run(lambda s: s.worker_list())
    if state.json:
        emit_json(
            {"queues": [queue_to_json(q) for q in queues], "workers": [worker_to_json(w) for w in workers]}
        )
        return
    if queues:
        show(queues_table(queues))
    else:
        note("no queues yet: submit a job first")
    if workers:
        click.echo()
        show(workers_table(workers))


@click.command()
@json_option
@pass_state
def migrate(state: CliState) -> None:
    """Create or upgrade the storage schema.

    Prints the migrations it applied."""
    state.require_local("migrate")
    settings = state.settings()
    applied = asyncio.run(_migrate(storage_from_url(settings.database_url), settings.database_url))
    if state.json:
        emit_json({"applied": applied})
        return
    where = display_url(settings.database_url)
    for name in applied:
        click.echo(f"applied {name}")
    click.echo(f"{where}: the schema is up to date" + ("" if applied else " (nothing to apply)"))


async def _migrate(storage: Storage, url: str) -> list[str]:
    # migrate() before open(): open() would apply pending migrations itself and leave nothing to report.
    try:
        return await storage.migrate()
    except Exception as exc:
        raise storage_open_error(url, exc) from exc
    finally:
        await storage.close()


@click.group()
def queue() -> None:
    """List queues with their limits; pause, resume or limit a queue.

    A paused queue keeps its jobs, and workers claim none of them until it is resumed. Limits (rate,
    concurrency) are kept in storage: every worker obeys a change at its next claim."""


@queue.command("list")
@json_option
@pass_state
def list_queues(state: CliState) -> None:
    """Every queue with its limits, its running jobs and the tokens in its bucket."""
    queues = state.run(lambda s: s.queue_list())
    if state.json:
        emit_json({"queues": [queue_to_json(q) for q in queues]})
    elif queues:
        show(limits_table(queues))
    else:
        note("no queues yet: submit a job first")


#: The options of ``relay queue limit`` and the field of the limits document each one sets.
LIMIT_OPTIONS = {
    "rate": "--rate",
    "burst": "--burst",
    "key_rate": "--key-rate",
    "key_burst": "--key-burst",
    "concurrency": "--concurrency",
    "key_concurrency": "--key-concurrency",
    "ordering_dead": "--ordering-dead",
}
_OFF = ("none", "off")


@queue.command()
@click.argument("name")
@click.option("--rate", metavar="N/UNIT", help="Jobs a second for the whole queue: 100/s, 10/m, 5/30s; none.")
@click.option("--burst", metavar="N", help="The bucket's size (default: one second of --rate).")
@click.option("--key-rate", metavar="N/UNIT", help="The same, for each rate_key of the queue's jobs; none.")
@click.option("--key-burst", metavar="N", help="Each rate_key bucket's size.")
@click.option("--concurrency", metavar="N", help="At most N running at once, over the whole fleet; none.")
@click.option("--key-concurrency", metavar="N", help="At most N running per concurrency_key; none.")
@click.option(
    "--ordering-dead",
    type=click.Choice(["continue", "block"]),
    help="Whether a dead job holds its ordering key.",
)
@click.option("--clear", is_flag=True, help="Remove every limit of the queue (the other options then add).")
@json_option
@pass_state
def limit(state: CliState, /, name: str, clear: bool, **options: str | None) -> None:
    """Set the limits of queue NAME (the options not given stay as they are; 'none' removes one).

    \b
      relay queue limit emails --rate 100/s --burst 20 --concurrency 5
      relay queue limit sync --key-concurrency 1
      relay queue limit emails --rate none
    """
    _check_queue_name(name)
    current = NO_LIMITS if clear else _limits_of(state, name)
    document = limits_to_json(current)
    if document["rate"] is None or options["rate"] is not None:
        document["burst"] = None  # a new rate gets its own default burst unless one is given
    if document["key_rate"] is None or options["key_rate"] is not None:
        document["key_burst"] = None
    for field, value in options.items():
        if value is not None:
            document[field] = None if value.lower() in _OFF else _number(value, field)
    limits = _parse(document)
    state.run(lambda s: s.queue_limits_set(name, limits))
    if state.json:
        emit_json({"name": name, "limits": limits_to_json(limits)})
    else:
        click.echo(f"queue {name!r}: {limits_text(limits)}")


@queue.command()
@click.argument("name")
@pass_state
def pause(state: CliState, name: str) -> None:
    """Stop workers from claiming jobs of queue NAME (running jobs go on)."""
    state.run(lambda s: s.queue_pause(name))
    click.echo(f"paused queue {name!r}")


@queue.command()
@click.argument("name")
@pass_state
def resume(state: CliState, name: str) -> None:
    """Let workers claim jobs of queue NAME again."""
    state.run(lambda s: s.queue_resume(name))
    click.echo(f"resumed queue {name!r}")


def _check_queue_name(name: str) -> None:
    if not re.match(QUEUE_PATTERN, name) or len(name) > 128:
        raise click.BadParameter(
            "expected up to 128 letters, digits, '_', '.', ':' or '-'", param_hint="NAME"
        )


def _limits_of(state: CliState, name: str) -> QueueLimits:
    for info in state.run(lambda s: s.queue_list()):
        if info.name == name:
            return info.limits
    return NO_LIMITS


def _number(value: str, field: str) -> JSON:
    """A count option as an integer when it is one (the limits document is strict about types)."""
    if field in ("burst", "key_burst", "concurrency", "key_concurrency"):
        try:
            return int(value)
        except ValueError:
            raise InvalidLimitError(
                LIMIT_OPTIONS[field], f"expected a whole number or 'none', got {value!r}"
            ) from None
    return value


def _parse(document: dict[str, JSON]) -> QueueLimits:
    try:
        return parse_limits(document)
    except InvalidLimitError as exc:
        top = exc.field.split(".", 1)[0]
        raise InvalidLimitError(LIMIT_OPTIONS.get(top, top), exc.message) from None
