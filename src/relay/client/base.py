"""What the sync and the async client share: where the server is, the token, and reading a response."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from relay.client.errors import ServerUnavailableError

DEFAULT_TIMEOUT = 30.0  # seconds for one request


def client_options(
    base_url: str | None, token: str | None, env: Mapping[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """The server URL and the request headers: arguments first, then RELAY_SERVER_URL and RELAY_TOKEN."""
    e = os.environ if env is None else env
    url = base_url or e.get("RELAY_SERVER_URL") or "http://127.0.0.1:4000"
    bearer = token if token is not None else e.get("RELAY_TOKEN")
    headers = {"Accept": "application/json", "User-Agent": "relay-client"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    return url.rstrip("/"), headers


def response_body(response: httpx.Response) -> Any:
    """The decoded JSON body, or None when there is none (204) or it is not JSON (a proxy's error page)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def unreachable(base_url: str, exc: Exception) -> ServerUnavailableError:
    return ServerUnavailableError(f"cannot reach the Relay server at {base_url}: {exc}")
