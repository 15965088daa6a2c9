"""End-to-end fixtures: run the real ``relay`` command as subprocesses, on a SQLite file under tmp_path.

- ``relay_cli(*args, env=..., input=...)`` runs one command to completion and returns the
  ``CompletedProcess`` (text mode, stdout and stderr captured, never raises on a non-zero exit);
  ``relay_cli.json(*args)`` runs it with ``--json``, checks the exit code and returns the parsed output;
  ``relay_cli.start(*args)`` starts a long-running one (``worker``, ``up``) and stops it at teardown.
- Every call gets ``relay_cli.env``: the environment of this process without any ``RELAY_*`` variable,
  plus ``RELAY_DATABASE_URL`` = ``database_url`` (``sqlite:///<tmp_path>/relay.db``). ``env=`` adds to it.
- ``wait_until(condition, timeout=...)`` polls a condition against a deadline: tests never sleep.

Every subprocess call has a timeout, so that a hung command fails its test instead of the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

T = TypeVar("T")

COMMAND_TIMEOUT = 30.0  # seconds any one relay command may take
STOP_TIMEOUT = 15.0  # seconds a started process gets to exit after SIGTERM, at teardown


def relay_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m relay``."""
    script = Path(sys.executable).with_name("relay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "relay"]


@dataclass
class RelayProcess:
    """A ``relay`` command left running; its output goes to files (a full pipe would block it)."""

    args: Sequence[str]
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def send_signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = COMMAND_TIMEOUT) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=timeout)


@dataclass
class RelayCLI:
    cwd: Path
    env: dict[str, str]
    started: list[RelayProcess] = field(default_factory=list)

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*relay_command(), *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            input=input,
            # Without input, stdin is /dev/null: a command must never wait for a person.
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, **kwargs: Any) -> Any:
        """Run ``relay <args> --json``; fail the test unless it exits 0; the parsed output."""
        result = self(*args, "--json", **kwargs)
        assert result.returncode == 0, f"relay {' '.join(args)} failed: {result.stderr}"
        return orjson.loads(result.stdout)

    def start(self, *args: str, env: Mapping[str, str] | None = None) -> RelayProcess:
        n = len(self.started)
        out, err = self.cwd / f"relay-{n}.stdout", self.cwd / f"relay-{n}.stderr"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [*relay_command(), *args],
                cwd=self.cwd,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        handle = RelayProcess(args, process, out, err)
        self.started.append(handle)
        return handle


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'relay.db'}"


@pytest.fixture
def relay_cli(tmp_path: Path, database_url: str) -> Iterator[RelayCLI]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["RELAY_DATABASE_URL"] = database_url
    env["RELAY_GRPC_ADDR"] = "127.0.0.1:0"  # servers' gRPC on a free port: never two tests on 50051
    cli = RelayCLI(cwd=tmp_path, env=env)
    yield cli
    for process in cli.started:
        process.stop()


def _wait_until(condition: Callable[[], T], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy (returned), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout}s: {getattr(condition, '__name__', condition)}")
        time.sleep(interval)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    return _wait_until
