"""``relay workflow list|trigger|status|runs|retry|cancel``: workflows as Orqestra's CLI has them.

Definitions are the YAML files of ``--workflows DIR`` (else ``RELAY_WORKFLOWS_DIR``, else
``./workflows``); with ``--server`` they are the server's (it loaded its own at start).

\b
  relay workflow list
  relay workflow trigger ci --param ref=main        # prints the run's id
  relay workflow status RUN_ID                      # every step's state
  relay workflow retry RUN_ID STEP                  # bring a failed step back; the run goes on
  relay workflow cancel RUN_ID
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from relay.cli.context import CliState, pass_state
from relay.cli.options import json_option, parse_params
from relay.cli.output import emit_json, format_age, note, show
from relay.cli.views import state_text
from relay.client.wire import workflow_definition_to_json, workflow_run_to_json
from relay.errors import ConfigurationError, WorkflowNotFoundError
from relay.runtime.workflows import trigger as trigger_run
from relay.storage.params import WorkflowListParams
from relay.types import JSON, RunState, WorkflowRun
from relay.workflows.definitions import WorkflowDefinition, load_directory

if TYPE_CHECKING:
    from relay.client import AsyncRelayClient

T = TypeVar("T")
_RUN_STYLES = {
    RunState.RUNNING: "yellow",
    RunState.COMPLETED: "green",
    RunState.FAILED: "red",
    RunState.CANCELLED: "dim",
}


@click.group()
@click.option("--workflows", "directory", metavar="DIR", help="Where the YAML definitions are (./workflows).")
@click.pass_context
def workflow(ctx: click.Context, directory: str | None) -> None:
    """Workflows: list definitions, trigger runs, follow and steer them."""
    ctx.ensure_object(CliState).workflows_dir = directory


@workflow.command("list")
@json_option
@pass_state
def list_workflows(state: CliState) -> None:
    """The workflow definitions, with their steps."""
    if state.server_url:
        found: list[dict[str, JSON]] = _remote(state, lambda c: c.list_workflows())
    else:
        found = [definition_to_json(d) for d in _definitions(state).values()]
    if state.json:
        emit_json({"workflows": found})
    elif found:
        table = _table("WORKFLOW", "STEPS", "ON FAILURE", "PARAMS", "DESCRIPTION")
        for d in found:
            steps = " -> ".join(str(s["name"]) for s in d["steps"])
            params = ", ".join(str(p["name"]) for p in d["params"])
            table.add_row(
                Text(str(d["name"])),
                Text(steps),
                str(d["on_failure"]),
                Text(params),
                Text(str(d["description"] or "")),
            )
        show(table)
    else:
        note(f"no workflows: put YAML files in {_directory(state)}")


@workflow.command()
@click.argument("name")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A parameter of the run.")
@json_option
@pass_state
def trigger(state: CliState, name: str, params: tuple[str, ...]) -> None:
    """Start a run of workflow NAME; prints the run's id."""
    values = parse_params(params)
    if state.server_url:
        run = _remote(state, lambda c: c.trigger_workflow(name, values))
    else:
        definitions = _definitions(state)
        if name not in definitions:
            raise WorkflowNotFoundError(name)
        definition = definitions[name]
        run = state.run(lambda s: trigger_run(s, definition, values)).run
    if state.json:
        emit_json(run_to_json(run))
    else:
        click.echo(run.id)


@workflow.command()
@click.argument("run_id")
@json_option
@pass_state
def status(state: CliState, run_id: str) -> None:
    """A run's state and every step's."""
    run = _run(state, run_id)
    if state.json:
        emit_json(run_to_json(run))
        return
    click.echo(f"{run.workflow} run {run.id}: ", nl=False)
    show(Text(run.state.value, style=_RUN_STYLES[run.state]))
    table = _table("STEP", "STATE", "ATTEMPT", "DEPENDS ON", "JOB", "FINISHED")
    now = datetime.now(UTC)
    for s in run.steps:
        shown = Text("gone") if s.state is None else state_text(s.state)
        if s.held and s.state is not None and s.state.value == "pending":
            shown = Text("waiting", style="dim")
        table.add_row(
            Text(s.name),
            shown,
            str(s.attempt),
            Text(", ".join(s.depends_on) or "-"),
            Text(s.job_id),
            format_age(s.finished_at, now),
        )
    show(table)


