"""``relay worker`` and ``relay up``: run jobs in this process (or N processes under a supervisor).

``--app module:attr`` names the Relay whose tasks the worker runs (``attr`` defaults to ``relay``); the
current directory is importable, as with ``python -m``. Without it, the worker runs shell jobs and the
tasks of no module: a task job it cannot resolve goes to the dead-letter queue with TaskNotFoundError.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from relay.app import Relay, link_worker
from relay.cli.config_file import schedules_for
from relay.cli.context import CliState, display_url, pass_state, storage_open_error
from relay.cli.options import grpc_options, grpc_overrides, log_format_option, split_queues
from relay.errors import ConfigurationError
from relay.grpc.worker_link import LinkRefused
from relay.runtime.events import configure_logging
from relay.runtime.supervisor import Supervisor
from relay.settings import Settings
from relay.storage.urls import DEFAULT_URL

DEFAULT_APP_ATTRIBUTE = "relay"
F = TypeVar("F", bound=Callable[..., Any])


def listen_options(f: F) -> F:
    """Where the HTTP server listens (``relay server`` and ``relay up``)."""
    f = click.option("--port", type=click.IntRange(0, 65535), help="Port (default: RELAY_PORT or 4000).")(f)
    return click.option(
        "--host", help="Listen address (default: RELAY_HOST or 127.0.0.1; beyond loopback needs a JWT key)."
    )(f)


def workflows_option(f: F) -> F:
    """Where the server's workflow definitions are (``relay server`` and ``relay up``)."""
    return click.option(
        "--workflows",
        "workflows_dir",
        metavar="DIR",
        help="The YAML workflow definitions to serve (default: RELAY_WORKFLOWS_DIR or ./workflows).",
    )(f)


def worker_options(f: F) -> F:
    """The options `relay worker` and `relay up` share (shown in this order by --help)."""
    f = log_format_option(f)
    f = click.option(
        "--config",
        metavar="FILE",
        help="The settings file whose [[schedules]] to define (default: RELAY_CONFIG, or ./relay.toml).",
    )(f)
    f = click.option(
        "--schedule",
        "schedule_flags",
        multiple=True,
        metavar="'[NAME=]SPEC COMMAND'",
        help="A schedule as a crontab line, e.g. 'backup=0 3 * * * /usr/bin/backup.sh'. Repeatable.",
    )(f)
    f = click.option("--concurrency", type=click.IntRange(min=1), help="Jobs run at once (default: 10).")(f)
    f = click.option("--queues", metavar="A,B", help="Queues to serve (default: RELAY_QUEUES or default).")(f)
    return click.option("--app", metavar="MODULE[:ATTR]", help="The Relay whose tasks to run: tasks:relay.")(
        f
    )


@click.command()
@worker_options
@click.option(
    "--processes", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes."
)
@click.option("--burst", is_flag=True, help="Exit once no job is due, instead of waiting for more.")
@click.option(
    "--connect",
    metavar="grpc://HOST:PORT",
    help="Work for a Relay server over a gRPC stream (grpcs:// for TLS) instead of a storage connection.",
)
@click.option("--token", envvar="RELAY_TOKEN", help="The bearer token for --connect (default: RELAY_TOKEN).")
@click.option(
    "--root-cert",
    metavar="FILE",
    envvar="RELAY_GRPC_TLS_CA",
    type=click.Path(exists=True, dir_okay=False),
    help="With grpcs://: the PEM CA certificate that signed the server's (default: RELAY_GRPC_TLS_CA, "
    "as for the CLI and the client; else the system's roots).",
)
@pass_state
def worker(
    state: CliState,
    app: str | None,
    queues: str | None,
    concurrency: int | None,
    schedule_flags: tuple[str, ...],
    config: str | None,
    processes: int,
    burst: bool,
    connect: str | None,
    token: str | None,
    root_cert: str | None,
) -> None:
    """Run jobs from the queues.

    Runs until SIGTERM/SIGINT: running jobs get their grace period to finish, and a second signal
    releases them back to the queue at once. --processes N runs N worker processes under a
    supervisor that restarts any that dies."""
    state.require_local("worker")
    settings = state.settings(queues=split_queues(queues), concurrency=concurrency)
    relay = load_app(app, state) if app else Relay(settings=settings)
    if connect is not None:
        if processes > 1 or schedule_flags or config or burst:
            # One process per stream; schedules are the server's; and burst cannot tell "nothing is
            # due" from "the server has not answered the credit yet".
            raise click.UsageError("--connect runs one process, without --burst, --schedule or --config")
        overrides = {"queues": split_queues(queues), "concurrency": concurrency}
        cert = Path(root_cert).read_bytes() if root_cert else None
        configure_logging(settings.log_format, settings.log_level)
        asyncio.run(_serve_link(relay, connect, token, cert, overrides))
        return
    defined = schedules_for(config, schedule_flags, tuple(relay.schedules.values()))  # errors before start
    if processes > 1:
        check_storage(relay)
        configure_logging(settings.log_format, settings.log_level)
        argv = child_argv(settings, app, queues, concurrency, burst, schedule_flags, config)
        env = {**os.environ, "RELAY_DATABASE_URL": relay.settings.database_url}
        raise click.exceptions.Exit(Supervisor(argv, processes, env=env).run())
    overrides = {"queues": split_queues(queues), "concurrency": concurrency, "burst": burst}
    serve(relay, settings, schedules=defined, **overrides)


