"""How the ``relay`` command prints: rich tables for people, JSON for scripts, one line per error.

Rules every command keeps:

- data goes to stdout (a table, ids one per line, or JSON with ``--json``); notes, progress bars and
  errors go to stderr, so that ``relay submit jobs.json | xargs …`` only ever sees ids;
- text that comes from jobs (commands, messages, output) is printed as ``rich.text.Text`` or with
  ``click.echo``, never as rich markup: a command such as ``echo [bold]`` must print as written;
- when stdout is not a terminal, tables are printed at their natural width, never folded to 80
  columns, so that ids stay whole for ``grep`` and ``awk``.
"""

from __future__ import annotations

import functools
import sys
from datetime import UTC, datetime

import click
import orjson
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from relay.types import JSON


@functools.cache
def out() -> Console:
    """The console for stdout: rich when a terminal, plain and unbounded in width when not."""
    console = Console(highlight=False)
    if console.is_terminal:
        return console
    return Console(highlight=False, width=100_000, no_color=True)


@functools.cache
def err() -> Console:
    return Console(stderr=True, highlight=False)


def show(renderable: RenderableType) -> None:
    """Print a table (or any renderable) to stdout."""
    console = out()
    if console.is_terminal:
        console.print(renderable)
        return
    # Rich pads every cell to its column's width; in a file or pipe, trailing blanks are noise.
    with console.capture() as captured:
        console.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def emit_json(value: JSON) -> None:
    """Print ``value`` as JSON on stdout (datetimes as ISO 8601, enums as their values)."""
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def emit_json_line(value: JSON) -> None:
    """One compact JSON document per line, for streams (``relay logs --follow --json``)."""
    click.echo(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode())


def note(message: str) -> None:
    """A remark for the person at the terminal, on stderr (never mixed into data on stdout)."""
    click.echo(message, err=True)


def one_line(message: str) -> str:
    """``message`` on one line: an error is always exactly one line of stderr."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def error_line(message: str) -> None:
    click.echo(f"error: {one_line(message)}", err=True)


def progress_wanted(count: int, threshold: int = 1000) -> bool:
    """A progress bar is worth it for many items, and only when a person watches stderr."""
    return count >= threshold and err().is_terminal


def progress_bar() -> Progress:
    """A bar for work counted item by item (validating documents)."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, console=err(), transient=True)


def progress_spinner() -> Progress:
    """A spinner for one long storage call, which reports no partial progress."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    return Progress(*columns, console=err(), transient=True)


# -- times ------------------------------------------------------------------------------------------


def format_time(when: datetime | None) -> str:
    """A time in the local zone, to the second: what a person reads in ``relay status``."""
    if when is None:
        return "-"
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_age(when: datetime | None, now: datetime | None = None) -> str:
    """How long ago (``12s ago``) or how far ahead (``in 5m``) ``when`` is."""
    if when is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    text = format_span(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def format_span(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def isatty_stdin() -> bool:
    return sys.stdin.isatty()
