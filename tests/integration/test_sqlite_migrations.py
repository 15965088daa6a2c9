"""The SQLite schema: migrations equal schema.sql, apply once, and apply safely from racing openers."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from importlib.resources import files
from pathlib import Path

import pytest

from relay.errors import StorageUnavailableError
from relay.storage.sql_queries import parse_queries
from relay.storage.sqlite import SQLiteStorage
from relay.storage.sqlite.migrate import MIGRATIONS, split_statements
from relay.storage.sqlite.sql import Q

SCHEMA_SQL = files("relay.storage.sqlite").joinpath("schema.sql").read_text(encoding="utf-8")


def normalised_schema(path: Path) -> list[tuple[str, str, str, str]]:
    """(type, name, table, SQL without comments and with single spaces) of every schema object."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master").fetchall()
    finally:
        conn.close()
    return sorted((kind, name, table, _normalise(sql)) for kind, name, table, sql in rows)


def _normalise(sql: str) -> str:
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return " ".join(without_comments.split())


def applied_migrations(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [name for (name,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    finally:
        conn.close()


async def test_migrations_produce_exactly_schema_sql(tmp_path: Path) -> None:
    migrated, reference = tmp_path / "migrated.db", tmp_path / "reference.db"
    assert await SQLiteStorage(str(migrated)).migrate() == [name for name, _ in MIGRATIONS]
    conn = sqlite3.connect(reference)
    try:
        conn.executescript(SCHEMA_SQL)
    finally:
        conn.close()
    schema = normalised_schema(migrated)
    assert schema == normalised_schema(reference)
    assert {name for kind, name, _, _ in schema if kind == "table"} >= {
        "jobs",
        "job_logs",
        "queues",
        "workers",
        "leaders",
        "schema_migrations",
    }


async def test_migrations_are_numbered_and_recorded_once(tmp_path: Path) -> None:
    names = [name for name, _ in MIGRATIONS]
    assert names == sorted(names)
    assert all(re.fullmatch(r"\d{4}_\w+", name) for name in names)
    path = tmp_path / "relay.db"
    storage = SQLiteStorage(str(path))
    await storage.open()
    try:
        assert await storage.migrate() == []
    finally:
        await storage.close()
    assert applied_migrations(path) == names
    assert await SQLiteStorage(str(path)).migrate() == []


async def test_racing_openers_of_a_new_file_apply_each_migration_once(tmp_path: Path) -> None:
    """Each instance has its own connection and thread: to SQLite they are separate processes."""
    path = tmp_path / "new.db"
    results = await asyncio.gather(*(SQLiteStorage(str(path)).migrate() for _ in range(6)))
    every = [name for name, _ in MIGRATIONS]
    assert sorted(results) == [[]] * 5 + [every]
    assert applied_migrations(path) == every


async def test_open_creates_the_file_at_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = SQLiteStorage("relay.db")
    await storage.open()
    try:
        assert (tmp_path / "relay.db").is_file()
        assert await storage.queue_list() == []
        conn = sqlite3.connect(tmp_path / "relay.db")
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            conn.close()
    finally:
        await storage.close()


async def test_open_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "no" / "such" / "dir" / "relay.db"))
    with pytest.raises(StorageUnavailableError, match="cannot open"):
        await storage.open()
    with pytest.raises(StorageUnavailableError, match="not open"):
        await storage.queue_list()


def test_statements_are_split_where_sqlite_says_they_end() -> None:
    script = """
        -- a header; with a semicolon in a comment
        CREATE TABLE a (x TEXT DEFAULT 'semi;colon');
        CREATE TRIGGER t AFTER INSERT ON a BEGIN
            UPDATE a SET x = 'y';
        END;
        -- a trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[0].endswith("DEFAULT 'semi;colon');")
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE b (x TEXT)")


def test_query_files_parse_into_named_blocks() -> None:
    text = "-- header\n\n-- name: one\nSELECT 1\n\n-- name: two\n-- a comment kept with the query\nSELECT 2\n"
    assert parse_queries(text) == {"one": "SELECT 1", "two": "-- a comment kept with the query\nSELECT 2"}
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: one\nSELECT 1\n-- name: one\nSELECT 2\n")
    assert "job_claim" in Q
    assert all(sql.strip() for sql in Q.values())
