"""The API's routes, one module per noun."""

from __future__ import annotations

from fastapi import APIRouter

from relay.server.routes import dlq, events, jobs, ops, queues, runner, schedules, workflows

ROUTERS: tuple[APIRouter, ...] = (
    jobs.router,
    dlq.router,
    queues.router,
    schedules.router,
    workflows.router,
    events.router,
    runner.router,
    ops.router,
)
