"""Running a shell job's command as a subprocess that leads its own process group.

How one run goes (``run_shell``):

1. two pipes are made (stdout, stderr) and the argv is started with ``start_new_session=True``, so the
   child leads a new process group whose id is its pid; nothing goes through a shell unless the argv
   itself is ``["/bin/sh", "-c", ...]``;
2. one pump task per pipe reads it concurrently, cuts it into lines (a line longer than
   ``MAX_LINE_BYTES`` is cut into chunks) and passes each one, in order, to the caller's sink; past
   ``output_cap`` bytes only a notice is passed, but the pumps keep draining so the child never blocks;
3. the run ends when the leader exits, the timeout passes or ``cancel`` is set; the last two send
   SIGTERM to the group, then SIGKILL after ``kill_grace``;
4. however it ended, the whole group gets SIGKILL (nothing of the command outlives its attempt while
   the worker lives: see below), and
   the pumps get ``drain_timeout`` to see their pipes close: a process that left the group (``setsid``)
   may hold them open forever, so they are then abandoned.

A worker that is itself SIGKILLed cannot kill anything: its running command lives on, re-parented to
init. Asking the kernel to signal the child when its parent dies (``PR_SET_PDEATHSIG``) needs either a
``preexec_fn`` (which forces a full ``fork`` of the worker: measured 4.6 ms a spawn instead of 0.6 ms
in an 80 MB process) or an extra ``exec`` of ``setpriv`` (1.5 ms): too dear for every shell job, so
Relay does neither, and says so in docs/jobs.md.

We create the pipes ourselves rather than asking asyncio for ``PIPE``: only then can a pipe still held by
such an escaped process be closed cleanly, without reaching into the subprocess transport.
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

#: Receives each line (without its newline) or chunk of output: ``(stream, text)``, stream being
#: ``"stdout"`` or ``"stderr"``. Awaited in order per stream; a slow sink slows the command down.
OutputSink = Callable[[str, str], Awaitable[None]]

MAX_LINE_BYTES = 64 * 1024  # a longer line is passed on in chunks of this size, so memory stays bounded
READ_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 4 * 1024
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

    ``exit_code`` is the leader's return code as asyncio reports it (negative: killed by that signal),
    or None when the command was never started (cancelled before) or not seen to exit.
    """

    exit_code: int | None
    timed_out: bool
    cancelled: bool
    stderr_tail: str  # the last STDERR_TAIL_BYTES of stderr, past the cap included
    output_bytes: int  # every byte seen on stdout and stderr, past the cap included
    truncated: bool  # output past the cap was not passed to the sink


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
            pipes.append(await _Pipe.open(stream))
        proc = await _spawn(cmd, pipes)
        output = _Output(sink, output_cap)
        stop = await _supervise(proc, pipes, output, cmd.timeout, cancel, kill_grace, drain_timeout)
    finally:
        for pipe in pipes:
            pipe.close()
        # A transport closes its fd in a callback it schedules: yield once, so that none is left open
        # when we return (a worker runs many commands; fds must not pile up until the next loop turn).
        await asyncio.sleep(0)
    return output.outcome(proc.returncode, stop)


# -- starting --------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Pipe:
    """One output pipe: the child gets the write end, a stream reader reads the other."""

    stream: str
    write_fd: int
    reader: asyncio.StreamReader
    transport: asyncio.ReadTransport

    @classmethod
    async def open(cls, stream: str) -> _Pipe:
        read_fd, write_fd = os.pipe()  # both ends non-inheritable: the child gets write_fd via dup2 only
        reader = asyncio.StreamReader(limit=READ_BYTES)
        loop = asyncio.get_running_loop()
        try:
            file = os.fdopen(read_fd, "rb", buffering=0)
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), file)
        except BaseException:
            file.close()
            os.close(write_fd)
            raise
        return cls(stream, write_fd, reader, transport)

    def close_write_end(self) -> None:
        # Our copy of the write end must go once the child has its own, or EOF would never come.
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_write_end()
        self.transport.close()  # a no-op after EOF; abandons a pipe an escaped process still holds


