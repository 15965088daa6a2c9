"""spawn against real processes: what the child gets (session, stdin, signals, descriptors, PATH, env),
and how it is waited for (a pidfd, no thread, no zombie; a thread where no pidfd can be had).

Both ways of starting a child are exercised: ``posix_spawn`` (no working directory) and
``subprocess.Popen`` (a working directory). No sleeping to wait: a child is awaited through its
``exited`` future, and conditions are polled against a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.runtime.spawn import LOST_EXIT_CODE, Child, spawn

DEADLINE = 5.0  # seconds a condition gets to become true; only failures wait that long

# The two ways a child is started: posix_spawn, and Popen (which spawn uses when there is a cwd).
STARTS = {"posix_spawn": None, "popen": "/"}


@pytest.fixture(params=list(STARTS))
def cwd(request: pytest.FixtureRequest) -> str | None:
    value: str | None = STARTS[request.param]
    return value


class Output:
    """A pipe for the child's stdout and stderr, read once the child is done."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def text(self) -> str:
        chunks = []
        while chunk := os.read(self.read_fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1


@pytest.fixture
def output() -> Iterator[Output]:
    out = Output()
    try:
        yield out
    finally:
        out.close()


def start(
    argv: list[str], out: Output, *, cwd: str | None = None, env: dict[str, str] | None = None
) -> Child:
    child = spawn(argv, env=env or {}, cwd=cwd, stdout=out.write_fd, stderr=out.write_fd)
    os.close(out.write_fd)  # the child has its own copy: EOF comes when it (and its children) are gone
    out.write_fd = -1
    return child


async def run(
    argv: list[str], out: Output, *, cwd: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Start argv, wait for its exit; its exit code and what it wrote."""
    child = start(argv, out, cwd=cwd, env=env)
    code = await asyncio.wait_for(asyncio.shield(child.exited), DEADLINE)
    return code, out.text()


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def wait_until(name: str, check: object) -> None:
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not check():
        assert loop.time() < deadline, f"still not {name} after {DEADLINE}s"
        await asyncio.sleep(0.01)  # a polling interval, not a wait for something to happen


def reaped(pid: int) -> bool:
    """Whether pid is no child of ours any more: reaped, so no zombie is left behind."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


# -- what the child gets -------------------------------------------------------------------------------


async def test_the_child_leads_a_new_session_and_process_group(cwd: str | None, output: Output) -> None:
    child = start(python("import os; print(os.getsid(0), os.getpgid(0))"), output, cwd=cwd)
    code = await asyncio.wait_for(asyncio.shield(child.exited), DEADLINE)
    assert code == 0
    assert output.text().split() == [str(child.pid), str(child.pid)]
    assert os.getsid(0) != child.pid


async def test_stdin_is_dev_null(cwd: str | None, output: Output) -> None:
    code, text = await run(["readlink", "/proc/self/fd/0"], output, cwd=cwd)
    assert (code, text) == (0, "/dev/null\n")


async def test_signals_python_ignores_are_reset_to_default(cwd: str | None, output: Output) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # what the child would otherwise inherit
    code, text = await run(["grep", "^SigIgn:", "/proc/self/status"], output, cwd=cwd)
    assert code == 0
    ignored = int(text.split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} is still ignored in the child"


async def test_descriptors_of_the_worker_are_not_inherited(
    cwd: str | None, output: Output, tmp_path: Path
) -> None:
    fd = os.open(tmp_path / "worker-file", os.O_CREAT | os.O_WRONLY)  # non-inheritable, as Python opens all
    try:
        script = f"if [ -e /proc/self/fd/{fd} ]; then echo inherited; else echo closed; fi"
        code, text = await run(["/bin/sh", "-c", script], output, cwd=cwd)
    finally:
        os.close(fd)
    assert (code, text) == (0, "closed\n")


async def test_env_is_added_to_the_workers_and_changes_to_it_are_seen(
    cwd: str | None, output: Output, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = 'printf "%s|%s|%s" "$RELAY_SPAWN_WORKER" "$RELAY_SPAWN_JOB" "${RELAY_SPAWN_GONE-unset}"'
    monkeypatch.setenv("RELAY_SPAWN_WORKER", "first")
    monkeypatch.setenv("RELAY_SPAWN_GONE", "here")
    code, text = await run(["/bin/sh", "-c", script], output, cwd=cwd)
    assert (code, text) == (0, "first||here")

    # The worker's environment changes between two spawns: the second child sees it as it is now.
    monkeypatch.setenv("RELAY_SPAWN_WORKER", "second")
    monkeypatch.delenv("RELAY_SPAWN_GONE")
    second = Output()
    try:
        code, text = await run(["/bin/sh", "-c", script], second, cwd=cwd, env={"RELAY_SPAWN_JOB": "job"})
    finally:
        second.close()
    assert (code, text) == (0, "second|job|unset")


async def test_the_program_is_looked_up_in_the_childs_path(
    cwd: str | None, output: Output, tmp_path: Path
) -> None:
    program = tmp_path / "relay-spawn-test-program"
    program.write_text("#!/bin/sh\necho found me\n")
    program.chmod(0o755)
    code, text = await run([program.name], output, cwd=cwd, env={"PATH": f"/nonexistent:{tmp_path}"})
    assert (code, text) == (0, "found me\n")


async def test_a_program_found_only_without_execute_permission_is_a_permission_error(
    cwd: str | None, tmp_path: Path
) -> None:
    program = tmp_path / "relay-spawn-not-executable"
    program.write_text("#!/bin/sh\necho should not run\n")
    program.chmod(stat.S_IRUSR | stat.S_IWUSR)
    out = Output()
    try:
        with pytest.raises(PermissionError):
            spawn(
                [program.name], env={"PATH": str(tmp_path)}, cwd=cwd, stdout=out.write_fd, stderr=out.write_fd
            )
    finally:
        out.close()


async def test_a_missing_program_is_a_file_not_found_error_naming_it(cwd: str | None) -> None:
    out = Output()
    try:
        with pytest.raises(FileNotFoundError) as info:
            spawn(["relay-spawn-no-such-program"], env={}, cwd=cwd, stdout=out.write_fd, stderr=out.write_fd)
    finally:
        out.close()
    assert info.value.errno == errno.ENOENT
    assert "relay-spawn-no-such-program" in str(info.value.filename)


@pytest.fixture
def real_tmp_path(tmp_path: Path) -> Path:
    """tmp_path with symlinks resolved, as ``pwd -P`` prints it."""
    return tmp_path.resolve()


async def test_the_working_directory_is_applied(output: Output, real_tmp_path: Path) -> None:
    code, text = await run(["pwd", "-P"], output, cwd=str(real_tmp_path))
    assert (code, text) == (0, f"{real_tmp_path}\n")


# -- how it is waited for ------------------------------------------------------------------------------


async def test_children_are_watched_without_a_thread_each_and_leave_no_zombie(cwd: str | None) -> None:
    threads_before = threading.active_count()
    outputs = [Output() for _ in range(10)]
    try:
        children = [start(["sleep", "300"], out, cwd=cwd) for out in outputs]
        assert threading.active_count() == threads_before  # asyncio's watcher would start 10 threads
        for child in children:
            os.killpg(child.pid, signal.SIGKILL)
        codes = await asyncio.wait_for(
            asyncio.gather(*(asyncio.shield(c.exited) for c in children)), DEADLINE
        )
    finally:
        for out in outputs:
            out.close()
    assert codes == [-signal.SIGKILL] * len(children)
    assert all(child.returncode == -signal.SIGKILL for child in children)
    assert all(reaped(child.pid) for child in children)


async def test_exit_codes_and_signals_are_reported_as_subprocess_does(output: Output) -> None:
    code, _ = await run(["/bin/sh", "-c", "exit 7"], output)
    assert code == 7
    second = Output()
    try:
        code, _ = await run(["/bin/sh", "-c", "kill -TERM $$"], second)
    finally:
        second.close()
    assert code == -signal.SIGTERM


async def test_without_a_pidfd_a_thread_waits_for_the_child(
    cwd: str | None, output: Output, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "pidfd_open is not implemented (Linux < 5.3)")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    child = start(["sleep", "300"], output, cwd=cwd)
    waiter = f"relay-waitpid-{child.pid}"
    assert any(t.name == waiter for t in threading.enumerate())
    os.killpg(child.pid, signal.SIGKILL)
    assert await asyncio.wait_for(asyncio.shield(child.exited), DEADLINE) == -signal.SIGKILL
    assert reaped(child.pid)
    await wait_until(f"{waiter} gone", lambda: all(t.name != waiter for t in threading.enumerate()))


async def test_a_child_reaped_by_someone_else_reports_the_lost_status(
    output: Output, caplog: pytest.LogCaptureFixture
) -> None:
    child = start(["true"], output)
    # Some other code of the worker's reaps it first (a waitpid(-1), say). Blocking on purpose: the loop
    # must not run, and reap the child through its pidfd, before this does.
    os.waitpid(child.pid, 0)  # noqa: ASYNC222
    with caplog.at_level(logging.WARNING, logger="relay.worker"):
        code = await asyncio.wait_for(asyncio.shield(child.exited), DEADLINE)
    assert code == LOST_EXIT_CODE
    assert f"child process {child.pid} was reaped elsewhere" in caplog.text
