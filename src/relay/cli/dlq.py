"""``relay dlq``: the dead-letter queue (jobs in state ``dead``): list, requeue, purge."""

from __future__ import annotations

import click

from relay.cli.context import CliState, pass_state
from relay.cli.options import json_option
from relay.cli.output import emit_json, isatty_stdin, note, progress_spinner, progress_wanted, show
from relay.cli.views import dead_jobs_table, job_to_json
from relay.errors import InvalidTransitionError
from relay.storage.params import ListParams, PurgeParams, RequeueParams
from relay.types import Job, JobState


@click.group()
def dlq() -> None:
    """The dead-letter queue: jobs that ran out of attempts."""


@dlq.command("list")
@click.option("--queue", "queues", multiple=True, help="Only jobs of this queue (repeatable).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@json_option
@pass_state
def dlq_list(state: CliState, queues: tuple[str, ...], limit: int) -> None:
    """List dead jobs, newest first, with their last error."""
    params = ListParams(states=[JobState.DEAD], queues=queues, limit=limit)
    page = state.run(lambda s: s.job_list(params))
    if state.json:
        emit_json([job_to_json(job) for job in page.jobs])
    elif not page.jobs:
        note("the dead-letter queue is empty")
    else:
        show(dead_jobs_table(page.jobs))
        if page.next_cursor is not None:
            note(f"showing the newest {limit}; more dead jobs exist (raise --limit to see them)")


@dlq.command("requeue")
@click.argument("job_id", metavar="[ID]", required=False)
@click.option("--all", "all_jobs", is_flag=True, help="Requeue every dead job (of --queue, if given).")
@click.option("--queue", help="With --all: only this queue.")
@json_option
@pass_state
def dlq_requeue(state: CliState, job_id: str | None, all_jobs: bool, queue: str | None) -> None:
    """Requeue dead jobs: one by ID, or all with --all.

    Each is pending again, due now, with one more attempt; its errors are kept."""
    if (job_id is None) == (not all_jobs):
        raise click.UsageError("give either a job ID or --all")
    if job_id is not None and queue is not None:
        raise click.UsageError("--queue goes with --all")
    jobs = _requeue_one(state, job_id) if job_id is not None else _requeue_all(state, queue)
    if state.json:
        emit_json({"requeued": len(jobs), "jobs": [job.id for job in jobs]})
    elif job_id is not None:
        click.echo(f"requeued job {job_id}: it is pending again")
    else:
        where = f" of queue {queue!r}" if queue else ""
        click.echo(f"requeued {len(jobs)} dead jobs{where}")


def _requeue_one(state: CliState, job_id: str) -> list[Job]:
    job = state.job(job_id)
    if job.state is not JobState.DEAD:
        # `relay retry` requeues failed and cancelled jobs too; this command is about the DLQ only.
        hint = " (relay retry requeues it)" if job.state in JobState.requeueable() else ""
        raise InvalidTransitionError(job_id, f"{job.state}, not dead{hint}", "requeue")
    return state.run(lambda s: s.job_requeue(RequeueParams(job_id=job_id)))


def _requeue_all(state: CliState, queue: str | None) -> list[Job]:
    count = _dead_count(state, queue)
    params = RequeueParams(states=(JobState.DEAD,), queue=queue)
    if not progress_wanted(count):
        return state.run(lambda s: s.job_requeue(params))
    # One storage call (one transaction) for all of them: a spinner, since there is no partial progress.
    with progress_spinner() as progress:
        progress.add_task(f"requeueing {count} dead jobs", total=None)
        return state.run(lambda s: s.job_requeue(params))


def _dead_count(state: CliState, queue: str | None) -> int:
    queues = state.run(lambda s: s.queue_list())
    return sum(q.counts.get(JobState.DEAD, 0) for q in queues if queue is None or q.name == queue)


@dlq.command("purge")
@click.option("--queue", help="Only dead jobs of this queue.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def dlq_purge(state: CliState, queue: str | None, yes: bool) -> None:
    """Delete dead jobs (and their logs) for good. Asks first unless --yes."""
    count = _dead_count(state, queue)
    where = f" of queue {queue!r}" if queue else ""
    if count and not yes:
        if not isatty_stdin():
            raise click.ClickException("purge needs confirmation: pass --yes (stdin is not a terminal)")
        click.confirm(f"Delete {count} dead jobs{where} for good?", abort=True, err=True)
    deleted = (
        state.run(lambda s: s.job_purge(PurgeParams(states=(JobState.DEAD,), queue=queue))) if count else 0
    )
    if state.json:
        emit_json({"purged": deleted})
    else:
        click.echo(f"purged {deleted} dead jobs{where}")
