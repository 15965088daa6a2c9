"""Numbered migrations (``migrations/NNNN_name.sql``), applied in name order, recorded by name.

Several workers may start on a new database at the same moment: the migrator takes a transaction-level
advisory lock before it reads ``relay.schema_migrations``, so the second one waits and then finds the
first one's migrations applied. Each migration runs whole (PostgreSQL runs DDL in transactions) in that
same transaction: a failing migration leaves nothing half-applied.
"""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files
from typing import Any, LiteralString, cast

from psycopg import AsyncConnection

from relay.storage.postgres.sql import Q


def _load_migrations() -> list[tuple[str, LiteralString]]:
    folder = files("relay.storage.postgres").joinpath("migrations")
    found = [(f.name.removesuffix(".sql"), f) for f in folder.iterdir() if f.name.endswith(".sql")]
    return [(name, _script(f.read_text(encoding="utf-8"))) for name, f in sorted(found)]


def _script(text: Any) -> LiteralString:
    """A migration's text: shipped in the package, never user input, hence ``LiteralString``."""
    return cast(LiteralString, text)


#: (name, script) of every migration shipped, in the order they apply.
MIGRATIONS: list[tuple[str, LiteralString]] = _load_migrations()


async def pending(conn: AsyncConnection[Any]) -> list[str]:
    """Names of the migrations not applied yet (reads only: an up-to-date database takes no lock)."""
    cur = await conn.execute(Q["migrations_table_exists"])
    row = await cur.fetchone()
    if row is None or not row[0]:
        return [name for name, _ in MIGRATIONS]
    cur = await conn.execute(Q["migrations_applied"])
    applied = {name for (name,) in await cur.fetchall()}
    return [name for name, _ in MIGRATIONS if name not in applied]


async def apply_pending(conn: AsyncConnection[Any], now: datetime | None) -> list[str]:
    """Apply what is missing, in one transaction under the migration lock; returns the names applied."""
    if not await pending(conn):
        return []
    async with conn.transaction():
        await conn.execute(Q["migrations_lock"])
        await conn.execute(Q["schema_create"])
        await conn.execute(Q["migrations_table"])
        cur = await conn.execute(Q["migrations_applied"])
        applied = {name for (name,) in await cur.fetchall()}
        done: list[str] = []
        for name, script in MIGRATIONS:
            if name in applied:
                continue
            await conn.execute(script)
            await conn.execute(Q["migration_record"], {"name": name, "now": now})
            done.append(name)
    return done
