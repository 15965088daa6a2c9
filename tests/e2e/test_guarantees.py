"""The guarantees of DESIGN.md section 1, proved with real ``relay`` processes that are killed
(SIGKILL), stalled (SIGSTOP / SIGCONT) and stopped (SIGTERM) while they run jobs.

Every worker runs on a throwaway SQLite file with short intervals (see ``procs``); every process a
test starts is killed, with its descendants, when the test ends.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relay.types import Job, JobState

from .procs import (
    LEADER_TTL,
    LEASE,
    READY_TIMEOUT,
    REAPER_INTERVAL,
    STEP_TIMEOUT,
    Cluster,
    Proc,
    pid_alive,
    wait_until,
)

pytestmark = pytest.mark.slow

# Time for what the guarantee does not count: polls, process scheduling on a loaded 2-core machine.
SLACK = 3.0
# A crashed worker's job is back in the queue within lease + reaper interval, plus a leader term
# when the dead worker was the leader (its term must lapse before another worker reaps).
RECOVERY = LEASE + REAPER_INTERVAL + LEADER_TTL
JOB_TIMEOUT = 15.0  # a job that nothing holds up reaches the awaited state within this
# The events a worker logs once it has recorded (or tried to record) an attempt's outcome.
OUTCOME_EVENTS = ("completed", "failed", "dead", "cancelled", "released", "lease_lost")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    world = Cluster(tmp_path)
    try:
        yield world
    finally:
        world.close()


def task_doc(task: str, *args: object, **fields: object) -> dict[str, object]:
    return {"type": "task", "payload": {"task": task, "args": list(args)}, "lease": f"{LEASE}s", **fields}


def done(job_state: JobState) -> Callable[[Job], bool]:
    return lambda job: job.state is job_state


# -- 1. the legacy document -----------------------------------------------------------------------


LEGACY_DOCUMENT = {
    "type": "SHELL",
    "payload": {"command": "/bin/echo", "args": ["--input", "/data/file.csv"], "timeout": "5m"},
    "on_success": {"type": "SHELL", "payload": {"command": "/bin/echo notified"}},
    "max_retries": 3,
    "backoff": "exponential",
}


def test_legacy_document_completes_and_its_on_success_job_runs(cluster: Cluster) -> None:
    path = cluster.write_json("job.json", LEGACY_DOCUMENT)
    job_id = cluster.cli("submit", str(path)).stdout.strip()

    worker = cluster.start_worker("worker", "--burst")
    assert worker.wait_exit() == 0, worker.log_tail()

    listed = {job["id"]: job for job in cluster.cli_json("list", "--json")}
    assert len(listed) == 2
    parent = listed[job_id]
    [child] = [job for job in listed.values() if job["parent_id"] == job_id]
    assert parent["state"] == "completed"
    assert parent["attempt"] == 1
    assert parent["timeout"] == 300
    assert parent["result"]["exit_code"] == 0
    assert child["state"] == "completed"
    assert child["payload"]["argv"] == ["/bin/echo", "notified"]
    assert cluster.cli("logs", job_id).stdout == "--input /data/file.csv\n"
    assert [line.text for line in cluster.logs(child["id"])] == ["notified"]


# -- 2. retries, backoff, the DLQ, and retry ------------------------------------------------------


def test_failing_command_retries_with_backoff_lands_in_dlq_and_retry_runs_it_again(
    cluster: Cluster,
) -> None:
    document = {
        "type": "shell",
        "payload": {"command": "/bin/sh", "args": ["-c", "echo nope >&2; exit 4"]},
        "max_retries": 2,
        "backoff": "fixed",
        "backoff_base": "50ms",
    }
    job_id = cluster.cli("submit", str(cluster.write_json("failing.json", document))).stdout.strip()
    worker = cluster.start_worker("worker")

    job = cluster.wait_job(job_id, done(JobState.DEAD), JOB_TIMEOUT, "dead after 3 attempts", [worker])
    assert job.attempt == 3
    assert [(e.attempt, e.type, e.exit_code) for e in job.errors] == [(n, "ExitCode", 4) for n in (1, 2, 3)]
    assert all((e.stderr_tail or "").strip() == "nope" for e in job.errors)
    # The first two failures were retried after the fixed 50 ms backoff; the third went dead.
    failed = [(e["attempt"], e["retry_in"]) for e in worker.events("failed", job_id)]
    assert failed == [(1, 0.05), (2, 0.05)]
    assert [e["attempt"] for e in worker.events("dead", job_id)] == [3]
    assert [job["id"] for job in cluster.cli_json("dlq", "list", "--json")] == [job_id]

    requeued = cluster.cli_json("retry", job_id, "--json")
    assert requeued["state"] == "pending"
    assert requeued["attempt"] == 3

    # A requeued dead job gets one more attempt: it runs (attempt 4), fails, and is dead again.
    job = cluster.wait_job(
        job_id, lambda j: j.state is JobState.DEAD and j.attempt == 4, JOB_TIMEOUT, "attempt 4", [worker]
    )
    assert [e.attempt for e in job.errors] == [1, 2, 3, 4]
    assert job.errors[-1].exit_code == 4
    assert [e["attempt"] for e in worker.events("dead", job_id)] == [3, 4]


# -- 3. crash recovery ------------------------------------------------------------------------------


def test_sigkilled_worker_job_is_finished_by_another_worker_within_lease_and_reaper_interval(
    cluster: Cluster,
) -> None:
    app = cluster.write_app()
    first = cluster.start_worker("first", "--app", app)
    job_id = cluster.enqueue(task_doc("e2e.block_first", "crash"))
    assert cluster.wait_runs("crash", 1, procs=[first]) == [first.pid]
    second = cluster.start_worker("second", "--app", app)
    second.wait_ready()

    first.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    job = cluster.wait_job(
        job_id, done(JobState.COMPLETED), RECOVERY + SLACK, "completed by the second worker", [second]
    )
    recovered_in = time.monotonic() - killed_at

    assert job.attempt == 2
    assert job.result == {"run": 2, "pid": second.pid}
    assert f":{second.pid}:" in (job.worker_id or "")
    [error] = job.errors
    assert (error.attempt, error.type) == (1, "LeaseExpired")
    assert cluster.runs("crash") == [first.pid, second.pid]
    assert recovered_in < RECOVERY + SLACK


# -- 4. a stalled worker cannot change the recorded outcome ---------------------------------------


def stop_outside_write(cluster: Cluster, worker: Proc) -> None:
    """SIGSTOP ``worker`` at a moment it holds no SQLite write lock: a process frozen inside a write
    transaction would block every other process on the file until it is continued."""

    def stopped_free() -> bool:
        worker.signal(signal.SIGSTOP)
        if cluster.write_lock_free():
            return True
        worker.signal(signal.SIGCONT)
        return False

    wait_until(stopped_free, STEP_TIMEOUT, "a moment the worker holds no write lock")


def test_sigstopped_worker_past_its_lease_cannot_change_the_outcome(cluster: Cluster) -> None:
    app = cluster.write_app()
    stalled = cluster.start_worker("stalled", "--app", app)
    document = task_doc(
        "e2e.block_first", "stall", on_success={"type": "shell", "payload": {"command": "/bin/true"}}
    )
    job_id = cluster.enqueue(document)
    cluster.wait_runs("stall", 1, procs=[stalled])
    stop_outside_write(cluster, stalled)
    try:
        other = cluster.start_worker("other", "--app", app)
        job = cluster.wait_job(
            job_id, done(JobState.COMPLETED), JOB_TIMEOUT, "completed by the other worker", [other]
        )
        # Now the stalled worker's run ends too, late, and it tries to record its completion. Its
        # first heartbeat would tell it that it lost the job, and it would then drop the outcome
        # without a write; so that the fence on the completion itself is what is tested, that
        # heartbeat waits on SQLite's write lock, held here until the run has returned.
        with cluster.write_lock():
            cluster.release("stall")
            stalled.signal(signal.SIGCONT)
            wait_until(
                lambda: stalled.pid in cluster.runs("stall", "done"), STEP_TIMEOUT, "the late run's end"
            )
    finally:
        stalled.signal(signal.SIGCONT)
    [late] = wait_until(
        lambda: [e for e in stalled.events(job_id=job_id) if e["event"] in OUTCOME_EVENTS],
        STEP_TIMEOUT,
        "the stalled worker to report how its late completion went",
        stalled.log_tail,
    )

    # Its completion was refused (the lease token is stale), and it says so.
    assert (late["event"], late["attempt"], late.get("outcome")) == ("lease_lost", 1, "completed"), late
    assert job.attempt == 2
    assert job.result == {"run": 2, "pid": other.pid}
    assert [(e.attempt, e.type) for e in job.errors] == [(1, "LeaseExpired")]
    assert cluster.job(job_id) == job, "the stalled worker changed the recorded outcome"
    assert stalled.events("completed", job_id) == []
    # Exactly one completion was accepted: one on_success job, not two.
    assert len(cluster.children_of(job_id)) == 1
    # At-least-once: the job's body ran to its end twice, once in each worker.
    assert cluster.runs("stall") == [stalled.pid, other.pid]
    assert sorted(cluster.runs("stall", "done")) == sorted([stalled.pid, other.pid])


# -- 5. graceful shutdown ---------------------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish_and_claims_nothing_new(cluster: Cluster) -> None:
    app = cluster.write_app()
    worker = cluster.start_worker(
        "worker", "--app", app, "--concurrency", "1", env={"RELAY_GRACE_PERIOD": "30"}
    )
    running_id = cluster.enqueue(task_doc("e2e.block_first", "graceful"))
    cluster.wait_runs("graceful", 1, procs=[worker])
    waiting_id = cluster.enqueue(task_doc("e2e.block_first", "waiting"))

    worker.signal(signal.SIGTERM)
    worker.wait_for_message("stopping: no new jobs")
    cluster.release("graceful")  # the running job may finish only now, after the signal

    assert worker.wait_exit() == 0, worker.log_tail()
    finished = cluster.job(running_id)
    assert finished.state is JobState.COMPLETED
    assert finished.result == {"run": 1, "pid": worker.pid}
    # The slot the finished job freed was not used: the second job was never claimed.
    waiting = cluster.job(waiting_id)
    assert (waiting.state, waiting.attempt) == (JobState.PENDING, 0)
    assert cluster.runs("waiting") == []
    assert worker.events("claimed", waiting_id) == []


def test_second_sigterm_releases_the_running_job_with_its_attempt_given_back(cluster: Cluster) -> None:
    app = cluster.write_app()
    worker = cluster.start_worker("worker", "--app", app, env={"RELAY_GRACE_PERIOD": "30"})
    job_id = cluster.enqueue(task_doc("e2e.block_first", "long"))
    cluster.wait_runs("long", 1, procs=[worker])
    assert cluster.job(job_id).attempt == 1

    worker.signal(signal.SIGTERM)
    worker.wait_for_message("stopping: no new jobs")
    worker.signal(signal.SIGTERM)

    assert worker.wait_exit() == 0, worker.log_tail()
    job = cluster.job(job_id)
    assert job.state is JobState.PENDING
    assert job.attempt == 0
    assert job.errors == ()
    assert job.lease_token is None
    assert [e["attempt"] for e in worker.events("released", job_id)] == [1]


# -- 6. a job that kills its own worker -------------------------------------------------------------


def test_job_that_kills_its_worker_ends_in_the_dlq_after_its_retries(cluster: Cluster) -> None:
    app = cluster.write_app()
    supervisor = cluster.start_worker("supervisor", "--app", app, "--processes", "2")
    wait_until(
        lambda: len(supervisor.messages(" serving ")) == 2,
        READY_TIMEOUT,
        "both worker processes to serve",
        supervisor.log_tail,
    )
    job_id = cluster.enqueue(task_doc("e2e.kill_own_worker", "suicide", max_retries=1))

    job = cluster.wait_job(
        job_id,
        done(JobState.DEAD),
        2 * (RECOVERY + SLACK) + READY_TIMEOUT,
        "dead after 2 attempts",
        [supervisor],
    )
    assert job.attempt == 2
    assert [(e.attempt, e.type) for e in job.errors] == [(1, "LeaseExpired"), (2, "LeaseExpired")]
    # Each attempt killed the worker process that ran it (two processes); the supervisor restarted
    # both, and the restarted ones serve again.
    pids = cluster.runs("suicide")
    assert len(set(pids)) == 2
    assert not any(pid_alive(pid) for pid in pids)
    wait_until(
        lambda: len(supervisor.messages(" serving ")) == 4,
        READY_TIMEOUT,
        "both crashed worker processes to be restarted",
        supervisor.log_tail,
    )
    assert len(supervisor.messages("unexpectedly; restarting")) == 2
    assert supervisor.returncode is None
