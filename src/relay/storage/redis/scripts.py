"""The Lua scripts, loaded once at import, and the typed wrappers that run them.

Each operation is one ``scripts/<name>.lua`` file. At import every file is prefixed with the key
templates of :mod:`.keys` (as a Lua table), the job fields Python reads (``codec.FIELDS``, as the Lua
list ``READ``) and ``scripts/_lib.lua``, the helpers all scripts share, so that each script sent to
Redis is self-contained. :class:`Scripts` registers them on a client (redis-py
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
    "worker_heartbeat", "worker_remove", "job_list", "queue_list", "logs_read",
)  # fmt: skip


def _read(name: str) -> str:
    return (_DIR / f"{name}.lua").read_text(encoding="utf-8")


_READ = "{" + ", ".join(f"'{name}'" for name in FIELDS) + "}"
_PRELUDE = f"local TEMPLATES = {lua_table()}\nlocal READ = {_READ}\n{_read('_lib')}\n"
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
        reply: list[Any] = await self._run("insert_many", now, [origin, batch, LAYOUT, body])
        return reply

    async def claim(
        self,
        now: str,
        worker_id: str,
        limit: int,
        token_base: str,
        queues: Sequence[str],
        kinds: Sequence[str],
    ) -> list[list[bytes]]:
        args: list[Arg] = [worker_id, limit, token_base, *counted(queues), *counted(kinds)]
        reply: list[list[bytes]] = await self._run("claim", now, args)
        return reply

    async def heartbeat(self, now: str, items: Sequence[tuple[str, str, str, str, str]]) -> list[int]:
        reply: list[int] = await self._run(
            "heartbeat", now, [len(items), *(a for item in items for a in item)]
        )
        return reply

    async def finish(self, now: str, items: Sequence[Sequence[str]]) -> list[bytes]:
        reply: list[bytes] = await self._run(
            "finish", now, [len(items), *(a for item in items for a in item)]
        )
        return reply

    async def log_append(self, now: str, cap: int, lines: Sequence[tuple[str, str, str, str]]) -> None:
        await self._run("log_append", now, [cap, len(lines), *(a for line in lines for a in line)])

    # -- maintenance --------------------------------------------------------------------------

    async def reap(self, now: str, message_json: str) -> list[list[bytes]]:
        reply: list[list[bytes]] = await self._run("reap", now, [message_json])
        return reply

    async def promote(self, now: str) -> int:
        return int(await self._run("promote", now, []))

    async def prune(self, now: str, before_us: int, limit: int, states: Sequence[str]) -> int:
        return int(await self._run("prune", now, [before_us, limit, *counted(states)]))

    async def leader_elect(self, now: str, name: str, holder: str, ttl_us: int) -> bool:
        return int(await self._run("leader_elect", now, [name, holder, ttl_us])) == 1

    async def leader_resign(self, now: str, name: str, holder: str) -> None:
        await self._run("leader_resign", now, [name, holder])

    # -- operators ----------------------------------------------------------------------------

    async def cancel(self, now: str, job_id: str) -> list[Any]:
        reply: list[Any] = await self._run("cancel", now, [job_id])
        return reply

    async def requeue(self, now: str, job_id: str, queue: str, states: Sequence[str]) -> list[Any]:
        reply: list[Any] = await self._run("requeue", now, [job_id, queue, *counted(states)])
        return reply

    async def purge(self, now: str, queue: str, chunk: int, states: Sequence[str]) -> int:
        return int(await self._run("purge", now, [queue, chunk, *counted(states)]))

    async def queue_set_paused(self, now: str, name: str, paused: bool) -> None:
        await self._run("queue_set_paused", now, [name, "1" if paused else "0"])

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

    async def queue_list(self) -> list[list[Any]]:
        reply: list[list[Any]] = await self._run("queue_list", "", [])
        return reply

    async def logs_read(self, job_id: str, after_seq: int, attempt: str, limit: int) -> list[bytes]:
        reply: list[bytes] = await self._run("logs_read", "", [job_id, after_seq, attempt, limit])
        return reply
