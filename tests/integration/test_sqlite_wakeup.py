"""Wake-ups between processes on one SQLite file (relay.storage.sqlite.wakeup): a job enqueued by one
process wakes a waiter in another at once, not at its next poll.

Every waiter here has a timeout (or a worker a poll interval) of a minute, far longer than PROMPT: a
waiter that returns True within PROMPT, or a job that starts within it, was woken by a datagram from the
other process (an insert in another process cannot reach this one's in-process notifier). Nothing sleeps
for time to pass: the tests wait for conditions against deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from relay import Relay
from relay.settings import Settings
from relay.storage.sqlite import SQLiteStorage
from relay.storage.sqlite.wakeup import channel_for, wake_directory
from relay.types import JobKind, JobState, NewJob

from .helpers import eventually, running

PROMPT = 5.0  # seconds within which a woken waiter returns
LONG_WAIT = 60.0  # the waiters' own timeout: longer than any test here takes
CHILD_TIMEOUT = 30.0  # seconds a child process may take
CONDITION_POLL = 0.01  # seconds between looks at a condition polled against a deadline

# A second process: opens the file, inserts one job in queue argv[2], exits.
INSERT_ONE = """
import asyncio, sys
from relay.storage.sqlite import SQLiteStorage
from relay.types import JobKind, NewJob

async def main() -> None:
    storage = SQLiteStorage(sys.argv[1])
    await storage.open()
    await storage.job_insert_many([NewJob(kind=JobKind.SHELL, payload={}, queue=sys.argv[2])])
    await storage.close()

asyncio.run(main())
"""

# A second process that listens: prints its socket's path, then whether it was woken, then exits.
LISTEN = """
import asyncio, sys
from relay.storage.sqlite import SQLiteStorage

async def main() -> None:
    storage = SQLiteStorage(sys.argv[1])
    await storage.open()
    waiter = asyncio.create_task(storage.wait_for_jobs([sys.argv[2]], timeout=60.0))
    await asyncio.sleep(0)  # the waiter starts: its first step binds the socket
    print(storage.wake_socket, flush=True)
    print(await waiter, flush=True)
    await storage.close()

asyncio.run(main())
"""


def job(queue: str = "mail") -> NewJob:
    return NewJob(kind=JobKind.SHELL, payload={"command": "true"}, queue=queue)


async def run_python(code: str, *args: str) -> None:
    """Run ``code`` in a new interpreter to completion; fail on a non-zero exit."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, *args, stderr=subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), CHILD_TIMEOUT)
    assert process.returncode == 0, stderr.decode()


async def yield_to_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = PROMPT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(CONDITION_POLL)


async def listening(storage: SQLiteStorage, queues: list[str]) -> asyncio.Task[bool]:
    """A waiter on ``queues``, once it waits and its process's socket is bound."""
    waiter = asyncio.create_task(storage.wait_for_jobs(queues, timeout=LONG_WAIT))
    await yield_to_loop()  # the waiter reaches its wait (no time passes)
    await wait_until(lambda: storage.wake_socket is not None, "the socket is bound")
    assert not waiter.done()
    return waiter


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "relay.db"


@pytest.fixture
def wake_dir(db_path: Path) -> Iterator[Path]:
    """The file's socket directory; removed after the test with what the test put there (it may be
    under /tmp rather than tmp_path, when tmp_path is long)."""
    directory = Path(wake_directory(os.path.realpath(db_path)))
    yield directory
    if directory.is_dir():
        shutil.rmtree(directory)
    else:
        directory.unlink(missing_ok=True)


