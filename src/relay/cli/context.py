"""What every ``relay`` command shares: the global options, and one lazily opened Relay.

A command that only reads or steers jobs never opens storage before it needs it, and opens it once:
``state.run(lambda s: s.job_get(job_id))`` runs one storage operation on the Relay's private event
loop (``Relay.call``). The Relay is closed when the command ends (``call_on_close`` on the root context).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from relay.app import Relay
from relay.errors import JobNotFoundError, RelayError, StorageUnavailableError
from relay.settings import Settings
from relay.storage.base import Storage
from relay.storage.urls import parse_storage_url
from relay.types import Job

T = TypeVar("T")


@dataclass
class CliState:
    """The global options (``relay --database-url … --json …``) and the command's Relay."""

    database_url: str | None = None  # the flag; None lets Settings.from_env read RELAY_DATABASE_URL
    json: bool = False
    log_format: str | None = None
    log_level: str | None = None
    server_url: str | None = None  # talk to a Relay server instead of storage (--server / RELAY_SERVER_URL)
    workflows_dir: str | None = None  # relay workflow --workflows DIR
    _relay: Relay | None = field(default=None, repr=False)

    def settings(self, **overrides: Any) -> Settings:
        return Settings.from_env(
            database_url=self.database_url, log_format=self.log_format, log_level=self.log_level, **overrides
        )

    def relay(self) -> Relay:
        """The Relay of this command, opened on first use."""
        if self._relay is None:
            relay = Relay(settings=self.settings(), storage=self._remote_storage())
            click.get_current_context().find_root().call_on_close(relay.close)
            try:
                relay.open()
            except Exception as exc:
                raise storage_open_error(relay.settings.database_url, exc) from exc
            self._relay = relay
        return self._relay

    def _remote_storage(self) -> Storage | None:
        if not self.server_url:
            return None
        from relay.client.grpc_calls import is_grpc_url

        if is_grpc_url(self.server_url):  # grpc:// or grpcs://: the job API over gRPC
            from relay.cli.remote import GrpcRemoteStorage
            from relay.client import AsyncGrpcRelayClient

            grpc_client = AsyncGrpcRelayClient(self.server_url, token=os.environ.get("RELAY_TOKEN"))
            return cast(Storage, GrpcRemoteStorage(grpc_client))
        from relay.cli.remote import RemoteStorage
        from relay.client import AsyncRelayClient

        client = AsyncRelayClient(self.server_url, token=os.environ.get("RELAY_TOKEN"))
        # RemoteStorage has the operators' part of the seam: every command but the workers' needs.
        return cast(Storage, RemoteStorage(client))

    def require_local(self, command: str) -> None:
        """Workers and migrations talk to storage itself, never through a server."""
        if self.server_url:
            raise click.UsageError(
                f"relay {command} talks to storage directly: drop --server / RELAY_SERVER_URL"
            )

    def run(self, operation: Callable[[Storage], Coroutine[Any, Any, T]]) -> T:
        """Run one storage operation: ``state.run(lambda s: s.job_get(job_id))``."""
        relay = self.relay()
        return cast(T, relay.call(operation(relay.storage)))

    def job(self, job_id: str) -> Job:
        """The job with this id; an unknown id raises JobNotFoundError ("no job with id 'x'")."""
        job = self.run(lambda s: s.job_get(job_id))
        if job is None:
            raise JobNotFoundError(job_id)
        return job


pass_state = click.make_pass_decorator(CliState, ensure=True)


def storage_open_error(url: str, exc: BaseException) -> RelayError:
    """The error to show when storage cannot be opened: a RelayError stays as it is; anything else
    (sqlite3's "unable to open database file", a refused connection) becomes StorageUnavailableError,
    so that the user sees one line that names the URL, and exit code 3."""
    if isinstance(exc, RelayError):
        return exc
    return StorageUnavailableError(f"cannot open {display_url(url)}: {exc}")


def display_url(url: str) -> str:
    """``url`` as it is safe to print: a password is masked; a SQLite file is shown with its full path."""
    try:
        parsed = parse_storage_url(url)
    except RelayError:
        return url
    if parsed.scheme == "sqlite" and parsed.path is not None:
        return f"sqlite:///{Path(parsed.path).resolve()}"
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}"
    return url
