"""Bearer tokens: JWTs, with one pinned algorithm, verified by :class:`TokenVerifier`, minted by
:func:`mint_token` (``relay token create``).

The algorithm is never taken from the token: a server with a secret accepts HS256 only; a server with
a public key accepts the one algorithm of that key's type (RS256 for RSA, ES256 for P-256). So
``alg: none``, an HS256 token "signed" with the public key, and any other algorithm are all refused.
``exp`` is required; ``aud`` and ``iss`` are checked when the server is configured with them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from relay.errors import ConfigurationError, InvalidJobError
from relay.jobs.durations import parse_duration
from relay.server.scopes import Grants, validate_scope
from relay.server.settings import ServerSettings

ALGORITHMS = ("HS256", "RS256", "ES256")
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key must be at least as long as the hash


def _pem_text(value: str | bytes) -> bytes:
    """PEM bytes from PEM text or from the path of a PEM file."""
    raw = value.encode() if isinstance(value, str) else value
    if raw.lstrip().startswith(b"-----BEGIN"):
        return raw
    try:
        return Path(raw.decode()).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the key file {raw.decode()!r}: {exc.strerror}") from None


def _algorithm_for(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
        raise ConfigurationError(f"ES256 needs a P-256 key, not {key.curve.name}")
    raise ConfigurationError(f"unsupported key type {type(key).__name__}: use an RSA or a P-256 EC key")


def _check_secret(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"an HS256 secret must be at least {MIN_SECRET_BYTES} bytes long")
    return raw


def _pinned(derived: str, configured: str | None) -> str:
    if configured is not None and configured.upper() != derived:
        raise ConfigurationError(
            f"RELAY_JWT_ALGORITHM is {configured}, but the key configured is for {derived}"
        )
    return derived


@dataclass(frozen=True)
class TokenVerifier:
    key: Any  # the HS256 secret (bytes) or a public key object
    algorithm: str
    audience: str | None = None
    issuer: str | None = None

    @classmethod
    def from_settings(cls, s: ServerSettings) -> TokenVerifier | None:
        """The verifier for these settings; None when no key is configured."""
        if s.jwt_secret is not None:
            return cls(
                _check_secret(s.jwt_secret), _pinned("HS256", s.jwt_algorithm), s.jwt_audience, s.jwt_issuer
            )
        if s.jwt_public_key is not None:
            try:
                key = load_pem_public_key(_pem_text(s.jwt_public_key))
            except ValueError as exc:
                raise ConfigurationError(f"RELAY_JWT_PUBLIC_KEY is not a PEM public key: {exc}") from None
            return cls(key, _pinned(_algorithm_for(key), s.jwt_algorithm), s.jwt_audience, s.jwt_issuer)
        return None

    def verify(self, token: str) -> Grants:
        """The grants of a valid token; raises ``jwt.InvalidTokenError`` for any other."""
        claims = jwt.decode(
            token,
            self.key,
            algorithms=[self.algorithm],
            audience=self.audience,
            issuer=self.issuer,
            options={"require": ["exp"], "verify_aud": self.audience is not None},
        )
        subject = claims.get("sub")
        return Grants.from_claim(claims.get("scope", ""), subject if isinstance(subject, str) else None)


def mint_token(
    key: str | bytes,
    scopes: str | Sequence[str],
    ttl: float | str | timedelta,
    *,
    subject: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token granting ``scopes`` for ``ttl`` (seconds, ``timedelta`` or ``"30d"``).

    ``key`` is an HS256 secret (at least 32 bytes), or a PEM private key (text or file path) whose
    type picks RS256 or ES256. Raises ConfigurationError (a ValueError) for a bad scope, ttl or key.

    >>> token = mint_token("s" * 32, "enqueue:emails read:*", "1h", subject="billing")
    >>> TokenVerifier(b"s" * 32, "HS256").verify(token).subject
    'billing'
    """
    try:
        seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else parse_duration(ttl, "ttl")
    except InvalidJobError as exc:
        raise ConfigurationError(f"ttl: {exc.message}") from None
    if seconds <= 0:
        raise ConfigurationError("ttl must be positive")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {"scope": validate_scope(scopes), "iat": issued, "exp": issued + int(seconds)}
    claims.update({k: v for k, v in (("sub", subject), ("aud", audience), ("iss", issuer)) if v is not None})
    signing_key, algorithm = _signing_key(key)
    return jwt.encode(claims, signing_key, algorithm=algorithm)


def _signing_key(key: str | bytes) -> tuple[Any, str]:
    raw = key.encode() if isinstance(key, str) else key
    # os.path.isfile, unlike Path.is_file, answers False (not an error) for a secret too long for a path.
    if raw.lstrip().startswith(b"-----BEGIN") or os.path.isfile(raw.decode(errors="replace")):
        try:
            private = load_pem_private_key(_pem_text(raw), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"not an unencrypted PEM private key: {exc}") from None
        return private, _algorithm_for(private)
    return _check_secret(raw), "HS256"
