"""Running a shell job's command as a subprocess that leads its own process group.

How one run goes (``run_shell``):

1. two pipes are made (stdout, stderr) and the argv is started by :func:`relay.runtime.spawn.spawn` in a
   new session, so the child leads a new process group whose id is its pid; nothing goes through a shell
   unless the argv itself is ``["/bin/sh", "-c", ...]``;
2. one pump task per pipe reads it concurrently, cuts it into lines (a line longer than
   ``MAX_LINE_BYTES`` is cut into chunks) and passes each one, in order, to the caller's sink; past
   ``output_cap`` bytes only a notice is passed, but the pumps keep draining so the child never blocks;
3. the run ends when the leader exits, the timeout passes or ``cancel`` is set; the last two send
   SIGTERM to the group, then SIGKILL after ``kill_grace``;
4. however it ended, the whole group gets SIGKILL (nothing of the command outlives its attempt while
   the worker lives: see below), and the pumps get ``drain_timeout`` to see their pipes close: a process
   that left the group (``setsid``) may hold them open forever, so they are then abandoned.

A worker that is itself SIGKILLed cannot kill anything: its running command lives on, re-parented to
init. Asking the kernel to signal the child when its parent dies (``PR_SET_PDEATHSIG``) must be done by
the child itself, between its start and its ``exec``, and ``posix_spawn`` has no hook for that. A
``preexec_fn`` has one, but forces a full ``fork`` of the worker (measured in an 80 MB worker: 6 ms a
spawn, 2 ms of it the worker's CPU, against 0.7 ms and 0.1 ms); an extra ``exec`` of ``setpriv
--pdeathsig`` adds a second spawn (+1 ms). Too dear for every shell job, so Relay does neither, and says
so in docs/jobs.md. (What would be cheap: one watchdog process per worker, told each group's id through
a pipe, that kills the groups still listed when the pipe reaches EOF, i.e. when the worker died.)

The pipes are plain descriptors read from the event loop, not asyncio transports: that is cheaper for
short commands, and a pipe still held by such an escaped process is closed on our side by one ``close``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from relay.errors import RelayError
from relay.runtime.spawn import Child, spawn

#: Receives each line (without its newline) or chunk of output: ``(stream, text)``, stream being
#: ``"stdout"`` or ``"stderr"``. Awaited in order per stream; a slow sink slows the command down.
OutputSink = Callable[[str, str], Awaitable[None]]

MAX_LINE_BYTES = 64 * 1024  # a longer line is passed on in chunks of this size, so memory stays bounded
READ_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 4 * 1024
STDOUT_TAIL_BYTES = 4 * 1024  # what is kept of stdout to find its last line: a step's output
STREAMS = ("stdout", "stderr")


class ShellLaunchError(RelayError):
    """The command could not be started: missing executable, missing working directory, bad env..."""

    code = "shell_launch"


@dataclass(frozen=True, slots=True)
class ShellCommand:
    """A command to run. ``env`` is added to the worker's environment, it does not replace it."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float | None = None  # seconds; the whole process group is killed when it passes


@dataclass(frozen=True, slots=True)
class ShellOutcome:
    """How a run ended.

    ``exit_code`` is the leader's return code as subprocess reports it (negative: killed by that signal),
    or None when the command was never started (cancelled before) or not seen to exit.
    """

    exit_code: int | None
    timed_out: bool
    cancelled: bool
    stderr_tail: str  # the last STDERR_TAIL_BYTES of stderr, past the cap included
    output_bytes: int  # every byte seen on stdout and stderr, past the cap included
    truncated: bool  # output past the cap was not passed to the sink
    last_line: str = ""  # the last non-blank line of stdout (within its last STDOUT_TAIL_BYTES)


class _Stop(Enum):
    TIMEOUT = "timeout"
    CANCEL = "cancel"


