"""``/api/v1/events``: server-sent events of job state changes and queue counts (see
:mod:`relay.server.feed` for how they are found, and their limits).

The stream opens with one ``queue`` event per visible queue (its counts now, without an id), then
sends each change as it is found::

    id: 3f2a9c1e-42
    event: job
    data: {"id": "...", "queue": "emails", "state": "completed", "previous_state": "running", ...}

A client that reconnects with ``Last-Event-ID`` (browsers do it by themselves), or ``?cursor=``,
gets the events it missed; ``event: reset`` means they are gone, and it should refetch what it shows.
A comment line every ``events_keepalive`` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from starlette.responses import Response, StreamingResponse

from relay.server.errors import ApiError
from relay.server.feed import ChangeFeed
from relay.server.schemas import responses
from relay.server.scopes import Action, Grants
from relay.server.state import Auth, State
from relay.types import JSON

router = APIRouter(prefix="/api/v1", tags=["events"])


def sse(event: str, data: JSON, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


async def event_stream(
    feed: ChangeFeed, grants: Grants, only: set[str], resume: int | None, keepalive: float
) -> AsyncIterator[bytes]:
    def visible(queue: str) -> bool:
        return grants.allows(Action.READ, queue) and (not only or queue in only)

    yield b"retry: 3000\n\n"
    if resume is None:
        yield sse("reset", {"reason": "the events after this cursor are gone: refetch what you show"})
        resume = feed.last_seq
    for queue in feed.queue_snapshot():
        if visible(str(queue["name"])):
            yield sse("queue", queue)
    last = resume
    while not feed.closed:
        events = feed.after(last)
        if events:
            for event in events:
                if visible(event.queue):
                    yield sse(event.type, event.data, feed.event_id(event))
            last = events[-1].seq
            continue  # look again before waiting: more may have come while these were sent
        if not await feed.wait(keepalive):
            yield b": keepalive\n\n"


@router.get(
    "/events",
    response_model=None,
    responses=responses(
        {200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}}, 403, 503
    ),
)
async def events(
    state: State,
    grants: Auth,
    queue: Annotated[list[str] | None, Query(description="only these queues (repeatable)")] = None,
    cursor: Annotated[str | None, Query(max_length=64, description="the id of the last event seen")] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Response:
    """Job state changes and queue counts, as they happen, for the queues the token may read."""
    if not grants.allows_any(Action.READ):
        raise ApiError(403, "forbidden", "this token lacks any read scope", detail={"scope": "read:*"})
    feed = state.feed
    if feed is None:
        raise ApiError(503, "events_disabled", "this server's change feed is off (RELAY_EVENTS_INTERVAL=0)")
    given = last_event_id or cursor
    resume = feed.resume_point(given)
    stream = event_stream(feed, grants, set(queue or ()), resume, state.settings.events_keepalive)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
