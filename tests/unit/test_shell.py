"""run_shell against real processes: output, exit codes, timeouts, cancellation, process groups.

No mocks and no sleeping to wait: ``sleep`` commands only serve as processes to kill, and every wait for
a condition ("this pid is gone") polls it against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from relay.errors import RelayError
from relay.runtime.shell import MAX_LINE_BYTES, ShellCommand, ShellLaunchError, ShellOutcome, run_shell

DEADLINE = 5.0  # seconds a condition gets to become true; generous, as only failures wait that long


class Collector:
    """A sink that keeps every line per stream, and can set an event when it sees a given line."""

    def __init__(self, trigger: str | None = None) -> None:
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.trigger = trigger
        self.triggered = asyncio.Event()
        self.triggered_at: float | None = None

    async def __call__(self, stream: str, text: str) -> None:
        self.lines[stream].append(text)
        if text == self.trigger and not self.triggered.is_set():
            self.triggered_at = asyncio.get_running_loop().time()
            self.triggered.set()

    @property
    def stdout(self) -> list[str]:
        return self.lines["stdout"]

    @property
    def stderr(self) -> list[str]:
        return self.lines["stderr"]


def sh(script: str, *args: str, timeout: float | None = None) -> ShellCommand:
    """``/bin/sh -c script`` with ``$1``... set to ``args``."""
    return ShellCommand(["/bin/sh", "-c", script, "sh", *args], timeout=timeout)


def alive(pid: int) -> bool:
    """Whether pid runs. A zombie counts as gone: it runs nothing, it only waits for its parent."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process happens to be its parent (or subreaper)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def is_our_child(pid: int) -> bool:
    """Whether pid is still a child of this process: running, or a zombie that nobody reaped."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


async def wait_until(condition_name: str, check: object) -> None:
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not check():
        assert loop.time() < deadline, f"still not {condition_name} after {DEADLINE}s"
        await asyncio.sleep(0.01)  # a polling interval, not a wait for something to happen


async def assert_dies(pid: int) -> None:
    await wait_until(f"dead: pid {pid}", lambda: not alive(pid))


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- output and exit codes ---------------------------------------------------------------------------


async def test_lines_captured_in_order_per_stream() -> None:
    sink = Collector()
    script = "echo o1; echo e1 >&2; echo o2; echo e2 >&2; printf 'o3 without newline'"
    outcome = await run_shell(sh(script, timeout=30.0), sink)
    assert sink.stdout == ["o1", "o2", "o3 without newline"]
    assert sink.stderr == ["e1", "e2"]
    assert outcome == ShellOutcome(
        exit_code=0,
        timed_out=False,
        cancelled=False,
        stderr_tail="e1\ne2\n",
        output_bytes=len("o1\ne1\no2\ne2\no3 without newline"),
        truncated=False,
        last_line="o3 without newline",
    )


async def test_non_zero_exit_code_reported_with_stderr_tail() -> None:
    outcome = await run_shell(sh("echo working; echo 'boom: disk full' >&2; exit 3"), Collector())
    assert outcome.exit_code == 3
    assert outcome.stderr_tail == "boom: disk full\n"
    assert not outcome.timed_out
    assert not outcome.cancelled


async def test_stderr_tail_keeps_only_the_last_4_kib() -> None:
    code = "import sys; sys.stderr.write('é' * 10000 + 'END\\n'); sys.exit(2)"
    outcome = await run_shell(ShellCommand([sys.executable, "-c", code]), Collector())
    assert outcome.exit_code == 2
    assert outcome.stderr_tail.endswith("éééEND\n")
    assert len(outcome.stderr_tail.encode()) <= 4096
    assert "\ufffd" not in outcome.stderr_tail  # the cut inside a character was dropped, not replaced


async def test_argv_is_not_interpreted_by_a_shell() -> None:
    sink = Collector()
    outcome = await run_shell(ShellCommand(["echo", "$HOME", ";", "ls", "*", "`id`"]), sink)
    assert outcome.exit_code == 0
    assert sink.stdout == ["$HOME ; ls * `id`"]


async def test_an_explicit_sh_c_argv_runs_through_the_shell() -> None:
    sink = Collector()
    outcome = await run_shell(ShellCommand(["/bin/sh", "-c", "echo a && echo b"]), sink)
    assert outcome.exit_code == 0
    assert sink.stdout == ["a", "b"]


@pytest.fixture
def real_tmp_path(tmp_path: Path) -> Path:
    """tmp_path with symlinks resolved, as ``pwd -P`` prints it."""
    return tmp_path.resolve()


async def test_env_is_added_to_the_workers_and_cwd_applied(real_tmp_path: Path) -> None:
    sink = Collector()
    cmd = ShellCommand(
        ["/bin/sh", "-c", 'printf "%s\\n" "$RELAY_TEST_VALUE" "$PATH"; pwd -P'],
        env={"RELAY_TEST_VALUE": "hello world"},
        cwd=str(real_tmp_path),
    )
    outcome = await run_shell(cmd, sink)
    assert outcome.exit_code == 0
    assert sink.stdout == ["hello world", os.environ["PATH"], str(real_tmp_path)]


async def test_a_long_line_is_cut_into_bounded_chunks_without_breaking_characters() -> None:
    code = (
        "import sys; w = sys.stdout.buffer.write;"
        "w(b'x' * 65535 + 'é'.encode() + b'y' * 70000 + b'\\n'); w(b'last')"
    )
    sink = Collector()
    outcome = await run_shell(ShellCommand([sys.executable, "-c", code]), sink)
    assert outcome.exit_code == 0
    # Chunks of MAX_LINE_BYTES: the first ends inside 'é', whose first byte the decoder carries over.
    assert MAX_LINE_BYTES == 65536
    assert sink.stdout == ["x" * 65535, "é" + "y" * 65535, "y" * 4465, "last"]


async def test_output_past_the_cap_is_dropped_with_one_notice_and_the_child_completes() -> None:
    sink = Collector()
    outcome = await run_shell(sh("yes | head -c 5000000"), sink, output_cap=10_000)
    assert outcome.exit_code == 0  # it was never blocked on a full pipe
    assert outcome.truncated
    assert outcome.output_bytes == 5_000_000
    assert sink.stdout[:-1] == ["y"] * 5000  # 5000 lines of "y\n" fill the cap exactly
    assert sink.stdout[-1] == "[relay: output truncated after 10000 bytes]"
    assert sink.stderr == []


# -- stopping: timeout, cancel, leftovers --------------------------------------------------------------


async def test_timeout_kills_the_whole_group_grandchildren_included(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    cmd = sh('sleep 300 & echo $! > "$1"; sleep 300', str(pidfile), timeout=1.0)
    outcome = await run_shell(cmd, Collector(), kill_grace=DEADLINE)
    assert outcome.timed_out
    assert not outcome.cancelled
    assert outcome.exit_code == -signal.SIGTERM
    await assert_dies(read_pid(pidfile))


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace() -> None:
    sink = Collector(trigger="ready")
    outcome = await run_shell(
        sh("trap '' TERM; echo ready; sleep 300"), sink, cancel=sink.triggered, kill_grace=0.3
    )
    ended = asyncio.get_running_loop().time()
    assert outcome.cancelled
    assert outcome.exit_code == -signal.SIGKILL
    assert sink.triggered_at is not None
    assert 0.25 <= ended - sink.triggered_at < DEADLINE


async def test_cancel_event_terminates_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    sink = Collector(trigger="ready")
    cmd = sh('sleep 300 & echo $! > "$1"; echo ready; wait', str(pidfile))
    outcome = await run_shell(cmd, sink, cancel=sink.triggered, kill_grace=DEADLINE)
    assert outcome.cancelled
    assert not outcome.timed_out
    assert outcome.exit_code == -signal.SIGTERM
    await assert_dies(read_pid(pidfile))


async def test_cancelling_the_caller_kills_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    sink = Collector(trigger="ready")
    cmd = sh('sleep 300 & echo $! > "$1"; echo ready; wait', str(pidfile))
    run = asyncio.create_task(run_shell(cmd, sink))
    await sink.triggered.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await assert_dies(read_pid(pidfile))


async def test_a_cancel_set_before_the_start_runs_nothing(tmp_path: Path) -> None:
    cancel = asyncio.Event()
    cancel.set()
    outcome = await run_shell(ShellCommand(["touch", str(tmp_path / "ran")]), Collector(), cancel=cancel)
    assert outcome.cancelled
    assert outcome.exit_code is None
    assert not (tmp_path / "ran").exists()


async def test_a_background_child_left_by_the_leader_is_killed_promptly(tmp_path: Path) -> None:
    pidfile = tmp_path / "orphan.pid"
    loop = asyncio.get_running_loop()
    started = loop.time()
    # A long drain_timeout: returning quickly proves the pipes closed because the child was killed.
    outcome = await run_shell(sh('sleep 300 & echo $! > "$1"', str(pidfile)), Collector(), drain_timeout=30.0)
    assert outcome.exit_code == 0
    assert not outcome.timed_out
    assert loop.time() - started < DEADLINE
    await assert_dies(read_pid(pidfile))


async def test_pipes_held_by_a_process_outside_the_group_are_abandoned(tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"
    # The escaped process leaves the group (setsid) but keeps our stdout and stderr open.
    script = r"""setsid sh -c 'echo $$ > "$1"; exec sleep 300' escaped "$1" &
                 while [ ! -s "$1" ]; do sleep 0.01; done; echo leader done"""
    fds_before = open_fds()
    sink = Collector()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        outcome = await run_shell(sh(script, str(pidfile)), sink, drain_timeout=0.2)
        assert loop.time() - started < DEADLINE
        assert outcome.exit_code == 0
        assert sink.stdout == ["leader done"]
        assert open_fds() == fds_before  # the abandoned pipes were closed on our side
    finally:
        if pidfile.exists() and pidfile.read_text().strip():
            os.kill(read_pid(pidfile), signal.SIGKILL)
            await assert_dies(read_pid(pidfile))


async def test_a_failing_sink_kills_the_group_and_propagates(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"

    async def broken_sink(stream: str, text: str) -> None:
        raise RuntimeError("log storage is gone")

    cmd = sh('sleep 300 & echo $! > "$1"; echo first; wait', str(pidfile))
    with pytest.raises(RuntimeError, match="log storage is gone"):
        await run_shell(cmd, broken_sink)
    await assert_dies(read_pid(pidfile))


# -- launch errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["/nonexistent/relay-test-program", "relay-test-no-such-program"])
async def test_a_missing_executable_raises_shell_launch_error(program: str) -> None:
    fds_before = open_fds()
    with pytest.raises(ShellLaunchError, match="no such executable") as info:
        await run_shell(ShellCommand([program, "--flag"]), Collector())
    assert isinstance(info.value, RelayError)
    assert program in str(info.value)
    assert open_fds() == fds_before


async def test_a_missing_working_directory_raises_shell_launch_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ShellLaunchError, match=r"working directory .* does not exist"):
        await run_shell(ShellCommand(["true"], cwd=missing), Collector())


async def test_an_empty_argv_or_a_bad_env_raises_shell_launch_error() -> None:
    with pytest.raises(ShellLaunchError, match="argv is empty"):
        await run_shell(ShellCommand([]), Collector())
    with pytest.raises(ShellLaunchError, match="cannot start 'true'"):
        await run_shell(ShellCommand(["true"], env={"BAD=NAME": "x"}), Collector())


async def test_a_nul_byte_in_argv_raises_shell_launch_error() -> None:
    with pytest.raises(ShellLaunchError, match="cannot start 'echo'"):
        await run_shell(ShellCommand(["echo", "a\0b"]), Collector())


async def test_a_program_without_execute_permission_raises_shell_launch_error(tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho should not run\n")
    with pytest.raises(ShellLaunchError, match="permission denied"):
        await run_shell(ShellCommand([str(script)]), Collector())


# -- the spawn path: with and without a working directory ----------------------------------------------


@pytest.mark.parametrize("with_cwd", [False, True], ids=["posix_spawn", "popen"])
async def test_a_timeout_kills_the_group_however_the_command_was_started(
    tmp_path: Path, with_cwd: bool
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = 'sleep 300 & echo $! > "$1"; sleep 300'
    cmd = ShellCommand(
        ["/bin/sh", "-c", script, "sh", str(pidfile)],
        cwd=str(tmp_path) if with_cwd else None,
        timeout=0.5,
    )
    outcome = await run_shell(cmd, Collector(), kill_grace=DEADLINE)
    assert outcome.timed_out
    assert outcome.exit_code == -signal.SIGTERM
    await assert_dies(read_pid(pidfile))


async def test_many_runs_leave_no_descriptor_thread_or_zombie_behind() -> None:
    fds_before = open_fds()
    threads_before = threading.active_count()
    pids: list[int] = []

    async def sink(stream: str, text: str) -> None:
        pids.append(int(text))

    outcomes = await asyncio.gather(*(run_shell(sh("echo $$"), sink) for _ in range(20)))
    assert [o.exit_code for o in outcomes] == [0] * 20
    assert open_fds() == fds_before
    assert threading.active_count() == threads_before
    assert not [pid for pid in pids if is_our_child(pid)]  # each was reaped: no zombie is left
