"""Process helpers for the end-to-end tests: real ``relay`` processes on a throwaway SQLite file.

- :func:`wait_until` waits for a condition with a deadline (never for time to pass);
- :class:`Cluster` owns one test's SQLite file, its environment, every process it started (killed,
  with all their descendants, by :meth:`Cluster.close`), and a :class:`relay.Relay` on the same file
  through which the test reads job state and enqueues jobs;
- :class:`Proc` is one started ``relay`` process whose stdout and stderr go to a log file; workers log
  JSON lines (``RELAY_LOG_FORMAT=json``), which :meth:`Proc.events` parses.

Tasks for ``relay worker --app e2e_app:relay`` are in :data:`APP_SOURCE`, written into the test's
directory by :meth:`Cluster.write_app`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from relay.app import Relay
from relay.settings import Settings
from relay.storage.params import ListParams, LogParams
from relay.types import Job, LogLine

T = TypeVar("T")

POLL_INTERVAL = 0.02  # seconds between two looks at a condition in wait_until
CLI_TIMEOUT = 30.0  # seconds any one `relay` command may take
EXIT_TIMEOUT = 20.0  # seconds a process told to stop may take to exit
READY_TIMEOUT = 20.0  # seconds a worker may take to start serving
KILL_TIMEOUT = 10.0  # seconds a SIGKILLed process may take to disappear
STEP_TIMEOUT = 10.0  # seconds one step of a test may take: a file appears, a process reacts to a signal

# Short intervals, so that recovery happens in about a second (DESIGN.md 1.3).
POLL = 0.05
REAPER_INTERVAL = 0.2
LEADER_TTL = 1.0
LEASE = 1.0  # the "lease" of the jobs these tests enqueue

APP_MODULE = "e2e_app"
APP = f"{APP_MODULE}:relay"
WORK_DIR_ENV = "E2E_WORK_DIR"

APP_SOURCE = '''\
"""Tasks of Relay's end-to-end tests (written here by tests/e2e/procs.py).

Each task appends its worker's pid to WORK/<name>.runs when it starts, and to WORK/<name>.done when
it returns, so a test can see that it started or ended, how often, and in which process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from relay import Relay

relay = Relay()
WORK = Path(os.environ["E2E_WORK_DIR"])
FILE_POLL = 0.01  # seconds between two looks for a release file
BLOCK_LIMIT = 60.0  # a blocked run gives up after this long, so nothing hangs forever


def _record(name: str, what: str) -> int:
    path = WORK / f"{name}.{what}"
    with path.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    return len(path.read_text().splitlines())


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + BLOCK_LIMIT
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(FILE_POLL)


@relay.task(name="e2e.block_first")
def block_first(name: str) -> dict[str, int]:
    """The first run blocks until WORK/<name>.release exists; every later run returns at once."""
    run = _record(name, "runs")
    if run == 1:
        _wait_for(WORK / f"{name}.release")
    _record(name, "done")
    return {"run": run, "pid": os.getpid()}


@relay.task(name="e2e.kill_own_worker")
def kill_own_worker(name: str) -> None:
    """Kills the worker process that runs it."""
    _record(name, "runs")
    os.kill(os.getpid(), signal.SIGKILL)
