"""The ``relay`` command: the click group, and ``main()``, which turns every failure into one line.

Exit codes: 0 success; 1 a user error (unknown id, invalid document, a transition the job's state does
not allow, an unreadable file); 2 a usage error (an unknown option, a bad option value); 3 storage
unavailable or a configuration error (a URL that cannot be opened, an --app that cannot be imported);
130 interrupted. Every failure prints exactly one line, ``error: <message>``, on stderr; an unexpected
exception (a bug, not a user error) keeps its traceback, since that is what a bug report needs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import click

from relay import __version__
from relay.cli import admin, dlq, jobs, schedules, server, submit, worker, workflows
from relay.cli.context import CliState
from relay.cli.output import error_line
from relay.errors import ConfigurationError, RelayError, StorageUnavailableError
from relay.settings import LOG_LEVELS

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
# click >= 8.2 raises this (a UsageError) for a group called without a command; older clicks exit 0.
_NO_ARGS_IS_HELP: type[click.UsageError] = getattr(click.exceptions, "NoArgsIsHelpError", click.UsageError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--database-url",
    metavar="URL",
    help="Storage URL (default: RELAY_DATABASE_URL, RELAY_DB_DSN, or sqlite:///relay.db).",
)
@click.option(
    "--server",
    "server_url",
    metavar="URL",
    envvar="RELAY_SERVER_URL",
    help="Talk to a Relay server instead of storage (token: RELAY_TOKEN).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log format of worker and up.")
@click.option(
    "--log-level", type=click.Choice(LOG_LEVELS), help="Log level of worker and up (default: info)."
)
@click.version_option(__version__, prog_name="relay")
@click.pass_context
def cli(
    ctx: click.Context,
    database_url: str | None,
    server_url: str | None,
    as_json: bool,
    log_format: str | None,
    log_level: str | None,
) -> None:
    """Relay: a job queue and job runner. Submit jobs, run workers, and watch and steer both."""
    ctx.obj = CliState(
        database_url=database_url,
        json=as_json,
        log_format=log_format,
        log_level=log_level,
        server_url=server_url,
    )


cli.add_command(submit.submit)
cli.add_command(jobs.list_jobs)
cli.add_command(jobs.status)
cli.add_command(jobs.status, "show")
cli.add_command(jobs.logs)
cli.add_command(jobs.retry)
cli.add_command(jobs.cancel)
cli.add_command(dlq.dlq)
cli.add_command(admin.stats)
cli.add_command(admin.migrate)
cli.add_command(admin.queue)
cli.add_command(schedules.schedule)
cli.add_command(workflows.workflow)
cli.add_command(worker.worker)
cli.add_command(worker.up)
cli.add_command(server.server)
cli.add_command(server.token)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    try:
        result = cli.main(args=argv, prog_name="relay", standalone_mode=False)
    except _NO_ARGS_IS_HELP as exc:
        # `relay` alone (or `relay dlq`): the help is the answer, not an error.
        click.echo(exc.format_message())
        return 0
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        error_line(f"{exc.format_message()}{hint}")
        return EXIT_USAGE
    except click.ClickException as exc:
        error_line(exc.format_message())
        return exc.exit_code
    except click.Abort as exc:
        # click turns Ctrl-C (and EOF at a prompt) into Abort; a "no" at a confirmation is one too.
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        error_line("interrupted" if interrupted else "aborted")
        return EXIT_INTERRUPTED if interrupted else EXIT_USER_ERROR
    except RelayError as exc:
        error_line(str(exc))
        return exit_code_for(exc)
    except BrokenPipeError:
        # The reader went away (`relay list | head`): not an error worth a message.
        _silence_stdout()
        return EXIT_USER_ERROR
    except OSError as exc:
        error_line(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_USER_ERROR
    except json.JSONDecodeError as exc:  # orjson's errors are JSONDecodeErrors too
        error_line(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
        return EXIT_USER_ERROR
    return result if isinstance(result, int) else 0


def exit_code_for(exc: RelayError) -> int:
    if isinstance(exc, StorageUnavailableError | ConfigurationError):
        return EXIT_UNAVAILABLE
    return EXIT_USER_ERROR


def _silence_stdout() -> None:
    # Python flushes stdout at exit, which would raise BrokenPipeError again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    """The console script ``relay`` (and ``python -m relay``)."""
    sys.exit(run())
