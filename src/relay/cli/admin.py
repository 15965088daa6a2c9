"""``relay stats``, ``relay migrate`` and ``relay queue pause/resume``: the storage as a whole."""

from __future__ import annotations

import asyncio

import click

from relay.app import storage_from_url
from relay.cli.context import CliState, display_url, pass_state, storage_open_error
from relay.cli.options import json_option
from relay.cli.output import emit_json, note, show
from relay.cli.views import queue_to_json, queues_table, worker_to_json, workers_table
from relay.storage.base import Storage


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
    """Pause or resume a queue.

    A paused queue keeps its jobs, and workers claim none of them until it is resumed."""


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
