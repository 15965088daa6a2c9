"""The server's settings, from arguments or ``RELAY_*`` environment variables.

Auth is decided here, once, before the server binds: it is on when ``RELAY_AUTH=required``, when a
key is configured, or when the server listens beyond loopback; and a server that needs auth but has
no key refuses to start (:meth:`ServerSettings.check`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from relay.errors import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000
DEFAULT_GRPC_PORT = 50051
MiB = 1024 * 1024
AUTH_MODES = ("auto", "required")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine. Unknown host names count as not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, not {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


def _address(env: Mapping[str, str], name: str, host: str, port: int) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``, or ``:port`` for the default host) from ``name``."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return host, port
    given_host, sep, given_port = raw.rpartition(":")
    if not sep or not given_port.isdigit():
        raise ConfigurationError(f"{name} must be host:port, not {raw!r}")
    return given_host.strip("[]") or host, int(given_port)


@dataclass(frozen=True)
class ServerSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    auth: str = "auto"  # "required": tokens even on loopback (also implied by a configured key)
    jwt_secret: str | None = None  # HS256
    jwt_public_key: str | None = None  # RS256 / ES256: PEM text, or the path of a PEM file
    jwt_algorithm: str | None = None  # default: HS256 for a secret, from the key's type otherwise
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    max_body_bytes: int = MiB
    max_json_depth: int = 64
    max_batch: int = 1000
    events_interval: float = 1.0  # seconds between polls of the change feed; 0 turns it off
    events_keepalive: float = 15.0  # seconds between keep-alive comments on an idle event stream
    maintenance: bool = True  # take part in the leader election for reaper, scheduler, pruner
    allow_shell: bool = True  # accept shell jobs with "shell": true (run by /bin/sh -c)
    # The gRPC API beside HTTP (relay.server.grpc). Off in settings built in code, on by default in
    # from_env (the CLI): RELAY_GRPC_ADDR=host:port, RELAY_GRPC=off. Port 0: a free port, logged.
    grpc: bool = False
    grpc_host: str = DEFAULT_HOST
    grpc_port: int = DEFAULT_GRPC_PORT
    grpc_tls_cert: str | None = None  # PEM files: TLS when both are set
    grpc_tls_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Settings from ``RELAY_*`` variables; keyword overrides that are not None win."""
        e = os.environ if env is None else env
        grpc_host, grpc_port = _address(e, "RELAY_GRPC_ADDR", DEFAULT_HOST, DEFAULT_GRPC_PORT)
        settings = cls(
            host=e.get("RELAY_HOST") or DEFAULT_HOST,
            port=_int(e, "RELAY_PORT", DEFAULT_PORT),
            auth=(e.get("RELAY_AUTH") or "auto").strip().lower(),
            jwt_secret=e.get("RELAY_JWT_SECRET") or None,
            jwt_public_key=e.get("RELAY_JWT_PUBLIC_KEY") or None,
            jwt_algorithm=e.get("RELAY_JWT_ALGORITHM") or None,
            jwt_audience=e.get("RELAY_JWT_AUDIENCE") or None,
            jwt_issuer=e.get("RELAY_JWT_ISSUER") or None,
            max_body_bytes=_int(e, "RELAY_MAX_BODY_BYTES", MiB),
            max_json_depth=_int(e, "RELAY_MAX_JSON_DEPTH", cls.max_json_depth),
            max_batch=_int(e, "RELAY_MAX_BATCH", cls.max_batch),
            events_interval=_float(e, "RELAY_EVENTS_INTERVAL", cls.events_interval),
            maintenance=_bool(e, "RELAY_SERVER_MAINTENANCE", cls.maintenance),
            allow_shell=_bool(e, "RELAY_ALLOW_SHELL", cls.allow_shell),
            grpc=_bool(e, "RELAY_GRPC", True),
            grpc_host=grpc_host,
            grpc_port=grpc_port,
            grpc_tls_cert=e.get("RELAY_GRPC_TLS_CERT") or None,
            grpc_tls_key=e.get("RELAY_GRPC_TLS_KEY") or None,
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def auth_required(self) -> bool:
        has_key = self.jwt_secret is not None or self.jwt_public_key is not None
        return self.auth == "required" or has_key or self.beyond_loopback is not None

    @property
    def beyond_loopback(self) -> str | None:
        """The first listen address (HTTP's, then gRPC's) that is not loopback, if any."""
        if not is_loopback(self.host):
            return self.host
        if self.grpc and not is_loopback(self.grpc_host):
            return self.grpc_host
        return None

    def check(self) -> ServerSettings:
        """Raise ConfigurationError for settings the server must not start with; else return self."""
        if self.auth not in AUTH_MODES:
            raise ConfigurationError(f"RELAY_AUTH must be 'auto' or 'required', not {self.auth!r}")
        if self.jwt_secret is not None and self.jwt_public_key is not None:
            raise ConfigurationError("set RELAY_JWT_SECRET or RELAY_JWT_PUBLIC_KEY, not both")
        if self.auth_required and self.jwt_secret is None and self.jwt_public_key is None:
            beyond = self.beyond_loopback
            why = "RELAY_AUTH=required" if beyond is None else f"it listens on {beyond}, beyond loopback"
            raise ConfigurationError(
                f"the server needs auth ({why}) but has no key: set RELAY_JWT_SECRET (HS256) "
                "or RELAY_JWT_PUBLIC_KEY (RS256/ES256)"
            )
        if not 0 <= self.port < 65536:
            raise ConfigurationError(f"port must be between 0 and 65535, not {self.port}")
        if not 0 <= self.grpc_port < 65536:
            raise ConfigurationError(f"the gRPC port must be between 0 and 65535, not {self.grpc_port}")
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ConfigurationError("gRPC TLS needs both a certificate and a key (RELAY_GRPC_TLS_CERT/KEY)")
        for name in ("max_body_bytes", "max_json_depth", "max_batch"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1")
        return self
