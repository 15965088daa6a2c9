"""Workers on gRPC streams (issue 14): a real ``relay server`` with its gRPC API on a SQLite file (and
on PostgreSQL), real ``relay worker --connect grpc://...`` processes, and jobs enqueued through storage.

The gRPC workers are given a database URL they could not open (``NO_STORAGE``): whatever they do goes
over the stream. The server runs maintenance (the reaper), with the short intervals of ``procs``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from relay.server.tokens import mint_token
from relay.storage.params import ListParams
from relay.types import Job, JobState
from servers.postgres import postgres_server, postgres_url
from servers.tls import self_signed

from .procs import LEASE, READY_TIMEOUT, STEP_TIMEOUT, Cluster, Proc, wait_until

pytestmark = pytest.mark.slow
__all__ = ["postgres_server", "postgres_url"]

ROOT = Path(__file__).resolve().parents[2]
NO_STORAGE = "sqlite:////nonexistent-relay-dir/relay.db"
SECRET = "a-test-secret-of-at-least-32-bytes!!"
JOB_TIMEOUT = 20.0
RECOVERY = LEASE + 1.0 + 3.0  # lease + reaper + leader term, and slack for a loaded machine


class GrpcCluster(Cluster):
    """A Cluster whose workers connect to a ``relay server`` over gRPC."""

    grpc_port = 0
    server: Proc | None = None

    def start_server(self, port: int = 0, env: Mapping[str, str] | None = None) -> Proc:
        n = sum(1 for p in self.procs if p.name.startswith("server"))
        server = self.start(
            f"server{n}",
            "server",
            "--port",
            "0",
            "--grpc-port",
            str(port),
            env={"RELAY_POLL_INTERVAL": "0.05", **(env or {})},
        )
        line = server.wait_for_message("gRPC API listening on", READY_TIMEOUT)
        self.grpc_port = int(line.split()[-1].rsplit(":", 1)[1])
        self.server = server
        return server

    def start_grpc_worker(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Proc:
        url = f"grpc://127.0.0.1:{self.grpc_port}"
        return self.start_worker(
            name, "--connect", url, *args, env={"RELAY_DATABASE_URL": NO_STORAGE, **(env or {})}
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[GrpcCluster]:
    world = GrpcCluster(tmp_path)
    try:
        yield world
    finally:
        world.close()


def shell(command: str, **fields: object) -> dict[str, object]:
    return {"type": "shell", "payload": {"command": "/bin/sh", "args": ["-c", command]}, **fields}


def task(name: str, *args: object, **fields: object) -> dict[str, object]:
    return {"type": "task", "payload": {"task": name, "args": list(args)}, **fields}


def is_state(state: JobState) -> Callable[[Job], bool]:
    return lambda job: job.state is state


def completions(procs: list[Proc]) -> Counter[str]:
    return Counter(e["job_id"] for p in procs for e in p.events("completed"))


# -- jobs complete -----------------------------------------------------------------------------------


def test_shell_and_task_jobs_complete_on_a_grpc_worker(cluster: GrpcCluster) -> None:
    cluster.start_server()
    app = cluster.write_app()
    cluster.release("t")  # block_first returns at once
    worker = cluster.start_grpc_worker("w", "--app", app)
    worker.wait_ready()
    shell_id = cluster.enqueue(shell("echo out; echo err >&2"))
    task_id = cluster.enqueue(task("e2e.block_first", "t"))

    done = cluster.wait_job(shell_id, is_state(JobState.COMPLETED), JOB_TIMEOUT, "completed", [worker])
    assert done.attempt == 1
    result = cluster.wait_job(task_id, is_state(JobState.COMPLETED), JOB_TIMEOUT, "completed", [worker])
    assert result.result == {"run": 1, "pid": worker.pid}
    # The output came over the stream too, before the outcome.
    lines = {(line.stream, line.text.strip()) for line in cluster.logs(shell_id)}
    assert {("stdout", "out"), ("stderr", "err")} <= lines
    # Registered through the stream; its graceful stop says goodbye and unregisters.
    workers = cluster.relay.call(cluster.relay.storage.worker_list())
    assert [w.concurrency for w in workers] == [10]
    worker.signal(15)
    assert worker.wait_exit() == 0, worker.log_tail()
    assert cluster.relay.call(cluster.relay.storage.worker_list()) == []


def test_a_sigkilled_grpc_worker_has_its_job_run_again_by_another(cluster: GrpcCluster) -> None:
    cluster.start_server()
    app = cluster.write_app()
    first = cluster.start_grpc_worker("first", "--app", app)
    first.wait_ready()
    job_id = cluster.enqueue(task("e2e.block_first", "k", lease=f"{LEASE}s", max_retries=2))
    assert cluster.wait_runs("k", 1, procs=[first]) == [first.pid]

    first.kill()
    second = cluster.start_grpc_worker("second", "--app", app)
    job = cluster.wait_job(
        job_id, is_state(JobState.COMPLETED), RECOVERY + READY_TIMEOUT, "re-run", [first, second]
    )
    assert cluster.runs("k") == [first.pid, second.pid]
    assert job.attempt == 2
    assert [e.type for e in job.errors] == ["LeaseExpired"]


def test_a_cut_stream_reconnects_and_its_jobs_finish_once(cluster: GrpcCluster) -> None:
    server = cluster.start_server()
    port = cluster.grpc_port
    app = cluster.write_app()
    worker = cluster.start_grpc_worker("w", "--app", app, "--concurrency", "4")
    worker.wait_ready()
    # Leases longer than a restart: jobs that run across it are heartbeaten again after it.
    names = ["a", "b", "c", "d"]
    ids = {n: cluster.enqueue(task("e2e.block_first", n, lease="15s", max_retries=3)) for n in names}
    for name in names:
        cluster.wait_runs(name, 1, procs=[worker, server])

    server.kill()  # the stream is cut
    cluster.release("a")  # finishes while no server is there: its outcome waits for the reconnect
    wait_until(lambda: cluster.runs("a", "done"), STEP_TIMEOUT, "a to return", worker.log_tail)
    restarted = cluster.start_server(port)
    assert cluster.grpc_port == port
    wait_until(
        lambda: len(worker.messages("worker stream to")) >= 2, READY_TIMEOUT, "a reconnect", worker.log_tail
    )
    for name in names[1:]:
        cluster.release(name)  # finish after the restart

    for name, job_id in ids.items():
        job = cluster.wait_job(job_id, is_state(JobState.COMPLETED), JOB_TIMEOUT, name, [worker, restarted])
        assert job.attempt == 1, job
        assert len(cluster.runs(name)) == 1
        assert len(cluster.runs(name, "done")) == 1
    # One accepted outcome per job, by the worker's own account too.
    assert completions([worker]) == Counter(ids.values())
    assert worker.returncode is None  # it carried on


def test_cancel_of_a_running_job_reaches_the_grpc_worker(cluster: GrpcCluster) -> None:
    cluster.start_server()
    worker = cluster.start_grpc_worker("w")
    worker.wait_ready()
    job_id = cluster.enqueue(shell("sleep 30", lease=f"{LEASE}s"))
    cluster.wait_job(job_id, is_state(JobState.RUNNING), JOB_TIMEOUT, "running", [worker])

    cluster.relay.call(cluster.relay.storage.job_cancel(job_id))
    job = cluster.wait_job(job_id, is_state(JobState.CANCELLED), JOB_TIMEOUT, "cancelled", [worker])
    assert job.attempt == 1
    assert worker.events("cancelling", job_id)


# -- auth ----------------------------------------------------------------------------------------------


def test_tokens_are_checked_on_the_worker_stream(cluster: GrpcCluster) -> None:
    cluster.start_server(env={"RELAY_JWT_SECRET": SECRET})
    read_only = mint_token(SECRET, "read:*", "1h")
    refused = cluster.start_grpc_worker("no-scope", env={"RELAY_TOKEN": read_only})
    assert refused.wait_exit() != 0
    assert "PERMISSION_DENIED" in refused.log_text()
    assert "work:default" in refused.log_text()

    garbage = cluster.start_grpc_worker("bad", "--token", "not-a-jwt")
    assert garbage.wait_exit() != 0
    assert "UNAUTHENTICATED" in garbage.log_text()

    good = cluster.start_grpc_worker("good", env={"RELAY_TOKEN": mint_token(SECRET, "work:default", "1h")})
    good.wait_ready()
    job_id = cluster.enqueue(shell("true"))
    cluster.wait_job(job_id, is_state(JobState.COMPLETED), JOB_TIMEOUT, "completed", [good])


def test_a_grpc_worker_over_tls(cluster: GrpcCluster, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    cluster.start_server(env={"RELAY_GRPC_TLS_CERT": str(cert), "RELAY_GRPC_TLS_KEY": str(key)})
    worker = cluster.start_worker(
        "w",
        "--connect",
        f"grpcs://localhost:{cluster.grpc_port}",
        "--root-cert",
        str(cert),
        env={"RELAY_DATABASE_URL": NO_STORAGE},
    )
    worker.wait_ready()
    job_id = cluster.enqueue(shell("true"))
    cluster.wait_job(job_id, is_state(JobState.COMPLETED), JOB_TIMEOUT, "completed", [worker])


# -- flow control --------------------------------------------------------------------------------------


def test_a_grpc_worker_is_sent_no_more_jobs_than_its_free_slots(cluster: GrpcCluster) -> None:
    """The server claims only within the credit the worker grants for its free slots. Storage shows
    it: the jobs running under the worker's id stay within what the runtime holds on its own (a slot
    frees when a job's code ends, while its outcome is still being recorded, and the runtime keeps at
    most one set of slots of such outcomes: 2 x concurrency), whereas a server that sent whatever
    was due would have all 20 claimed at once."""
    concurrency = 2
    cluster.start_server()
    worker = cluster.start_grpc_worker("w", "--concurrency", str(concurrency))
    worker.wait_ready()
    docs = [shell("sleep 0.05") for _ in range(20)]
    ids = [handle.id for handle in cluster.relay.enqueue_many(docs)]
    samples: list[int] = []

    def drained() -> bool:
        page = cluster.relay.call(cluster.relay.storage.job_list(ListParams(states=[JobState.RUNNING])))
        samples.append(len(page.jobs))
        return all(cluster.job(i).state is JobState.COMPLETED for i in ids)

    wait_until(drained, 60.0, "20 jobs to complete", worker.log_tail)
    assert max(samples) <= 2 * concurrency, samples
    assert max(samples) >= 1


def test_busy_grpc_workers_hold_exactly_their_slots(cluster: GrpcCluster) -> None:
    """Jobs that do not end during the test leave no outcome in flight, so what a worker holds is
    exactly what the server sent it: as many as its slots, with more jobs due all along, while a
    second worker that starts later gets its own slots' worth from the same queue."""
    cluster.start_server()
    first = cluster.start_grpc_worker("w1", "--concurrency", "2")
    first.wait_ready()
    cluster.relay.enqueue_many([shell("sleep 600", timeout=900) for _ in range(20)])

    def holding() -> Counter[str]:
        page = cluster.relay.call(cluster.relay.storage.job_list(ListParams(states=[JobState.RUNNING])))
        return Counter(job.worker_id or "" for job in page.jobs)

    wait_until(lambda: sorted(holding().values()) == [2], 30.0, "the first worker's 2 jobs", first.log_tail)
    second = cluster.start_grpc_worker("w2", "--concurrency", "3")
    wait_until(lambda: sorted(holding().values()) == [2, 3], 30.0, "3 more for the second", second.log_tail)
    # By now the first stream was served all along: it still holds its 2, and 15 jobs wait.
    assert sorted(holding().values()) == [2, 3]
    pending = cluster.relay.call(cluster.relay.storage.job_list(ListParams(states=[JobState.PENDING])))
    assert len(pending.jobs) == 15


