"""Reading the dashboard's form posts: small ``application/x-www-form-urlencoded`` bodies, checked for
their origin and CSRF token before any field is looked at.

Parsed by hand with the standard library: the forms hold a few short fields, and this keeps
python-multipart out of Relay's dependencies.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

from relay.server.dashboard.context import context_of
from relay.server.dashboard.security import CSRF_FIELD, same_origin, session_of
from relay.server.errors import ApiError

MAX_FORM_BYTES = 64 * 1024  # a form holds ids, a queue name, a token: far less than this
_LOCAL_PATH = re.compile(r"^/(?![/\\])[^\s]*$")


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a form post from one of our own pages; ApiError (403, 413, 415) otherwise."""
    if not same_origin(request.headers):
        raise ApiError(403, "cross_site", "refused: this request did not come from a page of this dashboard")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "unsupported_media_type", "expected a form (application/x-www-form-urlencoded)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, "body_too_large", "this form is too large")
    fields = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    if not context_of(request).csrf.valid(session_of(request), fields.get(CSRF_FIELD)):
        raise ApiError(403, "csrf", "refused: the form's CSRF token is missing or stale; reload the page")
    return fields


def local_path(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this server (``/ui/jobs?state=dead``), else ``default``: a
    redirect after an action never leads to another site (``//evil.example``, ``https://...``)."""
    if not value or not _LOCAL_PATH.match(value) or urlsplit(value).netloc:
        return default
    return value
