"""``@relay.task``: a plain function that can also be enqueued, typed with ParamSpec.

@relay.task(queue="billing", max_retries=5)
def charge(customer_id: int, cents: int) -> str: ...

charge.enqueue(42, 1999)                       # checked by the type checker like charge(42, 1999)
charge.options(delay="10s", priority=5).enqueue(42, 1999)
await charge.enqueue_async(42, 1999)
charge.enqueue_many([charge.call(1, 10), charge.call(2, 20)])   # one transaction
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

import orjson

from relay.errors import InvalidJobError
from relay.sdk.handle import JobHandle, JobReader
from relay.sdk.options import JobOptions
from relay.storage.params import InsertResult
from relay.types import JSON, NewJob

P = ParamSpec("P")
R = TypeVar("R")


class Enqueuer(JobReader, Protocol):
    def insert(self, jobs: Sequence[NewJob]) -> list[InsertResult]: ...

    async def insert_async(self, jobs: Sequence[NewJob]) -> list[InsertResult]: ...

    def insert_with_connection(self, connection: Any, jobs: Sequence[NewJob]) -> list[InsertResult]: ...

    async def insert_with_connection_async(
        self, connection: Any, jobs: Sequence[NewJob]
    ) -> list[InsertResult]: ...


@dataclass(frozen=True)
class TaskCall:
    """A task call not yet enqueued: for bulk enqueue and for chains (``on_success``)."""

    job: NewJob


def _json_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[JSON], dict[str, JSON]]:
    """Arguments must be JSON (Relay never pickles): refuse anything else at enqueue, not in the worker."""
    try:
        payload = orjson.loads(orjson.dumps([list(args), kwargs]))
    except TypeError as exc:
        raise InvalidJobError("payload.args", f"task arguments must be JSON values: {exc}") from None
    return payload[0], payload[1]


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin or C function without a signature
        return set()


class Task(Generic[P, R]):
    def __init__(self, enqueuer: Enqueuer, fn: Callable[P, R], name: str, options: JobOptions) -> None:
        self.fn = fn
        self.name = name
        self._enqueuer = enqueuer
        self._options = options
        # Validated once: each enqueue only fills in the arguments.
        self._template = options.build("task", {"task": name})
        self._connection: Any = None  # set by using(): enqueue in the caller's transaction
        self._takes_connection = "connection" in _parameters(fn)
        self.__name__ = getattr(fn, "__name__", name)
        self.__doc__ = fn.__doc__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, as if it were not a task."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def using(self, connection: Any) -> Task[P, R]:
        """This task, enqueuing in ``connection``'s open transaction (PostgreSQL):
        ``charge.using(conn).enqueue(42, 1999)``."""
        bound = Task(self._enqueuer, self.fn, self.name, self._options)
        bound._connection = connection
        return bound

    def _connection_from(self, kwargs: dict[str, Any]) -> Any:
        if self._connection is not None:
            return self._connection
        # A function with its own `connection` parameter keeps it: only .using() binds one then.
        return None if self._takes_connection else kwargs.pop("connection", None)

    def options(self, **options: Any) -> Task[P, R]:
        """This task with other options for the next enqueues: queue, priority, delay, run_at,
        idempotency_key, max_retries, backoff, timeout, lease, tags, metadata, on_success, on_failure."""
        task = Task(self._enqueuer, self.fn, self.name, self._options.merged(JobOptions(**options)))
        task._connection = self._connection
        return task

    def call(self, *args: P.args, **kwargs: P.kwargs) -> TaskCall:
        """The job a call would enqueue, without enqueuing it."""
        a, kw = _json_args(args, kwargs)
        return TaskCall(self._template.with_payload({"task": self.name, "args": a, "kwargs": kw}))

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Enqueue a call. ``connection=conn`` (a psycopg connection; PostgreSQL only) inserts the job in
        that connection's open transaction: it exists only if the caller commits. (For type checkers,
        and for tasks with a parameter of their own named ``connection``: ``task.using(conn)``.)"""
        connection = self._connection_from(kwargs)
        job = self.call(*args, **kwargs).job
        if connection is None:
            [result] = self._enqueuer.insert([job])
        else:
            [result] = self._enqueuer.insert_with_connection(connection, [job])
        return JobHandle(self._enqueuer, result.job, result.created)

    async def enqueue_async(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """:meth:`enqueue`; ``connection=`` takes a psycopg ``AsyncConnection``."""
        connection = self._connection_from(kwargs)
        job = self.call(*args, **kwargs).job
        if connection is None:
            [result] = await self._enqueuer.insert_async([job])
        else:
            [result] = await self._enqueuer.insert_with_connection_async(connection, [job])
        return JobHandle(self._enqueuer, result.job, result.created)

    def enqueue_many(self, calls: Iterable[TaskCall]) -> list[JobHandle]:
        """Enqueue many calls in one transaction (see :meth:`call`)."""
        results = self._enqueuer.insert([c.job for c in calls])
        return [JobHandle(self._enqueuer, r.job, r.created) for r in results]

    async def enqueue_many_async(self, calls: Iterable[TaskCall]) -> list[JobHandle]:
        results = await self._enqueuer.insert_async([c.job for c in calls])
        return [JobHandle(self._enqueuer, r.job, r.created) for r in results]
