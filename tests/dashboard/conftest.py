"""Fixtures for the dashboard tests: an in-process app with its lifespan, and a real browser."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.app import Relay
from relay.server import ServerSettings, create_app

from .helpers import relay_on

BASE = "http://localhost:4000"  # a loopback name: with auth off, the dashboard answers no other
SECRET = "dashboard-test-secret-that-is-at-least-32-bytes"
_CSRF = re.compile(r'name="relay-csrf" content="([0-9a-f]{64})"')


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    app = relay_on(tmp_path / "relay.db")
    yield app
    app.close()


@asynccontextmanager
async def dashboard(relay: Relay, settings: ServerSettings | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the app in-process: it keeps cookies and sends our Origin on posts."""
    app = create_app(relay, settings or ServerSettings(events_interval=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def post_form(
    client: httpx.AsyncClient, path: str, fields: dict[str, str], *, from_page: str = "/", **headers: Any
) -> httpx.Response:
    """Post a form as our own page would: the CSRF token of this session, and our Origin."""
    token = csrf_of((await client.get(from_page)).text)
    sent = {"origin": BASE, "sec-fetch-site": "same-origin"} | {
        k.replace("_", "-"): v for k, v in headers.items()
    }
    return await client.post(path, data={"csrf": token, **fields}, headers=sent)
