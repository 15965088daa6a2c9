"""The composition root: a URL and settings in, a wired Relay out. The only place that picks a backend.

from relay import Relay

relay = Relay()                          # sqlite:///relay.db, or RELAY_DATABASE_URL

@relay.task(queue="emails", max_retries=5)
def send_welcome(user_id: int) -> None: ...

send_welcome.enqueue(42)
relay.enqueue_shell(["pg_dump", "-f", "/backups/db.sql", "app"], timeout="1h")
relay.schedule("*/5 * * * *", send_welcome, 7, timezone="Europe/Berlin")   # saved when a worker starts
"""

from __future__ import annotations

import asyncio
import os
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from relay.clock import Clock, SystemClock, clock_from_env
from relay.errors import ConfigurationError, WorkflowNotFoundError
from relay.jobs.document import parse_job_document, parse_job_documents
from relay.runtime.context import job_context
from relay.runtime.registry import TaskRegistry
from relay.runtime.schedules import ScheduleDefinition, define
from relay.runtime.worker import Worker, WorkerConfig
from relay.runtime.workflows import WORKFLOW_TASK, run_id_for_job, start_canvas, trigger
from relay.sdk.handle import JobHandle, require
from relay.sdk.options import JobOptions
from relay.sdk.portal import Portal
from relay.sdk.runs import RunHandle, require_run
from relay.sdk.tasks import Task
from relay.settings import Settings
from relay.storage.base import Storage, TransactionalInsert
from relay.storage.params import InsertResult
from relay.storage.urls import DEFAULT_URL, parse_storage_url
from relay.types import JSON, Job, NewJob, WorkflowRun
from relay.workflows.canvas import Canvas
from relay.workflows.definitions import WorkflowDefinition, load_directory

if TYPE_CHECKING:
    from relay.grpc.worker_link import GrpcWorkerLink

P = ParamSpec("P")
R = TypeVar("R")


def storage_from_url(url: str = DEFAULT_URL, *, clock: Clock | None = None) -> Storage:
    """A (not yet opened) backend for ``url``. ``clock`` replaces the storage's own clock, for tests."""
    parsed = parse_storage_url(url)
    if parsed.scheme == "sqlite":
        from relay.storage.sqlite import SQLiteStorage

        assert parsed.path is not None
        return SQLiteStorage(parsed.path, clock=clock)
    if parsed.scheme == "memory":
        from relay.storage.memory import MemoryStorage

        return MemoryStorage(clock=clock)
    if parsed.scheme == "postgresql":
        from relay.storage.postgres import PostgresStorage

        return PostgresStorage(url, clock=clock)
    if parsed.scheme == "redis":
        from relay.storage.redis import RedisStorage

        return RedisStorage(url, clock=clock)
    raise ConfigurationError(f"no backend for {parsed.scheme!r} URLs")


def worker_config(settings: Settings, **overrides: Any) -> WorkerConfig:
    config = WorkerConfig(
        queues=settings.queues,
        concurrency=settings.concurrency,
        poll_interval=settings.poll_interval,
        grace_period=settings.grace_period,
        cancel_grace=settings.cancel_grace,
        reaper_interval=settings.reaper_interval,
        scheduler_interval=settings.scheduler_interval,
        cron_interval=settings.cron_interval,
        leader_ttl=settings.leader_ttl,
        retention=settings.retention,
        log_cap=settings.log_cap,
    )
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def link_worker(
    relay: Relay, connect: str, *, token: str | None = None, root_cert: bytes | None = None, **overrides: Any
) -> tuple[Worker, GrpcWorkerLink]:
    """A worker for ``relay``'s tasks whose claims, heartbeats and outcomes go over a gRPC stream to the
    server at ``connect`` (``grpc://host:port``, ``grpcs://`` for TLS), not to storage: the worker
    machine needs no storage credentials. The server runs maintenance and schedules, so this worker
    runs neither. Returns the worker and its link (open it first to fail early; close it after)."""
    from relay.grpc.worker_link import GrpcWorkerLink, LinkConfig, parse_connect_url

    try:
        target, secure = parse_connect_url(connect)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    config = worker_config(relay.settings, **overrides, maintenance=False, schedules=())
    link = GrpcWorkerLink(
        LinkConfig(
            target,
            config.worker_id,
            config.queues,
            config.kinds,
            config.concurrency,
            os.uname().nodename,
            os.getpid(),
            secure=secure,
            token=token,
            root_cert=root_cert,
        )
    )
    return Worker(link, relay.registry, config, relay.clock), link


