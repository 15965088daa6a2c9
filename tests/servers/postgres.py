"""Real PostgreSQL servers for the tests: the binaries of the ``pgserver`` wheel (PostgreSQL 16), or an
existing server from ``RELAY_TEST_POSTGRES_URL``.

- ``postgres_server``: a session fixture; a :class:`PostgresTestServer` on the cluster this module started
  (in a temporary directory, on a free loopback port) or on the external server. The first use migrates a
  template database once (through Relay's own migrator). When no server can be had, the tests that need
  one are skipped, with the reason.
- ``postgres_test_url(env)`` (the conformance suite): the URL of an empty, migrated database for one test,
  one of a few clones of the template that are emptied between tests (truncating is much faster than
  cloning; see :class:`PostgresTestServer`).
- ``postgres_url`` (integration and end-to-end tests): a fresh clone of the template per test, which the
  test may change at will (create its own tables, alter the schema).
- Databases are named after this process, so parallel test processes never meet; they are dropped at the
  end of the session (fresh clones all but the latest few already while it runs).
- :func:`start_cluster` / :class:`PostgresCluster`: a cluster the test controls (stop, crash, start again
  on the same port and data), for the restart tests.

PostgreSQL refuses to run as root: as root, the cluster runs as ``nobody`` (``runuser``), and its
directories are made traversable by that user (``mkdtemp`` creates them mode 0700).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from relay.storage.postgres import PostgresStorage

T = TypeVar("T")

POSTGRES_URL_ENV = "RELAY_TEST_POSTGRES_URL"
START_TIMEOUT = 30.0  # seconds for a cluster to accept connections
DROP_BEHIND = 8  # fresh databases kept while the session runs; older ones are dropped
RECYCLE = 4  # databases that empty_database() hands out in turn
RUN_AS = "nobody"  # the user a cluster runs as when the tests run as root

# Throwaway test clusters trade durability for speed. The restart tests start their own cluster with
# PostgreSQL's defaults (``fast=False``), since what they check is precisely what survives a crash.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
COMMON_SETTINGS = {"max_connections": "300", "listen_addresses": "127.0.0.1", "log_min_messages": "warning"}


def postgres_bin() -> Path | None:
    """The ``bin`` directory of the PostgreSQL shipped in the pgserver wheel (found without importing
    pgserver, whose import warns about XDG_RUNTIME_DIR, an error under ``filterwarnings = error``)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    binaries = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return binaries if os.access(binaries / "postgres", os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own thread (callable from inside a running loop)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # handed back to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="postgres-test-setup")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


@dataclass
class PostgresCluster:
    """One PostgreSQL cluster in ``dir`` (data in ``dir/data``), on 127.0.0.1:``port``; restartable."""

    bin: Path
    dir: Path
    port: int
    settings: dict[str, str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", RUN_AS, "--", *args] if os.geteuid() == 0 else list(args)

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        result = subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()}\n{self.log_tail()}")

    def init(self) -> None:
        self.dir.chmod(0o755)  # traversable by the cluster's user
        if os.geteuid() == 0:
            shutil.chown(self.dir, user=RUN_AS)
        locale = ["--locale=C.UTF-8"] if _has_c_utf8() else ["--no-locale"]
        initdb = str(self.bin / "initdb")
        self._run(
            initdb,
            "-D",
            str(self.dir / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "-N",
            *locale,
        )

    def start(self) -> None:
        options = " ".join(f"-c {k}={v}" for k, v in {"port": str(self.port), **self.settings}.items())
        options += f" -k {self.dir}"  # the unix socket, in a directory the cluster's user owns
        pg_ctl = str(self.bin / "pg_ctl")
        self._run(
            pg_ctl, "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (a clean shutdown) or ``immediate`` (a crash: the next start replays the WAL)."""
        pg_ctl = str(self.bin / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        return (self.dir / "data" / "postmaster.pid").exists()

    def log_tail(self, lines: int = 30) -> str:
        log = self.dir / "log"
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _has_c_utf8() -> bool:
    result = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    return any(name.lower() in ("c.utf8", "c.utf-8") for name in result.stdout.split())


def start_cluster(directory: Path, *, fast: bool = True, port: int | None = None) -> PostgresCluster:
    """Create and start a cluster in ``directory`` (a free port unless given; retried if taken)."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("no PostgreSQL binaries: install the pgserver wheel (pip install pgserver)")
    settings = {**COMMON_SETTINGS, **(FAST_SETTINGS if fast else {})}
    cluster = PostgresCluster(binaries, directory, port or free_port(), settings)
    cluster.init()
    for attempt in range(3):
        try:
            cluster.start()
            return cluster
        except RuntimeError:
            if port is not None or attempt == 2:
                raise
            cluster.port = free_port()  # someone took the port between the probe and the start
    raise AssertionError("unreachable")


@dataclass
class PostgresTestServer:
    """A server the tests may create databases on: ``admin_url`` names a database to connect to.

    Two kinds of database, both migrated and empty:

    - :meth:`new_database`: a clone of the template (``CREATE DATABASE … TEMPLATE``), for tests that may
      change more than Relay's tables (an application table, the schema itself). A clone costs 50 to
      200 ms (PostgreSQL copies the template's catalog), so:
    - :meth:`empty_database`: for tests that only go through the storage (the conformance suite), one of
      ``RECYCLE`` clones, reused round-robin: before a database is handed out again, every connection
      left on it is terminated and Relay's tables are truncated (identities restarted), which leaves it
      exactly as cloned, in about 10 ms. Tests run one after another in a process, so the database
      reused was last used ``RECYCLE`` tests ago.
    """

    admin_url: str
    cluster: PostgresCluster | None = None
    template: str = field(default_factory=lambda: f"relay_template_{os.getpid()}")
    created: list[str] = field(default_factory=list)  # fresh clones not dropped yet, oldest first
    recycled: list[str] = field(default_factory=list)  # the RECYCLE databases, least recently used first
    _names: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

    def _admin(self, statement: sql.Composable, database: str | None = None) -> None:
        url = self.admin_url if database is None else self.url(database)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)

    def prepare_template(self) -> None:
        """Create the template database and migrate it with Relay's own migrator, once."""
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.template)))
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        run_async(PostgresStorage(self.url(self.template)).migrate())

    def new_database(self) -> str:
        """A fresh migrated database cloned from the template; returns its URL."""
        with self._lock:
            name = self._next_name()
            self.created.append(name)
            stale = self.created[:-DROP_BEHIND]
            del self.created[:-DROP_BEHIND]
        for old in stale:
            self.drop(old)
        self._clone(name)
        return self.url(name)

    def empty_database(self) -> str:
        """An empty migrated database, recycled (see the class docstring); returns its URL."""
        with self._lock:
            if len(self.recycled) < RECYCLE:
                name = self._next_name()
                fresh = True
            else:
                name = self.recycled.pop(0)
                fresh = False
            self.recycled.append(name)
        if fresh:
            self._clone(name)
        else:
            self._empty(name)
        return self.url(name)

    def _next_name(self) -> str:
        return f"relay_test_{os.getpid()}_{next(self._names)}"

    def _clone(self, name: str) -> None:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self.template)
        )
        # The migrator's connections may still be closing server-side: "being accessed by other users".
        deadline = time.monotonic() + 10.0
        while True:
            try:
                self._admin(create)
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _empty(self, name: str) -> None:
        """Terminate what a finished test left connected, then truncate Relay's tables (one connection)."""
        self._admin(sql.SQL(EMPTY), database=name)

    def drop(self, name: str) -> None:
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def cleanup(self) -> None:
        for name in [*self.created, *self.recycled, self.template]:
            with contextlib.suppress(psycopg.Error):  # the server may be going away already
                self.drop(name)


