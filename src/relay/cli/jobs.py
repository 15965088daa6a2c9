"""``relay list / status / logs / retry / cancel``: read and steer single jobs."""

from __future__ import annotations

import time
from dataclasses import replace

import click

from relay.cli.context import CliState, pass_state
from relay.cli.options import json_option, status_option
from relay.cli.output import emit_json, emit_json_line, note, show
from relay.cli.views import job_details, job_to_json, jobs_table, log_line_to_json
from relay.storage.params import ListParams, LogParams, RequeueParams
from relay.types import JobState, LogLine

FOLLOW_POLL = 0.5  # seconds between polls of `relay logs --follow`
LOG_PAGE = 10_000


@click.command("list")
@status_option
@click.option("--queue", "queues", multiple=True, help="Only jobs of this queue (repeatable).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@json_option
@pass_state
def list_jobs(state: CliState, states: list[JobState], queues: tuple[str, ...], limit: int) -> None:
    """List jobs, newest first."""
    params = ListParams(states=states, queues=queues, limit=limit)
    page = state.run(lambda s: s.job_list(params))
    if state.json:
        emit_json([job_to_json(job) for job in page.jobs])
        return
    if not page.jobs:
        note("no jobs match")
        return
    show(jobs_table(page.jobs))
    if page.next_cursor is not None:
        note(f"showing the newest {limit}; more jobs match (raise --limit to see them)")


@click.command()
@click.argument("job_id", metavar="ID")
@json_option
@pass_state
def status(state: CliState, job_id: str) -> None:
    """Show one job in full.

    Its fields, progress and result, and the error of every failed attempt (type, message, exit
    code, the tail of its stderr)."""
    job = state.job(job_id)
    if state.json:
        emit_json(job_to_json(job))
    else:
        show(job_details(job))


@click.command()
@click.argument("job_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job is final.")
@click.option("--attempt", type=click.IntRange(min=1), help="Only the lines of this attempt.")
@json_option
@pass_state
def logs(state: CliState, job_id: str, follow: bool, attempt: int | None) -> None:
    """Print a job's output.

    Lines the job wrote to stderr go to stderr; with several attempts, a header on stderr says which
    attempt the lines that follow belong to. --json prints a JSON array (with --follow: one JSON
    object per line, as they come)."""
    job = state.job(job_id)  # an unknown id is an error, not an empty log
    printer = LogPrinter(json_lines=state.json and follow, show_headers=attempt is None)
    lines = _fetch_all(state, LogParams(job_id, attempt=attempt))
    if state.json and not follow:
        emit_json([log_line_to_json(line) for line in lines])
        return
    if not lines and not follow:
        note(f"no output (the job is {job.state})")
    printer.print(lines)
    if follow:
        try:
            _follow(state, LogParams(job_id, attempt=attempt), printer)
        except KeyboardInterrupt:
            # Ctrl-C is how a person ends --follow: no error line, the usual exit code of SIGINT.
            raise click.exceptions.Exit(130) from None


def _follow(state: CliState, params: LogParams, printer: LogPrinter) -> None:
    """Print new lines as they come, until the job is final and its last lines are printed."""
    while True:
        done = state.job(params.job_id).is_final  # read before the lines: none written before it is missed
        printer.print(_fetch_all(state, replace(params, after_seq=printer.last_seq)))
        if done:
            return
        time.sleep(FOLLOW_POLL)


def _fetch_all(state: CliState, params: LogParams) -> list[LogLine]:
    """Every line after ``params.after_seq``, however many pages that takes."""
    lines: list[LogLine] = []
    while True:
        page = _fetch_page(state, replace(params, limit=LOG_PAGE))
        lines += page
        if len(page) < LOG_PAGE:
            return lines
        params = replace(params, after_seq=page[-1].seq)


def _fetch_page(state: CliState, params: LogParams) -> list[LogLine]:
    return state.run(lambda s: s.job_logs(params))


class LogPrinter:
    """Prints log lines in order, remembering the last seq (for --follow) and the current attempt."""

    def __init__(self, *, json_lines: bool, show_headers: bool) -> None:
        self.json_lines = json_lines
        self.show_headers = show_headers
        self.last_seq = 0
        self._attempt: int | None = None
        self._several = False  # lines of more than one attempt were seen

    def print(self, lines: list[LogLine]) -> None:
        self._several = self._several or len({line.attempt for line in lines}) > 1
        for line in lines:
            self.last_seq = max(self.last_seq, line.seq)
            if self.json_lines:
                emit_json_line(log_line_to_json(line))
                continue
            self._header(line.attempt)
            text = line.text if line.text.endswith("\n") else line.text + "\n"
            click.echo(text, nl=False, err=line.stream == "stderr")

    def _header(self, attempt: int) -> None:
        # A job that ran once needs no header; lines of several attempts are each introduced by one.
        if not self.show_headers or attempt == self._attempt:
            return
        if self._several or self._attempt is not None or attempt > 1:
            note(f"--- attempt {attempt} ---")
        self._attempt = attempt


@click.command()
@click.argument("job_id", metavar="ID")
@json_option
@pass_state
def retry(state: CliState, job_id: str) -> None:
    """Requeue a dead, failed or cancelled job.

    It is pending again and due now; its errors are kept."""
    [job] = state.run(lambda s: s.job_requeue(RequeueParams(job_id=job_id)))
    if state.json:
        emit_json(job_to_json(job))
    else:
        click.echo(f"requeued job {job.id}: it is {job.state} again")


@click.command()
@click.argument("job_id", metavar="ID")
@json_option
@pass_state
def cancel(state: CliState, job_id: str) -> None:
    """Cancel a job. A running job is stopped by its worker at its next heartbeat."""
    job = state.run(lambda s: s.job_cancel(job_id))
    if state.json:
        emit_json(job_to_json(job))
    elif job.state is JobState.RUNNING:
        click.echo(f"cancel requested: job {job.id} is running; its worker stops it at its next heartbeat")
    else:
        click.echo(f"cancelled job {job.id}")