class Relay:
    """A job queue on one storage URL: define tasks, enqueue jobs, run workers."""

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        storage: Storage | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env(database_url=url)
        clock = clock or clock_from_env()  # a test's clock file, for whole processes under test
        self.clock = clock or SystemClock()
        self.storage = storage or storage_from_url(self.settings.database_url, clock=clock)
        self.registry = TaskRegistry()
        self.schedules: dict[str, ScheduleDefinition] = {}  # relay.schedule(): saved by every worker
        self._portal = Portal()
        self._opened = False
        self._open_lock = threading.Lock()
        self.inline = False  # relay.testing.inline_mode: run each enqueued job at once, in-process
        self.registry.register(WORKFLOW_TASK, self._triggered_workflow)

    def __repr__(self) -> str:
        return f"<Relay {self.settings.database_url}>"

    # -- lifecycle ------------------------------------------------------------------------------

    async def open_async(self) -> None:
        if not self._opened:
            await self.storage.open()
            self._opened = True

    def open(self) -> None:
        with self._open_lock:
            if not self._opened:
                self._portal.call(self.open_async())

    def close(self) -> None:
        if self._opened:
            self._portal.call(self.storage.close())
            self._opened = False
        self._portal.close()

    def call(self, coro: Any) -> Any:
        """Run a coroutine of the async core from sync code."""
        self.open()
        return self._portal.call(coro)

    # -- tasks ----------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, fn: Callable[P, R] | None = None, /, *, name: str | None = None, **options: Any
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Make a function a task. Options: queue, priority, max_retries, backoff, timeout, lease, ..."""

        def decorate(f: Callable[P, R]) -> Task[P, R]:
            task_name = name or f"{f.__module__}.{f.__qualname__}"
            self.registry.register(task_name, f)
            return Task(self, f, task_name, JobOptions(**options))

        return decorate(fn) if fn is not None else decorate

    # -- enqueue --------------------------------------------------------------------------------

    def insert(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        results: list[InsertResult] = self.call(self.storage.job_insert_many(jobs))
        if self.inline:
            self.drain()
            results = [InsertResult(self.get_job(r.job.id), r.created) for r in results]
        return results

    async def insert_async(self, jobs: Sequence[NewJob]) -> list[InsertResult]:
        await self.open_async()
        results = await self.storage.job_insert_many(jobs)
        if self.inline:
            await self.drain_async()
            results = [InsertResult(await self.get_job_async(r.job.id), r.created) for r in results]
        return results

    def insert_with_connection(self, connection: Any, jobs: Sequence[NewJob]) -> list[InsertResult]:
        """Insert ``jobs`` in the open transaction of ``connection`` (the caller's own psycopg
        ``Connection``): they exist only if the caller commits. PostgreSQL only."""
        return self._transactional().insert_with_connection(connection, jobs)

    async def insert_with_connection_async(
        self, connection: Any, jobs: Sequence[NewJob]
    ) -> list[InsertResult]:
        """:meth:`insert_with_connection` with a psycopg ``AsyncConnection``."""
        return await self._transactional().insert_with_connection_async(connection, jobs)

    def _transactional(self) -> TransactionalInsert:
        storage = self.storage
        if not storage.capabilities.transactional_enqueue or not isinstance(storage, TransactionalInsert):
            raise ConfigurationError(
                f"the {storage.capabilities.name} storage cannot enqueue in your transaction: use PostgreSQL"
            )
        return storage

    def enqueue(self, document: Mapping[str, Any] | NewJob) -> JobHandle:
        """Enqueue one job document (the format of ``relay submit``) or a NewJob."""
        job = document if isinstance(document, NewJob) else parse_job_document(dict(document))
        [result] = self.insert([job])
        return JobHandle(self, result.job, result.created)

    def enqueue_many(self, documents: Sequence[Mapping[str, Any] | NewJob]) -> list[JobHandle]:
        """Enqueue many documents in one transaction: all of them, or (on an error) none."""
        docs = [dict(d) for d in documents if not isinstance(d, NewJob)]
        parsed = iter(parse_job_documents(docs))
        jobs = [d if isinstance(d, NewJob) else next(parsed) for d in documents]
        return [JobHandle(self, r.job, r.created) for r in self.insert(jobs)]

    def shell_job(
        self,
        command: str | Sequence[str],
        *,
        shell: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **options: Any,
    ) -> NewJob:
        """The job that :meth:`enqueue_shell` would enqueue (for bulk enqueue and chains)."""
        if isinstance(command, str):
            payload: dict[str, Any] = {"command": command, "shell": shell}
        else:
            argv = list(command)
            payload = {"command": argv[0] if argv else "", "args": argv[1:]}
            if shell:
                payload = {"command": shlex.join(argv), "shell": True}
        if env:
            payload["env"] = dict(env)
        if cwd:
            payload["cwd"] = cwd
        return JobOptions(**options).build("shell", payload)

    def enqueue_shell(self, command: str | Sequence[str], **options: Any) -> JobHandle:
        """Enqueue a shell command: an argv list (no shell), a string (split like a shell would,
        still run without one), or a string with ``shell=True`` (run by ``/bin/sh -c``)."""
        return self.enqueue(self.shell_job(command, **options))

    async def enqueue_shell_async(self, command: str | Sequence[str], **options: Any) -> JobHandle:
        [result] = await self.insert_async([self.shell_job(command, **options)])
        return JobHandle(self, result.job, result.created)

    # -- schedules ------------------------------------------------------------------------------

    def schedule(
        self,
        spec: str,
        target: Task[..., Any] | Sequence[str] | str,
        *args: Any,
        name: str | None = None,
        timezone: str = "UTC",
        catch_up: str = "once",
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ScheduleDefinition:
        """Run ``target`` at every tick of ``spec``: a task called with ``args`` / ``kwargs``, or a shell
        command (an argv list, or a string split like a shell would). Every worker of this Relay (and
        ``relay up --app``) saves its schedules in storage when it starts, and storage enqueues each
        tick once however many nodes run the scheduler.

        ``spec``: ``"*/5 * * * *"``, ``"@hourly"`` or ``"every 30s"``; ``timezone``: an IANA name;
        ``catch_up``: ``"once"`` (ticks missed while nothing ran: one job) or ``"skip"``; ``options``:
        job options for a shell command (queue, priority, max_retries, timeout...). The name defaults
        to the task's name, or the command's program.

        >>> relay.schedule("0 3 * * *", ["/usr/bin/backup.sh", "--full"], name="backup")  # doctest: +SKIP
        """
        if isinstance(target, Task):
            task = target.options(**options) if options else target
            job = task.call(*args, **(kwargs or {})).job
            default_name = target.name
        else:
            if args or kwargs:
                raise ConfigurationError(
                    "a scheduled shell command takes no args or kwargs: put them in the command"
                )
            job = self.shell_job(target, **options)
            default_name = job.payload["argv"][0].rsplit("/", 1)[-1]
        definition = define(name or default_name, spec, job, timezone=timezone, catch_up=catch_up)
        if definition.name in self.schedules:
            raise ConfigurationError(f"two schedules named {definition.name!r}: give each a name=")
        self.schedules[definition.name] = definition
        return definition

    # -- workflows ------------------------------------------------------------------------------

    def workflows(self) -> dict[str, WorkflowDefinition]:
        """The YAML workflow definitions of ``settings.workflows_dir`` (``./workflows``,
        ``RELAY_WORKFLOWS_DIR``), read now; an invalid file raises ``InvalidWorkflowError``."""
        return load_directory(self.settings.workflows_dir)

    def workflow(self, name: str, /, run_id: str | None = None, **params: str) -> RunHandle:
        """Trigger the YAML workflow ``name`` with these parameters; a handle on its run."""
        return self.call(self.workflow_async(name, run_id=run_id, **params))  # type: ignore[no-any-return]

    async def workflow_async(self, name: str, /, run_id: str | None = None, **params: str) -> RunHandle:
        await self.open_async()
        definitions = self.workflows()
        if name not in definitions:
            raise WorkflowNotFoundError(name)
        started = await trigger(self.storage, definitions[name], params, run_id=run_id)
        return RunHandle(self, started.run, started.created)

    async def _triggered_workflow(self, workflow: str, params: dict[str, str]) -> dict[str, JSON]:
        """The built-in task of a scheduled workflow (WORKFLOW_TASK): start its run, once per job."""
        definitions = self.workflows()
        if workflow not in definitions:
            raise WorkflowNotFoundError(workflow)
        run_id = run_id_for_job(job_context().job_id)
        started = await trigger(self.storage, definitions[workflow], params, run_id=run_id)
        return {"run_id": started.run.id, "created": started.created}

    def start(self, canvas: Canvas) -> RunHandle:
        """Start a run of a canvas (``chain``, ``group``, ``chord``); a handle on it."""
        return self.call(self.start_async(canvas))  # type: ignore[no-any-return]

    async def start_async(self, canvas: Canvas) -> RunHandle:
        await self.open_async()
        started = await start_canvas(self.storage, canvas)
        return RunHandle(self, started.run, started.created)

    def get_run(self, run_id: str) -> WorkflowRun:
        return require_run(self.call(self.storage.workflow_get(run_id)), run_id)

    async def get_run_async(self, run_id: str) -> WorkflowRun:
        await self.open_async()
        return require_run(await self.storage.workflow_get(run_id), run_id)

    # -- read -----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        return require(self.call(self.storage.job_get(job_id)), job_id)

    async def get_job_async(self, job_id: str) -> Job:
        await self.open_async()
        return require(await self.storage.job_get(job_id), job_id)

    # -- work -----------------------------------------------------------------------------------

    def worker(self, **overrides: Any) -> Worker:
        """A worker for this Relay's tasks and schedules; overrides: queues, concurrency, burst,
        maintenance, schedules, ..."""
        overrides.setdefault("schedules", tuple(self.schedules.values()))
        return Worker(self.storage, self.registry, worker_config(self.settings, **overrides), self.clock)

    def run_worker(self, **overrides: Any) -> None:
        """Run a worker in this thread until SIGTERM/SIGINT (or, with ``burst=True``, until idle)."""

        async def main() -> None:
            worker = self.worker(**overrides)
            worker.install_signal_handlers()
            await worker.run()

        asyncio.run(main())

    async def drain_async(self, queues: Sequence[str] | None = None) -> int:
        """Run every due job of ``queues`` (default: all this Relay's queues) until none is due."""
        await self.open_async()
        names = tuple(queues) if queues else tuple({q.name for q in await self.storage.queue_list()})
        if not names:
            return 0
        worker = self.worker(queues=names, burst=True, maintenance=False, poll_interval=0.01, schedules=())
        await worker.run()
        return worker.processed

    def drain(self, queues: Sequence[str] | None = None) -> int:
        return int(self.call(self.drain_async(queues)))