async def run_shell(
    cmd: ShellCommand,
    sink: OutputSink,
    *,
    cancel: asyncio.Event | None = None,
    output_cap: int = 1_000_000,
    kill_grace: float = 5.0,
    drain_timeout: float = 1.0,
) -> ShellOutcome:
    """Run ``cmd`` to its end, passing its output to ``sink``; see the module docstring.

    Raises :class:`ShellLaunchError` when the command cannot be started; an exception raised by ``sink``
    kills the process group and propagates. Example::

        outcome = await run_shell(ShellCommand(["make", "test"], timeout=60.0), sink)
        ok = outcome.exit_code == 0
    """
    if cancel is not None and cancel.is_set():
        # Never started: no process to kill, nothing to report but the cancellation.
        return ShellOutcome(
            None, timed_out=False, cancelled=True, stderr_tail="", output_bytes=0, truncated=False
        )
    if not cmd.argv:
        raise ShellLaunchError("a shell command needs at least a program to run (argv is empty)")
    pipes: list[_Pipe] = []
    try:
        for stream in STREAMS:
            pipes.append(_Pipe(stream))
        child = _spawn(cmd, pipes)
        output = _Output(sink, output_cap)
        stop = await _supervise(child, pipes, output, cmd.timeout, cancel, kill_grace, drain_timeout)
    finally:
        for pipe in pipes:
            pipe.close()
    return output.outcome(child.returncode, stop)


# -- starting --------------------------------------------------------------------------------------


class _Pipe:
    """One output pipe: the child gets the write end; we read the other, non-blocking, from the loop."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        # Both ends close-on-exec: the child gets write_fd through dup2 only. Only our end is made
        # non-blocking; the child's must block when the pipe is full.
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._watched = False  # whether the loop's selector has read_fd

    def close_write_end(self) -> None:
        # Our copy of the write end must go once the child has its own, or EOF would never come.
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    async def read(self) -> bytes:
        """The next bytes the child wrote; b"" at EOF, or once our end was closed."""
        loop = asyncio.get_running_loop()
        while self.read_fd >= 0:
            try:
                return os.read(self.read_fd, READ_BYTES)
            except BlockingIOError:
                pass
            readable = loop.create_future()
            loop.add_reader(self.read_fd, _set_done, readable)
            self._watched = True
            try:
                await readable
            finally:
                self._unwatch(loop)
        return b""

    def close(self) -> None:
        """Close both our ends: this abandons a pipe that a process outside the group still holds."""
        self.close_write_end()
        if self.read_fd >= 0:
            # A pump cancelled but not yet resumed still has it in the selector: take it out before the
            # number can be reused, and the pump's own cleanup then finds nothing to do.
            self._unwatch(asyncio.get_running_loop())
            os.close(self.read_fd)
            self.read_fd = -1

    def _unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._watched:
            loop.remove_reader(self.read_fd)
            self._watched = False


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():  # readable again before its pump resumed, or the pump was cancelled
        future.set_result(None)


def _spawn(cmd: ShellCommand, pipes: list[_Pipe]) -> Child:
    try:
        # A new session: the child leads its own group, so one killpg reaches all it starts.
        return spawn(
            cmd.argv,
            env=cmd.env,
            cwd=cmd.cwd,
            stdout=pipes[0].write_fd,
            stderr=pipes[1].write_fd,
        )
    # TypeError / ValueError: a non-string or NUL-containing argv item, env entry or cwd.
    except (OSError, ValueError, TypeError) as exc:
        raise ShellLaunchError(_launch_message(cmd, exc)) from exc
    finally:
        for pipe in pipes:
            pipe.close_write_end()


def _launch_message(cmd: ShellCommand, exc: Exception) -> str:
    program = cmd.argv[0]
    # spawn, like subprocess, names the cwd as the failing file when chdir failed, the program (or the
    # path it was found at) when exec did.
    if isinstance(exc, OSError) and cmd.cwd is not None and exc.filename == cmd.cwd:
        if isinstance(exc, FileNotFoundError):
            return f"cannot start {program!r}: working directory {cmd.cwd!r} does not exist"
        return f"cannot start {program!r} in working directory {cmd.cwd!r}: {exc.strerror}"
    if isinstance(exc, FileNotFoundError):
        return f"cannot start {program!r}: no such executable"
    if isinstance(exc, PermissionError):
        return f"cannot start {program!r}: permission denied"
    return f"cannot start {program!r}: {exc}"


# -- supervising -----------------------------------------------------------------------------------


async def _supervise(
    child: Child,
    pipes: list[_Pipe],
    output: _Output,
    timeout: float | None,
    cancel: asyncio.Event | None,
    kill_grace: float,
    drain_timeout: float,
) -> _Stop | None:
    """Wait for the run to end, stopping it on timeout or cancel; never leave its group behind."""
    pumps = [asyncio.create_task(_pump(pipe, output)) for pipe in pipes]
    try:
        stop = await _wait_for_end(child, pumps, timeout, cancel)
        if stop is not None:
            await _terminate(child, kill_grace)
    finally:
        # Whatever ended the run (the leader's exit included, or our own cancellation), what is left of
        # its group would run on unwatched and hold our pipes: kill it.
        _signal_group(child.pid, signal.SIGKILL)
        await _reap(child, drain_timeout)
        sink_error = await _drain(pumps, drain_timeout)
    if sink_error is not None:
        raise sink_error
    return stop


async def _wait_for_end(
    child: Child,
    pumps: list[asyncio.Task[None]],
    timeout: float | None,
    cancel: asyncio.Event | None,
) -> _Stop | None:
    """None once the leader exited (which wins a tie), else why the run must be stopped.

    One waiter woken by callbacks, rather than rounds of ``asyncio.wait``: a pump that reaches EOF does
    not wake us (a child may close stdout early and run on), and no round is repeated for it.
    """
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    def pump_ended(pump: asyncio.Task[None]) -> None:
        # A failing sink must not leave its pipe undrained until the timeout: stop the run.
        if pump.cancelled() or pump.exception() is not None:
            wake()

    # Without a cancel event, a future that never completes stands in for it.
    cancelled = asyncio.ensure_future(cancel.wait()) if cancel is not None else loop.create_future()
    for future in (child.exited, cancelled):
        future.add_done_callback(wake)
    for pump in pumps:
        pump.add_done_callback(pump_ended)
    timer = loop.call_later(timeout, wake) if timeout is not None else None
    try:
        await woken
    finally:
        child.exited.remove_done_callback(wake)
        cancelled.cancel()
        if timer is not None:
            timer.cancel()
        for pump in pumps:
            pump.remove_done_callback(pump_ended)
    return _why_woken(child, cancelled, pumps)


def _why_woken(child: Child, cancelled: asyncio.Future[Any], pumps: list[asyncio.Task[None]]) -> _Stop | None:
    """What ended the wait, the leader's exit first; a failed pump re-raises; else the timer did."""
    if child.exited.done():
        return None
    if cancelled.done() and not cancelled.cancelled():
        return _Stop.CANCEL
    for pump in pumps:
        if pump.done():
            pump.result()  # re-raises the sink's error
    return _Stop.TIMEOUT