@click.command()
@worker_options
@listen_options
@grpc_options
@workflows_option
@pass_state
def up(
    state: CliState,
    /,
    app: str | None,
    queues: str | None,
    concurrency: int | None,
    schedule_flags: tuple[str, ...],
    config: str | None,
    host: str | None,
    port: int | None,
    workflows_dir: str | None,
    **grpc: Any,
) -> None:
    """Run a worker, maintenance and the HTTP API with its dashboard in one process.

    Laptop mode: jobs are kept in sqlite:///relay.db unless configured otherwise."""
    from relay.server import ServerSettings
    from relay.server.workflows import load_definitions

    state.require_local("up")
    settings = state.settings(
        queues=split_queues(queues), concurrency=concurrency, workflows_dir=workflows_dir
    )
    relay = load_app(app, state) if app else Relay(settings=settings)
    if app and workflows_dir:  # the app's own settings, but the directory asked for here
        relay.settings = replace(relay.settings, workflows_dir=workflows_dir)
    defined = schedules_for(config, schedule_flags, tuple(relay.schedules.values()))
    load_definitions(relay)  # a bad workflow file: one error line, before the banner and the worker
    # The worker runs maintenance already; the server need not take part in the election too.
    server_settings = ServerSettings.from_env(
        host=host, port=port, maintenance=False, **grpc_overrides(**grpc)
    ).check()
    check_storage(relay)
    click.echo(
        banner(
            relay.settings.database_url,
            split_queues(queues) or relay.settings.queues,
            f"http://{server_settings.host}:{server_settings.port}",
        )
    )
    configure_logging(settings.log_format, settings.log_level)
    overrides = {"queues": split_queues(queues), "concurrency": concurrency, "schedules": defined}
    asyncio.run(_up(relay, server_settings, overrides))


