"""``relay server`` (the HTTP API, runner protocol, events and metrics) and ``relay token create``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from relay.app import Relay
from relay.cli.context import CliState, pass_state
from relay.cli.options import grpc_options, grpc_overrides
from relay.cli.worker import check_storage, listen_options, workflows_option
from relay.errors import ConfigurationError
from relay.runtime.events import configure_logging

F = TypeVar("F", bound=Callable[..., Any])


@click.command("server")
@listen_options
@grpc_options
@workflows_option
@click.option("--access-log", is_flag=True, help="Log every request.")
@pass_state
def server(
    state: CliState,
    /,
    host: str | None,
    port: int | None,
    workflows_dir: str | None,
    access_log: bool,
    **grpc: Any,
) -> None:
    """Serve the HTTP API, the runner protocol, events and /metrics (docs/api.md), and the gRPC API
    (docs/grpc.md)."""
    from relay.server import serve

    state.require_local("server")
    relay = Relay(settings=state.settings(workflows_dir=workflows_dir))
    check_storage(relay)
    configure_logging(relay.settings.log_format, relay.settings.log_level)
    serve(relay, host=host, port=port, access_log=access_log, **grpc_overrides(**grpc))


@click.group()
def token() -> None:
    """Bearer tokens for the HTTP API."""


@token.command("create")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help='A grant such as "enqueue:emails", "read:*" or "admin" (repeatable).',
)
@click.option("--ttl", default="30d", show_default=True, help="Validity: seconds, or 30s / 5m / 1h / 30d.")
@click.option("--subject", help="Who the token is for (its sub claim).")
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A PEM private key (RS256/ES256); default: RELAY_JWT_SECRET (HS256).",
)
@click.option("--audience", envvar="RELAY_JWT_AUDIENCE", help="The aud claim (default: RELAY_JWT_AUDIENCE).")
@click.option("--issuer", envvar="RELAY_JWT_ISSUER", help="The iss claim (default: RELAY_JWT_ISSUER).")
def create(
    scopes: tuple[str, ...],
    ttl: str,
    subject: str | None,
    key_file: str | None,
    audience: str | None,
    issuer: str | None,
) -> None:
    """Mint a token and print it."""
    from relay.server import mint_token

    key = Path(key_file).read_text() if key_file else os.environ.get("RELAY_JWT_SECRET")
    if not key:
        raise click.UsageError("set RELAY_JWT_SECRET or pass --key private.pem")
    try:
        click.echo(mint_token(key, scopes, ttl, subject=subject, audience=audience, issuer=issuer))
    except (ConfigurationError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
