"""Stores for the benchmark: each yields a function giving a fresh storage URL per scenario.

PostgreSQL and Redis come from their pip wheels, started by the same code the tests use
(``tests/servers``), but with their durable settings: the benchmark measures the guarantees users get.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers.postgres import start_cluster, with_database
from servers.redis import start_redis


def sqlite_urls(tmp: Path) -> Iterator[Callable[[str], str]]:
    yield lambda name: f"sqlite:///{tmp / f'{name}.db'}"


def postgres_urls(tmp: Path) -> Iterator[Callable[[str], str]]:
    import psycopg

    (tmp / "pg").mkdir()
    cluster = start_cluster(tmp / "pg", fast=False)

    def fresh(name: str) -> str:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE bench_{name}")  # a fixed, known name: not user input
        return with_database(cluster.url, f"bench_{name}")

    try:
        yield fresh
    finally:
        cluster.stop()


def redis_urls(tmp: Path) -> Iterator[Callable[[str], str]]:
    (tmp / "redis").mkdir()
    server = start_redis(tmp / "redis")
    try:
        yield lambda name: f"{server.url}?prefix=bench-{name}"
    finally:
        server.stop()
