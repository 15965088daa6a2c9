"""The worker stream's messages read into the storage seam's params (server side), and its answers.

A message that cannot be read raises :class:`BadMessage` naming the field; the stream then ends with
``INVALID_ARGUMENT`` and nothing of that message was applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from relay.client.grpc_wire import attempt_error_of, json_value
from relay.grpc.v1 import relay_pb2 as pb
from relay.storage.params import BUILTIN_KINDS, FinishItem, FinishResult, HeartbeatItem, HeartbeatResult
from relay.types import JSON, JobKind, Outcome

MAX_SLOTS = 10_000  # more slots than any one process runs: a typo, not a worker


class BadMessage(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class HelloInfo:
    worker_id: str
    queues: tuple[str, ...]
    kinds: tuple[JobKind, ...]
    slots: int
    host: str
    pid: int


def hello_of(message: pb.Hello, peer: str) -> HelloInfo:
    queues = tuple(message.queues)
    if not queues:
        raise BadMessage("hello.queues", "name at least one queue")
    for i, queue in enumerate(queues):
        if not queue or len(queue) > 128 or "\0" in queue:
            raise BadMessage(f"hello.queues[{i}]", "a queue name is 1 to 128 characters, without NUL")
    kinds = BUILTIN_KINDS
    if message.types:
        try:
            kinds = tuple(JobKind(t.lower()) for t in message.types)
        except ValueError:
            raise BadMessage("hello.types", "each type is shell, task or external") from None
    if not 1 <= message.slots <= MAX_SLOTS:
        raise BadMessage("hello.slots", f"between 1 and {MAX_SLOTS}")
    worker_id = message.worker_id or f"grpc:{peer}"
    if len(worker_id) > 255 or "\0" in worker_id:
        raise BadMessage("hello.worker_id", "at most 255 characters, without NUL")
    return HelloInfo(worker_id, queues, kinds, message.slots, message.host or peer, message.pid)


def _json(text: str, field: str) -> JSON:
    try:
        return json_value(text)
    except orjson.JSONDecodeError:
        raise BadMessage(field, "is not JSON text") from None


def heartbeat_items(message: pb.HeartbeatRequest) -> list[HeartbeatItem]:
    items = []
    for i, item in enumerate(message.items):
        where = f"heartbeat.items[{i}]"
        progress = _json(item.progress, f"{where}.progress")
        if progress is not None and (isinstance(progress, bool) or not isinstance(progress, int | float)):
            raise BadMessage(f"{where}.progress", "is a number")
        checkpoint = _json(item.checkpoint, f"{where}.checkpoint") if item.save_checkpoint else None
        items.append(
            HeartbeatItem(
                item.job_id,
                item.lease_token,
                None if progress is None else float(progress),
                checkpoint,
                item.save_checkpoint,
            )
        )
    return items


def finish_items(message: pb.FinishRequest) -> list[FinishItem]:
    items = []
    for i, item in enumerate(message.items):
        where = f"finish.items[{i}]"
        try:
            outcome = Outcome(item.outcome)
        except ValueError:
            raise BadMessage(f"{where}.outcome", "is completed, failed, cancelled or released") from None
        items.append(
            FinishItem(
                item.job_id,
                item.lease_token,
                outcome,
                result=_json(item.result, f"{where}.result"),
                error=attempt_error_of(item.error) if item.HasField("error") else None,
                retry_delay=max(0.0, item.retry_delay),
                retryable=item.retryable,
            )
        )
    return items


def heartbeat_reply(request_id: int, result: HeartbeatResult) -> pb.ServerMessage:
    return pb.ServerMessage(
        heartbeat=pb.HeartbeatReply(
            request_id=request_id,
            extended=sorted(result.extended),
            lost=sorted(result.lost),
            cancel_requested=sorted(result.cancel_requested),
        )
    )


def finish_reply(request_id: int, results: list[FinishResult]) -> pb.ServerMessage:
    return pb.ServerMessage(
        finish=pb.FinishReply(
            request_id=request_id,
            results=[
                pb.FinishedJob(job_id=r.job_id, state=r.state.value if r.state is not None else "")
                for r in results
            ],
        )
    )
