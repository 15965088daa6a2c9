"""PostgreSQL migrations: every migration applied in order gives exactly ``schema.sql``; migrating is
idempotent, safe to run from several processes at once, and what ``open()`` does on a new database.

The comparison reads PostgreSQL's catalog (no pg_dump needed): tables and their options, columns with
type, nullability, default and identity, constraints, indexes, functions and sequences of the ``relay``
schema, each rendered by PostgreSQL itself (``pg_get_constraintdef``, ``pg_get_indexdef``...).
"""

from __future__ import annotations

import asyncio
from importlib.resources import files
from typing import Any

import psycopg
import pytest

from relay.storage.postgres import PostgresStorage
from relay.storage.postgres.migrate import MIGRATIONS
from servers.postgres import PostgresTestServer, postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

CATALOG_QUERIES = {
    "tables": """
        SELECT c.relname, c.relkind, coalesce(array_to_string(c.reloptions, ','), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'relay' ORDER BY c.relname""",
    "columns": """
        SELECT table_name, ordinal_position, column_name, data_type, udt_name, is_nullable,
               coalesce(column_default, ''), is_identity, coalesce(identity_generation, '')
        FROM information_schema.columns WHERE table_schema = 'relay'
        ORDER BY table_name, ordinal_position""",
    "constraints": """
        SELECT cl.relname, co.conname, co.contype, pg_get_constraintdef(co.oid)
        FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
        JOIN pg_namespace n ON n.oid = co.connamespace
        WHERE n.nspname = 'relay' ORDER BY cl.relname, co.conname""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'relay' ORDER BY tablename, indexname""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'relay' ORDER BY p.proname""",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by
        FROM pg_sequences WHERE schemaname = 'relay' ORDER BY sequencename""",
}


def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: conn.execute(query).fetchall() for name, query in CATALOG_QUERIES.items()}


def empty_database(server: PostgresTestServer, name: str) -> str:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
        )
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    server.created.append(name)  # dropped with the others at the end of the session
    return server.url(name)


@pytest.fixture
def blank_url(postgres_server: PostgresTestServer, request: pytest.FixtureRequest) -> str:
    """An empty database (not cloned from the migrated template)."""
    return empty_database(postgres_server, f"relay_blank_{abs(hash(request.node.nodeid)) % 10**8}")


async def test_all_migrations_in_order_give_exactly_the_schema(
    postgres_server: PostgresTestServer, blank_url: str
) -> None:
    applied = await PostgresStorage(blank_url).migrate()
    assert applied == [name for name, _ in MIGRATIONS]
    assert applied == sorted(applied), "migrations apply in name order"

    reference = empty_database(postgres_server, f"{blank_url.rsplit('/', 1)[1]}_ref")
    with psycopg.connect(reference, autocommit=True) as conn:
        conn.execute(files("relay.storage.postgres").joinpath("schema.sql").read_text(encoding="utf-8"))

    migrated, expected = catalog(blank_url), catalog(reference)
    assert migrated["tables"], "the migrations created nothing"
    for part in CATALOG_QUERIES:
        assert migrated[part] == expected[part], f"migrations and schema.sql differ in {part}"


async def test_migrate_twice_applies_nothing_the_second_time(blank_url: str) -> None:
    storage = PostgresStorage(blank_url)
    assert await storage.migrate() == [name for name, _ in MIGRATIONS]
    assert await storage.migrate() == []
    with psycopg.connect(blank_url) as conn:
        recorded = [name for (name,) in conn.execute("SELECT name FROM relay.schema_migrations ORDER BY 1")]
    assert recorded == [name for name, _ in MIGRATIONS]


async def test_open_migrates_a_new_database(blank_url: str) -> None:
    storage = PostgresStorage(blank_url)
    await storage.open()
    try:
        assert await storage.migrate() == []  # open() already did
        assert await storage.queue_list() == []
    finally:
        await storage.close()


async def test_concurrent_migrators_apply_each_migration_once(blank_url: str) -> None:
    """Four processes' worth of migrators race on a new database: the advisory lock serialises them."""
    results = await asyncio.gather(*(PostgresStorage(blank_url).migrate() for _ in range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, len(MIGRATIONS)]


async def test_the_comparison_sees_a_difference(blank_url: str, postgres_url: str) -> None:
    """The catalog comparison is not vacuous: one changed default shows up."""
    await PostgresStorage(blank_url).migrate()
    with psycopg.connect(blank_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE relay.queues ALTER COLUMN paused SET DEFAULT true")
    assert catalog(blank_url)["columns"] != catalog(postgres_url)["columns"]
    assert catalog(blank_url)["indexes"] == catalog(postgres_url)["indexes"]
