"""Relay's HTTP server: the native API under ``/api/v1``, the relay-rs runner protocol, server-sent
events, ``/metrics``, ``/healthz`` and ``/readyz``, with bearer-token auth. See docs/api.md.

>>> from relay import Relay
>>> from relay.server import ServerSettings, create_app, serve
>>> app = create_app(Relay(), ServerSettings())  # any ASGI server runs it  # doctest: +SKIP
>>> serve(Relay(), port=4000)  # what `relay server` does  # doctest: +SKIP
"""

from __future__ import annotations

from relay.server.app import create_app
from relay.server.scopes import Action, Grants
from relay.server.serve import serve, serve_async
from relay.server.settings import ServerSettings
from relay.server.tokens import TokenVerifier, mint_token

__all__ = [
    "Action",
    "Grants",
    "ServerSettings",
    "TokenVerifier",
    "create_app",
    "mint_token",
    "serve",
    "serve_async",
]
