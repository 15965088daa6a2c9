"""Logging in and out, when auth is on: a person pastes a token (``relay token create``); the server
verifies it like a bearer token and keeps it in an HttpOnly, SameSite=Strict cookie for the browser
session. Each later request verifies it again, so an expired token sends them back here.
"""

from __future__ import annotations

import logging

import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from relay.server.dashboard.context import context_of
from relay.server.dashboard.forms import local_path, read_form
from relay.server.dashboard.render import page
from relay.server.dashboard.security import (
    SESSION_COOKIE,
    TOKEN_COOKIE,
    delete_cookie,
    new_session_id,
    set_cookie,
)
from relay.server.scopes import Action

log = logging.getLogger("relay.server.dashboard")
MAX_TOKEN_CHARS = 8192


async def login_form(request: Request) -> Response:
    if not context_of(request).auth_on:
        return RedirectResponse("/", status_code=303)
    next_path = local_path(request.query_params.get("next"))
    return page(request, "login.html", nav="login", next=next_path, error=None)


async def login(request: Request) -> Response:
    ctx = context_of(request)
    form = await read_form(request)
    next_path = local_path(form.get("next"))
    if ctx.verifier is None:
        return RedirectResponse(next_path, status_code=303)
    token = form.get("token", "").strip()
    error = None
    try:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise jwt.InvalidTokenError("empty or too long")
        if not ctx.verifier.verify(token).allows_any(Action.READ):
            error = "This token may not read any queue: it needs a read or admin scope."
    except jwt.InvalidTokenError as exc:
        log.info("dashboard: refused a login: %s", exc)
        error = "This token was refused: it is not valid for this server, or it has expired."
    if error is not None:
        return page(request, "login.html", status=401, nav="login", next=next_path, error=error)
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(request, response, TOKEN_COOKIE, token)
    # A new session id at login: a session id planted before it is worth nothing after.
    set_cookie(request, response, SESSION_COOKIE, new_session_id())
    return response


async def logout(request: Request) -> Response:
    await read_form(request)
    response = RedirectResponse("/ui/login?notice=logged-out", status_code=303)
    delete_cookie(request, response, TOKEN_COOKIE)
    return response
