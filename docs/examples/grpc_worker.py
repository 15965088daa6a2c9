"""A minimal Relay worker in plain grpcio: no Relay code, only the stubs generated from relay.proto.

    python -m grpc_tools.protoc -I src/relay/grpc/v1 --python_out=. --grpc_python_out=. relay.proto
    python grpc_worker.py 127.0.0.1:50051 default [--jobs N]

It says hello, grants one slot of credit, runs each shell job it is assigned (its argv, no shell),
reports the outcome with the job's lease token, and grants the slot again. A real worker would also
heartbeat its running jobs (HeartbeatRequest) before a third of their lease has passed.
Auth: a bearer token in RELAY_TOKEN goes in the call's metadata.
"""

import json
import os
import queue
import shlex
import subprocess
import sys

import grpc
import relay_pb2 as pb
import relay_pb2_grpc


def argv_of(payload):
    if payload.get("argv"):  # how Relay stores a parsed shell payload
        return payload["argv"]
    command = payload["command"]
    return [command, *payload["args"]] if "args" in payload else shlex.split(command)


def main(target, queue_name, max_jobs):
    outbox = queue.Queue()  # what we send; grpc reads it from a thread of its own, until None
    outbox.put(pb.WorkerMessage(hello=pb.Hello(worker_id="example", queues=[queue_name], slots=1)))
    outbox.put(pb.WorkerMessage(credit=pb.Credit(slots=1)))
    token = os.environ.get("RELAY_TOKEN")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(target) as channel:
        stream = relay_pb2_grpc.WorkersStub(channel).Work(iter(outbox.get, None), metadata=metadata)
        done = 0
        for message in stream:
            if message.WhichOneof("body") != "assignments":
                continue  # welcome, and the answers to our finish requests
            for assignment in message.assignments.jobs:
                job = assignment.job
                run = subprocess.run(argv_of(json.loads(job.payload)), capture_output=True, text=True)
                outcome = pb.Outcome(job_id=job.id, lease_token=assignment.lease_token, retryable=True)
                if run.returncode == 0:
                    outcome.outcome = "completed"
                    outcome.result = json.dumps({"exit_code": 0, "output": run.stdout.strip()})
                else:
                    outcome.outcome = "failed"
                    outcome.error.type, outcome.error.message = "ExitCode", f"exit code {run.returncode}"
                    outcome.error.exit_code = run.returncode
                done += 1
                outbox.put(pb.WorkerMessage(finish=pb.FinishRequest(request_id=done, items=[outcome])))
                if max_jobs and done >= max_jobs:
                    outbox.put(pb.WorkerMessage(goodbye=pb.Goodbye()))
                    outbox.put(None)  # ends the requests: the server answers, then ends the stream
                else:
                    outbox.put(pb.WorkerMessage(credit=pb.Credit(slots=1)))
                print(f"job {job.id}: {outcome.outcome}", flush=True)


if __name__ == "__main__":
    jobs = int(sys.argv[sys.argv.index("--jobs") + 1]) if "--jobs" in sys.argv else 0
    main(sys.argv[1], sys.argv[2], jobs)
