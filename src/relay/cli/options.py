"""Options several ``relay`` commands share: ``--json``, ``--status``, ``--queues``, ``--log-format``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from relay.cli.context import CliState
from relay.settings import LOG_LEVELS
from relay.types import JobState

F = TypeVar("F", bound=Callable[..., Any])

STATE_NAMES = ", ".join(state.value for state in JobState)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(CliState).json = True


def json_option(f: F) -> F:
    """``--json`` on a command: the same as ``relay --json <command>``."""
    option = click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print machine-readable JSON on stdout.",
    )
    return option(f)


def _set_log_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(CliState).log_format = value


def _set_log_level(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(CliState).log_level = value


def log_format_option(f: F) -> F:
    """``--log-format`` and ``--log-level`` on worker/up: the same as ``relay --log-format … worker``."""
    f = click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS),
        expose_value=False,
        callback=_set_log_level,
        help="info (default): a line per finished job; debug: also per claim; warning: only trouble.",
    )(f)
    option = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        expose_value=False,
        callback=_set_log_format,
        help="Log lines as text (default) or JSON objects.",
    )
    return option(f)


def parse_states(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[JobState]:
    """``--status`` values, repeatable and comma-separated (``--status=failed,dead``), each state once;
    an unknown one is a usage error that lists the valid states."""
    states: list[JobState] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            try:
                states.append(JobState(name))
            except ValueError:
                raise click.BadParameter(
                    f"{part.strip()!r} is not a job state; valid states: {STATE_NAMES}", param_hint="--status"
                ) from None
    return list(dict.fromkeys(states))


def status_option(f: F) -> F:
    return click.option(
        "--status",
        "states",
        metavar="STATE[,STATE...]",
        multiple=True,
        callback=parse_states,
        help=f"Only jobs in these states ({STATE_NAMES}).",
    )(f)


def split_queues(value: str | None) -> tuple[str, ...] | None:
    """``a,b`` → ``("a", "b")``; None when not given (the settings decide)."""
    if value is None:
        return None
    queues = tuple(q.strip() for q in value.split(",") if q.strip())
    if not queues:
        raise click.BadParameter("name at least one queue", param_hint="--queues")
    return queues


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--param NAME=VALUE`` options (a workflow's parameters) as a dict."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--param")
        values[name] = value
    return values


def grpc_options(f: F) -> F:
    """The gRPC API's options (``relay server`` and ``relay up``). They reach the command as
    ``grpc_port``, ``grpc_tls_cert``, ``grpc_tls_key`` and ``no_grpc``; :func:`grpc_overrides` turns
    them into ServerSettings overrides."""
    f = click.option("--no-grpc", is_flag=True, help="Serve no gRPC API (also: RELAY_GRPC=off).")(f)
    f = click.option(
        "--grpc-tls-key",
        type=click.Path(exists=True, dir_okay=False),
        help="The PEM private key of the gRPC TLS certificate (default: RELAY_GRPC_TLS_KEY).",
    )(f)
    f = click.option(
        "--grpc-tls-cert",
        type=click.Path(exists=True, dir_okay=False),
        help="A PEM certificate: gRPC over TLS (default: RELAY_GRPC_TLS_CERT).",
    )(f)
    return click.option(
        "--grpc-port",
        type=click.IntRange(0, 65535),
        help="gRPC port, 0 for a free one (default: the port of RELAY_GRPC_ADDR, or 50051).",
    )(f)


def grpc_overrides(
    grpc_port: int | None, grpc_tls_cert: str | None, grpc_tls_key: str | None, no_grpc: bool
) -> dict[str, Any]:
    """ServerSettings overrides for :func:`grpc_options` (None: "not given", the environment decides)."""
    return {
        "grpc": False if no_grpc else None,
        "grpc_port": grpc_port,
        "grpc_tls_cert": grpc_tls_cert,
        "grpc_tls_key": grpc_tls_key,
    }