'''


# -- waiting ----------------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s.

    ``detail`` describes the situation in the failure message (the job, a worker's log...)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(POLL_INTERVAL)


# -- processes --------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants. Each is frozen (SIGSTOP) before its children are
    listed, so that none can start a new process, or be re-parented, in between."""
    frozen: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        kill_pid(current, signal.SIGSTOP)
        frozen.append(current)
        todo += [kid for kid in children(current) if kid not in frozen]
    for target in frozen:
        kill_pid(target, signal.SIGKILL)


class Proc:
    """One started process; its stdout and stderr go to ``log_path``."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s; its log:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            kill_tree(self.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(KILL_TIMEOUT)

    # -- its log ----------------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines, such as tracebacks, are skipped)."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def events(self, event: str | None = None, job_id: str | None = None) -> list[dict[str, Any]]:
        """Job events (claimed, completed, failed, dead, lease_lost, ...) from the JSON log."""
        return [
            r
            for r in self.records()
            if "event" in r
            and (event is None or r["event"] == event)
            and (job_id is None or r.get("job_id") == job_id)
        ]

    def messages(self, fragment: str) -> list[str]:
        return [r["message"] for r in self.records() if fragment in r.get("message", "")]

    def wait_for_event(
        self, event: str, job_id: str | None = None, timeout: float = STEP_TIMEOUT
    ) -> dict[str, Any]:
        found = wait_until(
            lambda: self.events(event, job_id),
            timeout,
            f"event {event!r} of job {job_id} in the log of {self.name}",
            self.log_tail,
        )
        return found[0]

    def wait_for_message(self, fragment: str, timeout: float = STEP_TIMEOUT) -> str:
        found = wait_until(
            lambda: self.messages(fragment),
            timeout,
            f"{fragment!r} in the log of {self.name}",
            self.log_tail,
        )
        return found[0]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for a worker to serve its queues (its first log line after opening storage)."""
        self.wait_for_message(" serving ", timeout)


# -- one test's world -------------------------------------------------------------------------------


class Cluster:
    """One test's SQLite file, environment and processes, and a Relay to read and enqueue with."""

    def __init__(self, work_dir: Path) -> None:
        self.dir = work_dir
        self.db_path = work_dir / "relay.db"
        self.url = f"sqlite:///{self.db_path}"
        self.procs: list[Proc] = []
        self.stray_groups: list[int] = []  # process groups of jobs' commands, killed at the end
        base = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        self.env: dict[str, str] = {
            **base,
            "RELAY_DATABASE_URL": self.url,
            "RELAY_GRPC_ADDR": "127.0.0.1:0",  # a server's gRPC on a free port, never a shared 50051
            "RELAY_POLL_INTERVAL": str(POLL),
            "RELAY_REAPER_INTERVAL": str(REAPER_INTERVAL),
            "RELAY_SCHEDULER_INTERVAL": str(REAPER_INTERVAL),
            "RELAY_LEADER_TTL": str(LEADER_TTL),
            "RELAY_CANCEL_GRACE": "1",
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_LEVEL": "debug",  # the claim events too: tests check what was (not) claimed
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(work_dir), base.get("PYTHONPATH")) if p),
            WORK_DIR_ENV: str(work_dir),
        }
        # Opening it creates the schema now, before any worker starts.
        self.relay = Relay(settings=Settings(database_url=self.url))
        self.relay.open()

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        for pgid in self.stray_groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.relay.close()

    # -- processes --------------------------------------------------------------------------------

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Proc:
        """Start ``relay ARGS...`` (as ``python -m relay``) in the work directory."""
        argv = [sys.executable, "-m", "relay", *args]
        proc = Proc(name, argv, {**self.env, **(env or {})}, self.dir, self.dir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def start_worker(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Proc:
        return self.start(name, "worker", *args, env=env)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one ``relay`` command to its end; with ``check``, a non-zero exit fails the test."""
        done = subprocess.run(
            [sys.executable, "-m", "relay", *args],
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"relay {' '.join(args)} exited with {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def write_app(self) -> str:
        """Write the tasks module into the work directory; returns the ``--app`` value."""
        (self.dir / f"{APP_MODULE}.py").write_text(APP_SOURCE)
        return APP

    def write_json(self, name: str, document: Any) -> Path:
        path = self.dir / name
        path.write_text(json.dumps(document, indent=2))
        return path

    # -- jobs -------------------------------------------------------------------------------------

    def enqueue(self, document: Mapping[str, Any]) -> str:
        return str(self.relay.enqueue(document).id)

    def job(self, job_id: str) -> Job:
        return self.relay.get_job(job_id)

    def jobs(self, limit: int = 1000) -> list[Job]:
        page = self.relay.call(self.relay.storage.job_list(ListParams(limit=limit)))
        return list(page.jobs)

    def children_of(self, job_id: str) -> list[Job]:
        """The jobs chained to ``job_id``'s outcome (on_success / on_failure)."""
        return [job for job in self.jobs() if job.parent_id == job_id]

    def logs(self, job_id: str) -> list[LogLine]:
        return list(self.relay.call(self.relay.storage.job_logs(LogParams(job_id))))

    def wait_job(
        self,
        job_id: str,
        check: Callable[[Job], bool],
        timeout: float,
        what: str,
        procs: Sequence[Proc] = (),
    ) -> Job:
        """Wait until ``check(job)`` holds; a failure shows the job and the logs of ``procs``."""

        def detail() -> str:
            logs = "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in procs)
            return f"job now: {self.job(job_id)}\n{logs}"

        def ready() -> Job | None:
            job = self.job(job_id)
            return job if check(job) else None

        return wait_until(ready, timeout, f"job {job_id}: {what}", detail)

    # -- files the tasks of APP_SOURCE write and read ------------------------------------------------

    def runs(self, name: str, what: str = "runs") -> list[int]:
        """The pids of the worker processes that started (``what="runs"``) or ended (``"done"``) a
        run of the task named ``name``, in order."""
        path = self.dir / f"{name}.{what}"
        if not path.exists():
            return []
        return [int(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_runs(
        self, name: str, count: int, timeout: float = STEP_TIMEOUT, procs: Sequence[Proc] = ()
    ) -> list[int]:
        """Wait until the task named ``name`` has started ``count`` times; returns its runs' pids."""
        return wait_until(
            lambda: self.runs(name) if len(self.runs(name)) >= count else None,
            timeout,
            f"run {count} of {name!r} to start",
            lambda: "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in procs),
        )

    def release(self, name: str) -> None:
        """Let the blocked first run of ``e2e.block_first(name)`` return."""
        (self.dir / f"{name}.release").touch()

    # -- SQLite ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def write_lock(self, timeout: float = STEP_TIMEOUT) -> Iterator[None]:
        """Hold SQLite's write lock on the file for the block: no process can write meanwhile (their
        writes wait, and are retried; none fails in the seconds a test holds it)."""
        conn = sqlite3.connect(self.db_path, timeout=timeout, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()

    def write_lock_free(self, timeout: float = 0.5) -> bool:
        """Whether a write transaction can start within ``timeout`` s (no process holds the lock
        for longer), checked with a connection of our own."""
        conn = sqlite3.connect(self.db_path, timeout=timeout, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
