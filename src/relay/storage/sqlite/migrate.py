"""Numbered migrations (``migrations/NNNN_name.sql``), applied in name order, recorded by name.

Two processes may open a new file at the same moment, so the migrator takes the write lock
(``BEGIN IMMEDIATE``, by the caller) before it reads ``schema_migrations``: the second one then sees the
first one's migrations as applied. A migration runs statement by statement in that same transaction,
never with ``executescript`` (which would COMMIT first and so give the lock away).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from importlib.resources import files

from relay.storage.sqlite.rows import to_us
from relay.storage.sqlite.sql import Q


def _load_migrations() -> list[tuple[str, str]]:
    folder = files("relay.storage.sqlite").joinpath("migrations")
    found = [(f.name.removesuffix(".sql"), f) for f in folder.iterdir() if f.name.endswith(".sql")]
    return [(name, f.read_text(encoding="utf-8")) for name, f in sorted(found)]


#: (name, script) of every migration shipped, in the order they apply.
MIGRATIONS: list[tuple[str, str]] = _load_migrations()


def split_statements(script: str) -> list[str]:
    """The statements of ``script``, cut where SQLite itself says a statement is complete."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(ln for ln in buffer.splitlines() if not ln.strip().startswith("--")).strip()
    if rest:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {rest[:80]!r}")
    return statements


def has_pending(conn: sqlite3.Connection) -> bool:
    """Whether any migration is not applied yet (a read: no lock is taken)."""
    (exists,) = conn.execute(Q["migrations_table_exists"]).fetchone()
    if not exists:
        return True
    applied = {name for (name,) in conn.execute(Q["migrations_applied"])}
    return any(name not in applied for name, _ in MIGRATIONS)


def apply_pending(conn: sqlite3.Connection, now: datetime) -> list[str]:
    """Apply what is missing; the caller holds the write lock and commits. Returns the names applied."""
    conn.execute(Q["migrations_table"])
    applied = {name for (name,) in conn.execute(Q["migrations_applied"])}
    done: list[str] = []
    for name, script in MIGRATIONS:
        if name in applied:
            continue
        for statement in split_statements(script):
            conn.execute(statement)
        conn.execute(Q["migration_record"], {"name": name, "now": to_us(now)})
        done.append(name)
    return done