# -- PostgreSQL ------------------------------------------------------------------------------------------


def test_grpc_workers_on_a_postgres_server(tmp_path: Path, postgres_url: str) -> None:
    from relay.app import Relay
    from relay.settings import Settings

    cluster = GrpcCluster(tmp_path)
    try:
        cluster.env["RELAY_DATABASE_URL"] = postgres_url
        relay = Relay(settings=Settings(database_url=postgres_url))
        cluster.start_server()
        workers = [cluster.start_grpc_worker(f"w{i}", "--concurrency", "3") for i in range(2)]
        for worker in workers:
            worker.wait_ready()
        ids = [h.id for h in relay.enqueue_many([shell(f"echo {i}") for i in range(30)])]

        def all_done() -> list[Job]:
            jobs = [relay.get_job(i) for i in ids]
            return jobs if all(j.state is JobState.COMPLETED for j in jobs) else []

        jobs = wait_until(all_done, 60.0, "30 jobs to complete", lambda: workers[0].log_tail())
        assert {j.attempt for j in jobs} == {1}
        assert completions(workers) == Counter(ids)
        relay.close()
    finally:
        cluster.close()


# -- the plain grpcio example ----------------------------------------------------------------------------


def test_the_plain_grpcio_example_worker_runs_a_job(cluster: GrpcCluster, tmp_path: Path) -> None:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    proto_dir = ROOT / "src" / "relay" / "grpc" / "v1"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={stubs}",
            f"--grpc_python_out={stubs}",
            str(proto_dir / "relay.proto"),
        ],
        check=True,
        timeout=60,
    )
    cluster.start_server()
    job_id = cluster.enqueue(shell("echo from-the-example"))
    example = ROOT / "docs" / "examples" / "grpc_worker.py"
    done = subprocess.run(
        [sys.executable, str(example), f"127.0.0.1:{cluster.grpc_port}", "default", "--jobs", "1"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(stubs)},
        cwd=stubs,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"job {job_id}: completed" in done.stdout
    job = cluster.job(job_id)
    assert job.state is JobState.COMPLETED
    assert isinstance(job.result, dict)
    assert job.result["output"] == "from-the-example"