async def exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(str(db_path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_an_insert_by_another_process_wakes_a_waiter_on_its_queue(
    storage: SQLiteStorage, db_path: Path
) -> None:
    mail = await listening(storage, ["mail"])
    other = await listening(storage, ["other"])
    started = time.monotonic()
    await run_python(INSERT_ONE, str(db_path), "mail")
    assert await asyncio.wait_for(mail, PROMPT) is True
    assert time.monotonic() - started < PROMPT
    await yield_to_loop()  # one datagram wakes all its waiters at once: "other" would be done by now
    assert not other.done()
    other.cancel()


async def test_an_insert_here_wakes_a_waiter_in_another_process(
    storage: SQLiteStorage, db_path: Path, wake_dir: Path
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LISTEN, str(db_path), "mail", stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        path = (await asyncio.wait_for(child.stdout.readline(), CHILD_TIMEOUT)).decode().strip()
        assert Path(path).parent == wake_dir
        await storage.job_insert_many([job("mail")])
        woken = await asyncio.wait_for(child.stdout.readline(), PROMPT)
        assert woken.decode().strip() == "True"
        assert await asyncio.wait_for(child.wait(), CHILD_TIMEOUT) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def test_a_job_from_relay_submit_starts_long_before_the_poll_interval(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    app = Relay(settings=Settings(database_url=url, poll_interval=LONG_WAIT))
    try:
        storage = app.storage
        assert isinstance(storage, SQLiteStorage)
        async with running(app.worker(queues=["mail"])):
            await wait_until(lambda: storage.wake_socket is not None, "the worker listens")
            env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
            env["RELAY_DATABASE_URL"] = url
            submit = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay", "submit", "--type=shell",
                '--payload={"command": "true"}', "--queue=mail", "--json",
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            _, stderr = await asyncio.wait_for(submit.communicate(), CHILD_TIMEOUT)
            assert submit.returncode == 0, stderr.decode()
            submitted = time.monotonic()
            done = await eventually(lambda: _completed(app), PROMPT, "the submitted job to complete")
            assert time.monotonic() - submitted < PROMPT
        assert done.state is JobState.COMPLETED
    finally:
        await asyncio.to_thread(app.close)


async def _completed(app: Relay) -> object:
    from relay.storage.params import ListParams

    page = await app.storage.job_list(ListParams(states=[JobState.COMPLETED], limit=10))
    return page.jobs[0] if page.jobs else None


async def test_the_socket_of_a_killed_process_is_removed_by_the_next_sender(
    storage: SQLiteStorage, db_path: Path
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LISTEN, str(db_path), "mail", stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        path = Path((await asyncio.wait_for(child.stdout.readline(), CHILD_TIMEOUT)).decode().strip())
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), CHILD_TIMEOUT)
    assert await exists(path)  # left behind: the process had no chance to remove it

    await storage.job_insert_many([job("mail")])

    assert not await exists(path)
    assert not await exists(path.parent)  # it was the last socket there


async def test_a_listener_with_a_full_queue_is_skipped_not_removed(
    storage: SQLiteStorage, wake_dir: Path
) -> None:
    await asyncio.to_thread(wake_dir.mkdir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stuck:  # bound, never reads
        stuck.bind(str(wake_dir / "1-stuck.sock"))
        for _ in range(100):  # far more datagrams than a receive queue holds
            await storage.job_insert_many([job("mail")])
        assert await exists(wake_dir / "1-stuck.sock")
        assert stuck.recv(1024, socket.MSG_DONTWAIT) == b'["mail"]'


async def test_a_listener_that_binds_after_a_send_is_reached(storage: SQLiteStorage, wake_dir: Path) -> None:
    await listening(storage, ["mail"])  # the directory exists, and this process's send lists it
    await storage.notify(["mail"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as late:
        late.bind(str(wake_dir / "2-late.sock"))
        late.setblocking(False)
        received: list[bytes] = []

        async def reached() -> bool:
            await storage.notify(["mail"])
            with contextlib.suppress(BlockingIOError):
                received.append(late.recv(1024))
            return bool(received)

        # At once when the directory's mtime moved; within the listing's one-second life otherwise.
        await eventually(reached, PROMPT, "the late listener to get a datagram")
    assert received[0] == b'["mail"]'


async def test_close_removes_the_socket_and_its_directory_with_the_last_instance(db_path: Path) -> None:
    first, second = SQLiteStorage(str(db_path)), SQLiteStorage(str(db_path))
    await first.open()
    await second.open()
    waiters = [await listening(first, ["mail"]), await listening(second, ["mail"])]
    assert first.wake_socket == second.wake_socket  # one socket per process and file
    path = Path(first.wake_socket or "")
    assert await exists(path)

    await first.close()
    assert await exists(path)  # the second instance still waits through it
    await second.close()

    assert not await exists(path)
    assert not await exists(path.parent)
    assert not await exists(Path(f"{db_path}-wake"))  # nothing left beside the database either
    for waiter in waiters:
        waiter.cancel()


async def test_the_directory_and_socket_take_the_database_files_permissions(
    storage: SQLiteStorage, db_path: Path
) -> None:
    await asyncio.to_thread(db_path.chmod, 0o640)
    await listening(storage, ["mail"])
    path = Path(storage.wake_socket or "")
    assert (await asyncio.to_thread(path.stat)).st_mode & 0o777 == 0o640
    assert (await asyncio.to_thread(path.parent.stat)).st_mode & 0o777 == 0o750  # searchable where readable


async def test_a_path_too_long_for_a_socket_address_uses_a_directory_under_tmp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    await asyncio.to_thread(deep.mkdir, parents=True)
    db_path = deep / "relay.db"
    storage = SQLiteStorage(str(db_path))
    await storage.open()
    try:
        waiter = await listening(storage, ["mail"])
        path = Path(storage.wake_socket or "")
        assert path.parent.parent == Path("/tmp")
        assert path.parent.name.startswith("relay-wake-")
        assert len(os.fsencode(path)) < 104
        await run_python(INSERT_ONE, str(db_path), "mail")
        assert await asyncio.wait_for(waiter, PROMPT) is True
    finally:
        await storage.close()
    assert not await exists(path.parent)


async def test_an_in_memory_database_waits_without_a_socket() -> None:
    storage = SQLiteStorage(":memory:")
    await storage.open()
    try:
        waiter = asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=LONG_WAIT))
        await yield_to_loop()
        assert storage.wake_socket is None
        await storage.job_insert_many([job("mail")])  # woken in-process, as before
        assert await asyncio.wait_for(waiter, PROMPT) is True
    finally:
        await storage.close()


async def test_when_no_socket_can_be_bound_waiting_and_inserting_still_work(
    storage: SQLiteStorage, wake_dir: Path
) -> None:
    await asyncio.to_thread(wake_dir.write_text, "in the way")  # not a directory
    waiter = asyncio.create_task(storage.wait_for_jobs(["mail"], timeout=LONG_WAIT))
    await yield_to_loop()
    assert storage.wake_socket is None
    await storage.job_insert_many([job("mail")])
    assert await asyncio.wait_for(waiter, PROMPT) is True  # in-process wake-ups are unaffected
    assert await storage.wait_for_jobs(["mail"], timeout=0.05) is False  # and timeouts still time out


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python 3.12+
async def test_a_forked_child_leaves_the_parents_socket_alone(storage: SQLiteStorage, db_path: Path) -> None:
    waiter = await listening(storage, ["mail"])
    path = Path(storage.wake_socket or "")
    pid = os.fork()
    if pid == 0:  # the child: it must not see the parent's socket as its own, nor remove it
        channel = channel_for(str(db_path))
        os._exit(0 if channel.socket_path is None and os.access(path, os.F_OK) else 1)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert await exists(path)
    await run_python(INSERT_ONE, str(db_path), "mail")
    assert await asyncio.wait_for(waiter, PROMPT) is True  # the parent still listens
