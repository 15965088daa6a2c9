"""The dashboard's defences against other web sites: headers, the session cookie, CSRF tokens, Origin.

- Every dashboard response carries a strict Content-Security-Policy: scripts, styles and data only
  from this origin, no inline script or style, no framing, forms only to this origin. Even markup that
  escaped the templates could not run.
- A random session id lives in an HttpOnly, SameSite=Strict cookie (set on the first page). Each form
  carries a CSRF token, an HMAC of that id under the server's key: another site can neither read the
  cookie nor compute the token.
- A POST must also come from this origin: ``Sec-Fetch-Site``, when the browser sends it, must be
  ``same-origin``, and ``Origin`` (or, without it, ``Referer``) must name this host.

The HMAC key comes from the JWT key when one is configured (so that several servers behind one load
balancer accept each other's forms), else it is random per process (a restart invalidates open forms,
which the next page view renews).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from relay.server.settings import ServerSettings

SESSION_COOKIE = "relay_session"
TOKEN_COOKIE = "relay_token"  # the bearer token a person logged in with (auth on)
CSRF_FIELD = "csrf"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class CsrfGuard:
    """CSRF tokens bound to the session cookie."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> CsrfGuard:
        material = settings.jwt_secret or settings.jwt_public_key
        if material is None:
            return cls(secrets.token_bytes(32))
        return cls(hmac.new(material.encode(), b"relay-dashboard-csrf", hashlib.sha256).digest())

    def token(self, session: str) -> str:
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

    def valid(self, session: str | None, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.token(session), token)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def session_of(request: Request) -> str | None:
    value = request.cookies.get(SESSION_COOKIE)
    # Only ids this server could have made: anything else is ignored (and replaced on the next page).
    return value if value and 20 <= len(value) <= 64 and value.isascii() else None


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """A cookie for the whole dashboard that scripts cannot read and other sites never send."""
    secure = request.url.scheme == "https"
    response.set_cookie(name, value, path="/", httponly=True, samesite="strict", secure=secure)


def delete_cookie(request: Request, response: Response, name: str) -> None:
    secure = request.url.scheme == "https"
    response.delete_cookie(name, path="/", httponly=True, samesite="strict", secure=secure)


def same_origin(headers: Headers) -> bool:
    """Whether a state-changing request comes from a page of this server (see the module docstring)."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    source = headers.get("origin") or headers.get("referer")
    host = headers.get("host")
    if not source or not host or source == "null":
        return False
    # The host and port only, not the scheme: behind a TLS proxy the server itself sees http.
    return urlsplit(source).netloc.lower() == host.lower()
