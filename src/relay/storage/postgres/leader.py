"""Leader election: a term in ``relay.leaders`` backed by a session-level advisory lock.

The table keeps the seam's meaning on every clock (semantics.md rule 9): one holder per name, a term of
``ttl`` seconds renewed by its holder, taken over once it lapses, dropped by ``leader_resign``.

The advisory lock adds what a table cannot know: whether the holder is still alive. The leader's process
holds ``pg_try_advisory_lock(name)`` on a dedicated connection for as long as it leads, and its row says
so (``locked``); PostgreSQL drops the lock the moment that connection dies (process killed, machine
lost). A contender that then gets the lock knows the lock-backed row's session is gone and takes the row
over at once, without waiting for the term to lapse. A live but stalled leader (its connection alive,
its renewals late) still loses by the table: its term lapses and a contender takes the row without the
lock (``locked`` false: only a lapse can take that row over); the stalled one, at its next attempt,
learns it lost and lets the lock go, and the new leader takes it at its next renewal.

State, all on the backend's loop and guarded by one asyncio lock: the leader connection, its random
session token (stored in the row), and the names whose lock this session holds. Several holders of one
process (the conformance suite's "a" and "b") share the session: the lock is then this session's, and
only the table decides between them.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from relay.storage.params import LeaderParams
from relay.storage.postgres.sql import Q


class LeaderLocks:
    def __init__(self, conninfo: str, kwargs: dict[str, Any]) -> None:
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._conn: AsyncConnection[Any] | None = None
        self._session = ""
        self._held: set[str] = set()  # names whose advisory lock this session holds
        self._lock = asyncio.Lock()

    async def elect(self, p: LeaderParams, now: datetime | None) -> bool:
        async with self._lock:
            conn = await self._connection()
            try:
                return await self._elect(conn, p, now)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                await self._drop()  # the next attempt reconnects, with a new session
                raise

    async def resign(self, p: LeaderParams, now: datetime | None) -> None:
        async with self._lock:
            conn = await self._connection()
            try:
                await conn.execute(Q["leader_resign"], {"name": p.name, "holder": p.holder})
                await self._release_unless_leading(conn, p.name)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                await self._drop()
                raise

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _elect(self, conn: AsyncConnection[Any], p: LeaderParams, now: datetime | None) -> bool:
        if p.name not in self._held:
            cur = await conn.execute(Q["leader_try_lock"], {"name": p.name})
            row = await cur.fetchone()
            if row is not None and row[0]:
                self._held.add(p.name)
        params = {
            "name": p.name,
            "holder": p.holder,
            "ttl": p.ttl,
            "now": now,
            "session": self._session,
            "locked": p.name in self._held,
        }
        cur = await conn.execute(Q["leader_elect"], params)
        elected = await cur.fetchone() is not None
        if not elected:
            await self._release_unless_leading(conn, p.name)
        return elected

    async def _release_unless_leading(self, conn: AsyncConnection[Any], name: str) -> None:
        """Keep the lock only while some holder of this session leads ``name``."""
        if name not in self._held:
            return
        cur = await conn.execute(Q["leader_session"], {"name": name, "session": self._session})
        row = await cur.fetchone()
        if row is None or not row[0]:
            await conn.execute(Q["leader_unlock"], {"name": name})
            self._held.discard(name)

    async def _connection(self) -> AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(self._conninfo, **self._kwargs)
            self._session = secrets.token_hex(16)
            self._held.clear()
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            await conn.close()  # its advisory locks go with it