@workflow.command()
@click.option("--workflow", "name", help="Only the runs of this workflow.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
@pass_state
def runs(state: CliState, name: str | None, limit: int) -> None:
    """The latest runs, newest first."""
    if state.server_url:
        found = _remote(state, lambda c: c.list_workflow_runs(name, limit=limit)).runs
    else:
        found = state.run(lambda s: s.workflow_list(WorkflowListParams(workflow=name, limit=limit))).runs
    if state.json:
        emit_json({"runs": [run_to_json(r) for r in found]})
        return
    table = _table("RUN", "WORKFLOW", "STATE", "STEPS DONE", "STARTED")
    now = datetime.now(UTC)
    for r in found:
        done = sum(1 for s in r.steps if s.state is not None and s.state.value == "completed")
        table.add_row(
            Text(r.id),
            Text(r.workflow),
            Text(r.state.value, style=_RUN_STYLES[r.state]),
            f"{done}/{len(r.steps)}",
            format_age(r.created_at, now),
        )
    show(table)


@workflow.command()
@click.argument("run_id")
@click.argument("step")
@pass_state
def retry(state: CliState, run_id: str, step: str) -> None:
    """Bring failed step STEP of run RUN_ID back (with the steps its failure cancelled)."""
    if state.server_url:
        _remote(state, lambda c: c.retry_workflow_step(run_id, step))
    else:
        state.run(lambda s: s.workflow_retry_step(run_id, step))
    click.echo(f"retrying step {step!r} of run {run_id}")


@workflow.command()
@click.argument("run_id")
@pass_state
def cancel(state: CliState, run_id: str) -> None:
    """Cancel run RUN_ID: its waiting steps at once, its running steps asked to stop."""
    if state.server_url:
        _remote(state, lambda c: c.cancel_workflow_run(run_id))
    else:
        state.run(lambda s: s.workflow_cancel(run_id))
    click.echo(f"cancelled run {run_id}")


# -- helpers -----------------------------------------------------------------------------------------


def _directory(state: CliState) -> str:
    return state.workflows_dir or state.settings().workflows_dir


def _definitions(state: CliState) -> dict[str, WorkflowDefinition]:
    return load_directory(_directory(state))


def _run(state: CliState, run_id: str) -> WorkflowRun:
    from relay.errors import WorkflowRunNotFoundError

    if state.server_url:
        return _remote(state, lambda c: c.get_workflow_run(run_id))
    run = state.run(lambda s: s.workflow_get(run_id))
    if run is None:
        raise WorkflowRunNotFoundError(run_id)
    return run


def _remote(state: CliState, call: Callable[[AsyncRelayClient], Coroutine[Any, Any, T]]) -> T:
    import os

    from relay.client import AsyncRelayClient
    from relay.client.grpc_calls import is_grpc_url

    if is_grpc_url(state.server_url):  # the gRPC API reads a run (GetWorkflowRun), nothing more
        raise ConfigurationError(
            "relay workflow needs the HTTP API: give the server's http:// URL to --server"
        )

    async def go() -> T:
        async with AsyncRelayClient(state.server_url, token=os.environ.get("RELAY_TOKEN")) as client:
            return await call(client)

    return asyncio.run(go())


def _table(*headers: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header)
    return table


# The JSON of a definition and of a run are the HTTP API's (one codec, so that the output of a command
# is the same with --server as without).
definition_to_json = workflow_definition_to_json
run_to_json = workflow_run_to_json