async def _up(relay: Relay, server_settings: Any, overrides: dict[str, Any]) -> None:
    from relay.server import serve_async

    try:
        await relay.storage.open()
    except Exception as exc:
        raise storage_open_error(relay.settings.database_url, exc) from exc
    worker = relay.worker(**overrides)
    worker.install_signal_handlers()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_async(relay, server_settings, stop=stop))
    working = asyncio.create_task(worker.run())
    try:
        await asyncio.wait({server, working}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():  # it could not start (the port is taken, say): stop the worker too
            worker.request_stop()
        await working
    finally:
        stop.set()
        await server  # re-raises the server's ConfigurationError, if any
        await relay.storage.close()


def banner(url: str, queues: tuple[str, ...], api: str) -> str:
    """What `relay up` prints: where the jobs are kept, where to look, and how to submit one."""
    flag = "" if url == DEFAULT_URL else f" --database-url {shlex.quote(url)}"
    return (
        f"relay up: serving queues {','.join(queues)} from {display_url(url)}; dashboard and API at {api}\n"
        f"submit a job with: "
        f"""relay{flag} submit --type=shell --payload='{{"command": "echo hello"}}'"""
    )


def child_argv(
    settings: Settings,
    app: str | None,
    queues: str | None,
    concurrency: int | None,
    burst: bool,
    schedule_flags: tuple[str, ...] = (),
    config: str | None = None,
) -> list[str]:
    """The `relay …` arguments of one supervised child: this command, with --processes 1.
    The database URL travels in the environment, never in argv, where `ps` would show a password."""
    argv = [
        "--log-format",
        settings.log_format,
        "--log-level",
        settings.log_level,
        "worker",
        "--processes",
        "1",
    ]
    for flag, value in (
        ("--app", app),
        ("--queues", queues),
        ("--concurrency", concurrency),
        ("--config", config),
    ):
        if value is not None:
            argv += [flag, str(value)]
    for text in schedule_flags:  # each child defines them too: a redefinition changes nothing
        argv += ["--schedule", text]
    return [*argv, "--burst"] if burst else argv


# -- the app ----------------------------------------------------------------------------------------


def load_app(spec: str, state: CliState) -> Relay:
    """The Relay named by ``module:attr``: importing the module registers its tasks."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or DEFAULT_APP_ATTRIBUTE
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name, spec)
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigurationError(f"--app {spec}: module {module_name!r} has no attribute {attribute!r}")
        value = getattr(value, part)
    if not isinstance(value, Relay):
        raise ConfigurationError(f"--app {spec}: {attribute} is a {type(value).__name__}, not a relay.Relay")
    flag_url = state.database_url
    if flag_url is not None and flag_url != value.settings.database_url:
        raise ConfigurationError(
            f"--app {spec} uses {display_url(value.settings.database_url)} "
            f"but --database-url says {display_url(flag_url)}"
        )
    return value


def _import(module_name: str, spec: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"--app {spec}: no module named {module_name!r} (from {os.getcwd()})"
            ) from exc
        raise ConfigurationError(f"--app {spec}: importing it failed: {_where(exc)}") from exc
    except Exception as exc:
        # The user's own module is broken: one line that says what and where, not a wall of frames.
        raise ConfigurationError(f"--app {spec}: importing it failed: {_where(exc)}") from exc


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{place}"


# -- running ----------------------------------------------------------------------------------------


def check_storage(relay: Relay) -> None:
    """Open and close the storage once, so that a wrong URL fails here with one line (exit code 3),
    not in every supervised child, again and again."""
    asyncio.run(_open_and_close(relay))


async def _open_and_close(relay: Relay) -> None:
    try:
        await relay.storage.open()
    except Exception as exc:
        raise storage_open_error(relay.settings.database_url, exc) from exc
    finally:
        await relay.storage.close()


def serve(relay: Relay, settings: Settings, **overrides: Any) -> None:
    """Run one worker in this process until it stops; SIGTERM/SIGINT stop it in two phases."""
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(_serve(relay, overrides))


async def _serve_link(
    relay: Relay, connect: str, token: str | None, root_cert: bytes | None, overrides: dict[str, Any]
) -> None:
    """Run one worker on a gRPC link (``--connect``); a refusal by the server (a bad token, a missing
    scope) stops it and ends the command with that reason."""
    worker, link = link_worker(relay, connect, token=token, root_cert=root_cert, **overrides)
    loop = asyncio.get_running_loop()

    def refused(reason: str) -> None:  # from the link's thread: nothing it runs can be recorded now
        for _ in range(2):
            loop.call_soon_threadsafe(worker.request_stop)

    link.on_fatal = refused
    try:
        await link.open()
        worker.install_signal_handlers()
        gc.freeze()  # as in _serve
        await worker.run()
    finally:
        await link.close()
    if link.fatal is not None:
        raise LinkRefused(link.fatal)


async def _serve(relay: Relay, overrides: dict[str, Any]) -> None:
    try:
        await relay.storage.open()
    except Exception as exc:
        raise storage_open_error(relay.settings.database_url, exc) from exc
    try:
        worker = relay.worker(**overrides)
        worker.install_signal_handlers()
        # What exists now (modules, the app, open connections) lives as long as the process: moved
        # out of the collector's generations, a full collection no longer walks it. Collection pauses
        # are pickup latency (one measurement, 30,000 jobs in one process: longest 204 ms -> 123 ms).
        gc.freeze()
        await worker.run()
    finally:
        await relay.storage.close()
