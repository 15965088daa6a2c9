"""The Lua scripts, loaded once at import, and the typed wrappers that run them.

Each operation is one ``scripts/<name>.lua`` file. At import every file is prefixed with the key
templates of :mod:`.keys` (as a Lua table), the job fields Python reads (``codec.FIELDS``, as the Lua
list ``READ``), the layout version (``keys.LAYOUT``) and ``scripts/_lib.lua``, the helpers all scripts
share (``insert_jobs`` among them: the insert and the schedule's fire run the same code), so that
each script sent to Redis is self-contained. :class:`Scripts` registers them on a client (redis-py
sends ``EVALSHA`` and loads a script again when the server lost it, after a restart) and offers one
typed method per operation: arguments in, the raw reply out, decoded by the caller.

Every call passes the store's prefix as ``KEYS[1]`` and the storage time as ``ARGV[1]`` ('' = the Redis
server's ``TIME``; see ``_lib.lua``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from types import MappingProxyType
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from relay.storage.redis.codec import FIELDS
from relay.storage.redis.keys import LAYOUT, lua_table

_DIR = resources.files("relay.storage.redis") / "scripts"

#: Every operation's script, by file name.
NAMES = (
    "insert_many", "claim", "heartbeat", "finish", "log_append", "reap", "promote", "prune",
    "leader_elect", "leader_resign", "cancel", "requeue", "purge", "queue_set_paused",
    "queue_limits_set", "buckets_prune", "worker_heartbeat", "worker_remove", "job_list", "queue_list",
    "logs_read", "schedule_upsert", "schedule_set_paused", "schedule_remove", "schedule_list",
    "schedule_fire", "workflow_start", "workflow_read", "workflow_list", "workflow_cancel",
    "workflow_retry",
)  # fmt: skip


def _read(name: str) -> str:
    return (_DIR / f"{name}.lua").read_text(encoding="utf-8")


_READ = "{" + ", ".join(f"'{name}'" for name in FIELDS) + "}"
_PRELUDE = (
    f"local TEMPLATES = {lua_table()}\nlocal READ = {_READ}\nlocal LAYOUT = '{LAYOUT}'\n{_read('_lib')}\n"
)
SOURCES: Mapping[str, str] = MappingProxyType({name: _PRELUDE + _read(name) for name in NAMES})

Arg = str | int | bytes


def counted(values: Sequence[str]) -> list[str]:
    """A list argument: its length, then its items (``argv_list`` in ``_lib.lua``)."""
    return [str(len(values)), *values]


class Scripts:
    """The scripts of one store (``prefix``) on one client: one method per operation."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(source) for name, source in SOURCES.items()
        }

    async def load(self) -> None:
        """Load every script on the server now, in one round trip. Without this, the first call of a
        script finds it missing and is sent again: for an insert of ten thousand jobs, megabytes twice.
        (After a Redis restart redis-py loads a missing script again by itself.)"""
        async with self._client.pipeline(transaction=False) as pipe:
            for source in SOURCES.values():
                pipe.script_load(source)
            await pipe.execute()

    async def _run(self, name: str, now: str, args: Sequence[Arg]) -> Any:
        return await self._scripts[name](keys=[self._prefix], args=[now, *args])

    # -- producer and worker ------------------------------------------------------------------

    async def insert_many(self, now: str, origin: str, batch: str, body: bytes) -> list[Any]:
        """``body``: the packed jobs as one JSON array (``orjson.dumps``)."""
        reply: list[Any] = await self._run("insert_many", now, [origin, batch, body])
        return reply

    async def claim(
        self,
        now: str,
        worker_id: str,
        limit: int,
        token_base: str,
        queues: Sequence[str],
        kinds: Sequence[str],
    ) -> list[Any]:
        """``[retry_after, id, values, id, values, ...]`` (see claim.lua)."""
        args: list[Arg] = [worker_id, limit, token_base, *counted(queues), *counted(kinds)]
        reply: list[Any] = await self._run("claim", now, args)
        return reply

    async def heartbeat(self, now: str, items: Sequence[tuple[str, str, str, str, str]]) -> list[int]:
        reply: list[int] = await self._run(
            "heartbeat", now, [len(items), *(a for item in items for a in item)]
        )
        return reply

    async def finish(self, now: str, origin: str, items: Sequence[Sequence[str]]) -> list[Any]:
        """``[states, queues woken]``."""
        reply: list[Any] = await self._run(
            "finish", now, [origin, len(items), *(a for item in items for a in item)]
        )
        return reply

    async def log_append(self, now: str, cap: int, lines: Sequence[tuple[str, str, str, str]]) -> None:
        await self._run("log_append", now, [cap, len(lines), *(a for line in lines for a in line)])

    # -- maintenance --------------------------------------------------------------------------

    async def reap(self, now: str, origin: str, message_json: str) -> list[list[bytes]]:
        """``[requeued, dead, cancelled, queues woken]``."""
        reply: list[list[bytes]] = await self._run("reap", now, [origin, message_json])
        return reply

    async def promote(self, now: str) -> int:
        return int(await self._run("promote", now, []))

    async def prune(
        self, now: str, origin: str, before_us: int, limit: int, states: Sequence[str]
    ) -> list[Any]:
        """``[deleted, queues woken]``."""
        reply: list[Any] = await self._run("prune", now, [origin, before_us, limit, *counted(states)])
        return reply

    async def buckets_prune(self, now: str) -> int:
        return int(await self._run("buckets_prune", now, []))

    async def leader_elect(self, now: str, name: str, holder: str, ttl_us: int) -> bool:
        return int(await self._run("leader_elect", now, [name, holder, ttl_us])) == 1

    async def leader_resign(self, now: str, name: str, holder: str) -> None:
        await self._run("leader_resign", now, [name, holder])

    # -- operators ----------------------------------------------------------------------------

    async def cancel(self, now: str, origin: str, job_id: str) -> list[Any]:
        reply: list[Any] = await self._run("cancel", now, [origin, job_id])
        return reply

    async def requeue(self, now: str, job_id: str, queue: str, states: Sequence[str]) -> list[Any]:
        reply: list[Any] = await self._run("requeue", now, [job_id, queue, *counted(states)])
        return reply

    async def purge(self, now: str, origin: str, queue: str, chunk: int, states: Sequence[str]) -> list[Any]:
        """``[deleted, queues woken]``."""
        reply: list[Any] = await self._run("purge", now, [origin, queue, chunk, *counted(states)])
        return reply

    async def queue_set_paused(self, now: str, name: str, paused: bool) -> None:
        await self._run("queue_set_paused", now, [name, "1" if paused else "0"])

    async def queue_limits_set(self, now: str, origin: str, name: str, limits_json: str) -> None:
        """``limits_json``: ``codec.limits_json``, or '' for no limits."""
        await self._run("queue_limits_set", now, [origin, name, limits_json])

    async def worker_heartbeat(self, now: str, worker_id: str, info_json: str) -> None:
        await self._run("worker_heartbeat", now, [worker_id, info_json])

    async def worker_remove(self, now: str, worker_id: str) -> None:
        await self._run("worker_remove", now, [worker_id])

    # -- reads --------------------------------------------------------------------------------

    async def job_list(
        self,
        before: str,
        chunk: int,
        states: Sequence[str],
        queues: Sequence[str],
        kinds: Sequence[str],
    ) -> list[Any]:
        args: list[Arg] = [before, chunk, *counted(states), *counted(queues), *counted(kinds)]
        reply: list[Any] = await self._run("job_list", "", args)
        return reply

    async def queue_list(self, now: str) -> list[Any]:
        """``[now, rows]`` (see queue_list.lua)."""
        reply: list[Any] = await self._run("queue_list", now, [])
        return reply

    async def logs_read(self, job_id: str, after_seq: int, attempt: str, limit: int) -> list[bytes]:
        reply: list[bytes] = await self._run("logs_read", "", [job_id, after_seq, attempt, limit])
        return reply

    # -- schedules ----------------------------------------------------------------------------

    async def schedule_upsert(
        self, now: str, name: str, spec: str, timezone: str, job_json: str, catch_up: str, next_run: str
    ) -> list[bytes]:
        reply: list[bytes] = await self._run(
            "schedule_upsert", now, [name, spec, timezone, job_json, catch_up, next_run]
        )
        return reply

    async def schedule_set_paused(self, now: str, name: str, paused: bool, next_run: str) -> list[Any]:
        reply: list[Any] = await self._run(
            "schedule_set_paused", now, [name, "1" if paused else "0", next_run]
        )
        return reply

    async def schedule_remove(self, now: str, name: str) -> bool:
        return int(await self._run("schedule_remove", now, [name])) == 1

    async def schedule_list(self, now: str, due_limit: int | None) -> list[Any]:
        """Every schedule (``due_limit`` None), or the due ones: ``[now, name, record, ...]``."""
        reply: list[Any] = await self._run("schedule_list", now, ["" if due_limit is None else due_limit])
        return reply

    async def schedule_fire(
        self,
        now: str,
        name: str,
        times: tuple[str, str, str],
        token: str,
        origin: str,
        body: bytes | str,
    ) -> list[Any]:
        """``times``: expected next run, tick and new next run ('' = none), in µs; ``body``: the
        tick's packed job as a one-job JSON array, or ''."""
        reply: list[Any] = await self._run("schedule_fire", now, [name, *times, token, origin, body])
        return reply

    # -- workflow runs ------------------------------------------------------------------------

    async def workflow_start(
        self, now: str, origin: str, batch: str, run: Sequence[str], body: bytes
    ) -> list[Any]:
        """``run``: run id, workflow, policy, params JSON, graph JSON; ``body``: the steps' packed jobs
        as one JSON array."""
        reply: list[Any] = await self._run("workflow_start", now, [origin, batch, *run, body])
        return reply

    async def workflow_read(self, now: str, run_id: str) -> list[Any]:
        reply: list[Any] = await self._run("workflow_read", now, [run_id])
        return reply

    async def workflow_list(self, now: str, workflow: str | None, before: str, limit: int) -> list[Any]:
        args: list[Arg] = ["0" if workflow is None else "1", workflow or "", before, limit]
        reply: list[Any] = await self._run("workflow_list", now, args)
        return reply

    async def workflow_cancel(self, now: str, origin: str, run_id: str) -> list[Any]:
        reply: list[Any] = await self._run("workflow_cancel", now, [origin, run_id])
        return reply

    async def workflow_retry(self, now: str, origin: str, run_id: str, step: str) -> list[Any]:
        reply: list[Any] = await self._run("workflow_retry", now, [origin, run_id, step])
        return reply