async def _spawn(cmd: ShellCommand, pipes: list[_Pipe]) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *cmd.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=pipes[0].write_fd,
            stderr=pipes[1].write_fd,
            env={**os.environ, **cmd.env},
            cwd=cmd.cwd,
            start_new_session=True,  # the child leads its own group: one killpg reaches all it starts
        )
    # TypeError / ValueError: a non-string or NUL-containing argv item, env entry or cwd.
    except (OSError, ValueError, TypeError) as exc:
        raise ShellLaunchError(_launch_message(cmd, exc)) from exc
    finally:
        for pipe in pipes:
            pipe.close_write_end()


def _launch_message(cmd: ShellCommand, exc: Exception) -> str:
    program = cmd.argv[0]
    # subprocess names the cwd as the failing file when chdir failed, the program when exec did.
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
    proc: asyncio.subprocess.Process,
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
        stop = await _wait_for_end(proc, pumps, timeout, cancel)
        if stop is not None:
            await _terminate(proc, kill_grace)
    finally:
        # Whatever ended the run (the leader's exit included, or our own cancellation), what is left of
        # its group would run on unwatched and hold our pipes: kill it.
        _signal_group(proc.pid, signal.SIGKILL)
        await _reap(proc, drain_timeout)
        sink_error = await _drain(pumps, drain_timeout)
    if sink_error is not None:
        raise sink_error
    return stop


async def _wait_for_end(
    proc: asyncio.subprocess.Process,
    pumps: list[asyncio.Task[None]],
    timeout: float | None,
    cancel: asyncio.Event | None,
) -> _Stop | None:
    """None once the leader exited (which wins a tie), else why the run must be stopped."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    exited = asyncio.ensure_future(proc.wait())
    cancelled = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    watched: set[asyncio.Future[Any]] = {exited, *pumps}
    if cancelled is not None:
        watched.add(cancelled)
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(watched, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if exited in done:
                return None
            if cancelled is not None and cancelled in done:
                return _Stop.CANCEL
            if not done:
                return _Stop.TIMEOUT
            # A pump ended: at EOF that is normal (a child may close stdout early), but a failing sink
            # must not leave the pipe undrained until the timeout: .result() re-raises its error.
            for pump in done:
                pump.result()
            watched -= done
    finally:
        exited.cancel()
        if cancelled is not None:
            cancelled.cancel()


async def _terminate(proc: asyncio.subprocess.Process, kill_grace: float) -> None:
    """SIGTERM the group, and SIGKILL it if the leader has not exited after ``kill_grace``."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), kill_grace)
    except TimeoutError:
        _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the group is already empty. PermissionError: some systems (macOS) report
    # EPERM for a group made only of zombies. Either way there is nothing left to stop.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _reap(proc: asyncio.subprocess.Process, wait: float) -> None:
    """Wait (bounded) for the leader's exit status after SIGKILL, so its transport is closed."""
    if proc.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), wait)


async def _drain(pumps: list[asyncio.Task[None]], wait: float) -> BaseException | None:
    """Let the pumps read to EOF for up to ``wait``; abandon them after. Returns a sink's error."""
    _, pending = await asyncio.wait(pumps, timeout=wait)
    for pump in pending:
        pump.cancel()  # a process outside the group (setsid) holds the pipe: stop waiting for it
    results = await asyncio.gather(*pumps, return_exceptions=True)
    errors = [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    return errors[0] if errors else None


# -- output ----------------------------------------------------------------------------------------


async def _pump(pipe: _Pipe, output: _Output) -> None:
    """Read one pipe to EOF, passing its lines to the sink while under the cap."""
    lines = _LineSplitter()
    while data := await pipe.reader.read(READ_BYTES):
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

    def seen(self, stream: str, data: bytes) -> None:
        self.total += len(data)
        if stream == "stderr":
            self._stderr_tail += data
            del self._stderr_tail[:-STDERR_TAIL_BYTES]

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
        )


def _decode_tail(raw: bytes) -> str:
    # A full tail was probably cut inside a UTF-8 character: drop its continuation bytes (at most 3)
    # rather than show a replacement character first.
    start = 0
    if len(raw) == STDERR_TAIL_BYTES:
        while start < 3 and raw[start] & 0xC0 == 0x80:
            start += 1
    return raw[start:].decode("utf-8", errors="replace")