# Leaves a recycled database as cloned: nothing connected, every table of the relay schema but the
# migrations record empty, identities restarted.
EMPTY = """
    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid();
    SET lock_timeout = '10s';
    TRUNCATE relay.jobs, relay.job_logs, relay.queues, relay.workers, relay.leaders, relay.rate_buckets,
        relay.schedules, relay.workflow_runs RESTART IDENTITY;
"""


_SETUP_ERRORS = (RuntimeError, OSError, psycopg.Error, subprocess.SubprocessError)


def _start_server(tmp: Path) -> PostgresTestServer:
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        server = PostgresTestServer(external)
    else:
        cluster = start_cluster(tmp)
        server = PostgresTestServer(cluster.url, cluster)
    try:
        server.prepare_template()
    except _SETUP_ERRORS:
        _shutdown(server)
        raise
    return server


def _shutdown(server: PostgresTestServer) -> None:
    server.cleanup()
    if server.cluster is not None and server.cluster.is_running():
        server.cluster.stop("immediate")  # a throwaway cluster: nothing to flush


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresTestServer]:
    tmp = Path(tempfile.mkdtemp(prefix="relay-pg-"))
    try:
        server = _start_server(tmp)
    except _SETUP_ERRORS as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"\nPostgreSQL tests skipped: {exc}")
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")
    try:
        yield server
    finally:
        _shutdown(server)
        shutil.rmtree(tmp, ignore_errors=True)


def postgres_test_url(env: Any) -> str:
    """The URL of an empty, migrated database for one test (``env.server``: a PostgresTestServer)."""
    server: PostgresTestServer = env.server
    return server.empty_database()


@pytest.fixture
def postgres_url(postgres_server: PostgresTestServer) -> str:
    """A fresh, empty, migrated database for one test (integration and end-to-end tests)."""
    return postgres_server.new_database()


def terminate_backends(url: str, application_name: str) -> int:
    """``pg_terminate_backend`` every connection of ``application_name`` to ``url``'s database (from
    another connection); returns how many were terminated."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return sum(1 for (done,) in rows if done)


def count_backends(url: str, application_name: str) -> int:
    """How many connections of ``application_name`` ``url``'s database has now."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0