async def _terminate(child: Child, kill_grace: float) -> None:
    """SIGTERM the group, and SIGKILL it if the leader has not exited after ``kill_grace``."""
    _signal_group(child.pid, signal.SIGTERM)
    # asyncio.wait, not wait_for: child.exited is shared, and must not be cancelled on timeout.
    await asyncio.wait([child.exited], timeout=kill_grace)
    if not child.exited.done():
        _signal_group(child.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the group is already empty. PermissionError: some systems (macOS) report
    # EPERM for a group made only of zombies. Either way there is nothing left to stop.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _reap(child: Child, wait: float) -> None:
    """Wait (bounded) for the leader's exit status after SIGKILL, so that it can be reported."""
    if not child.exited.done():
        await asyncio.wait([child.exited], timeout=wait)


async def _drain(pumps: list[asyncio.Task[None]], wait: float) -> BaseException | None:
    """Let the pumps read to EOF for up to ``wait``; abandon them after. Returns a sink's error."""
    try:
        # Most runs end with both pipes already at EOF: then there is nothing to wait for.
        pending = [pump for pump in pumps if not pump.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=wait)
            for pump in late:
                pump.cancel()  # a process outside the group (setsid) holds the pipe: stop waiting for it
            if late:
                await asyncio.wait(late)
    finally:
        for pump in pumps:
            pump.cancel()  # a no-op once done; else we are being cancelled ourselves: leave no pump
    errors = [pump.exception() for pump in pumps if not pump.cancelled()]
    return next((error for error in errors if error is not None), None)


# -- output ----------------------------------------------------------------------------------------


async def _pump(pipe: _Pipe, output: _Output) -> None:
    """Read one pipe to EOF, passing its lines to the sink while under the cap."""
    lines = _LineSplitter()
    while data := await pipe.read():
        output.seen(pipe.stream, data)
        if output.truncated:
            continue  # past the cap: keep draining so the child never blocks on a full pipe
        for size, text in lines.feed(data):
            await output.deliver(pipe.stream, size, text)
    for size, text in lines.finish():
        await output.deliver(pipe.stream, size, text)


class _LineSplitter:
    """Cuts one stream into lines of at most MAX_LINE_BYTES and decodes them as UTF-8.

    The decoder is incremental, so a character cut in two by a chunk boundary is decoded whole.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> list[tuple[int, str]]:
        """The complete lines (and full chunks) ``data`` ends, as ``(size in bytes, text)``."""
        buf = self._buffer
        buf += data
        pieces: list[tuple[int, str]] = []
        start = 0
        while True:
            newline = buf.find(b"\n", start, start + MAX_LINE_BYTES)
            if newline >= 0:
                end = newline + 1
            elif len(buf) - start >= MAX_LINE_BYTES:
                end = start + MAX_LINE_BYTES
            else:
                break
            pieces.append(self._decode(buf[start:end]))
            start = end
        del buf[:start]
        return pieces

    def finish(self) -> list[tuple[int, str]]:
        """What is left at EOF: a last line without its newline, if any."""
        if not self._buffer:
            return []
        piece = self._decode(self._buffer, final=True)
        self._buffer.clear()
        return [piece]

    def _decode(self, raw: bytes | bytearray, *, final: bool = False) -> tuple[int, str]:
        text = self._decoder.decode(raw, final)
        if text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        return len(raw), text


class _Output:
    """What both pumps share: byte counts, the cap, the stderr tail. Only the event loop touches it."""

    def __init__(self, sink: OutputSink, cap: int) -> None:
        self._sink = sink
        self._cap = cap
        self._delivered = 0  # bytes whose text went to the sink
        self.total = 0
        self.truncated = False
        self._stderr_tail = bytearray()
        self._stdout_tail = bytearray()

    def seen(self, stream: str, data: bytes) -> None:
        self.total += len(data)
        if stream == "stderr":
            self._stderr_tail += data
            del self._stderr_tail[:-STDERR_TAIL_BYTES]
        else:
            self._stdout_tail += data
            del self._stdout_tail[:-STDOUT_TAIL_BYTES]

    async def deliver(self, stream: str, size: int, text: str) -> None:
        # Check and update before awaiting the sink: the other pump may run while this one awaits.
        if self.truncated:
            return
        if self._delivered + size > self._cap:
            self.truncated = True
            await self._sink(stream, f"[relay: output truncated after {self._delivered} bytes]")
            return
        self._delivered += size
        await self._sink(stream, text)

    def outcome(self, exit_code: int | None, stop: _Stop | None) -> ShellOutcome:
        return ShellOutcome(
            exit_code=exit_code,
            timed_out=stop is _Stop.TIMEOUT,
            cancelled=stop is _Stop.CANCEL,
            stderr_tail=_decode_tail(bytes(self._stderr_tail)),
            output_bytes=self.total,
            truncated=self.truncated,
            last_line=_last_line(bytes(self._stdout_tail)),
        )


def _last_line(raw: bytes) -> str:
    lines = [line for line in raw.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _decode_tail(raw: bytes) -> str:
    # A full tail was probably cut inside a UTF-8 character: drop its continuation bytes (at most 3)
    # rather than show a replacement character first.
    start = 0
    if len(raw) == STDERR_TAIL_BYTES:
        while start < 3 and raw[start] & 0xC0 == 0x80:
            start += 1
    return raw[start:].decode("utf-8", errors="replace")
