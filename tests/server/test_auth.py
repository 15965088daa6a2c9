"""Bearer-token auth: the JWT attack matrix, the settings that refuse to start, and minting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from relay.app import Relay
from relay.errors import ConfigurationError
from relay.server import Action, ServerSettings, TokenVerifier, create_app, mint_token

from .helpers import SECRET, api_client

GENERIC_401 = {
    "error": {"code": "unauthorized", "message": "a valid bearer token is required", "field": None}
}
SHELL = {"type": "shell", "payload": {"command": "/bin/true"}}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A token built by hand: what an attacker can send that no library would make."""
    head = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = sign(head.encode()) if sign is not None else b""
    return f"{head}.{b64(signature)}"


def pem(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


def public_pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


def claims(**extra: Any) -> dict[str, Any]:
    return {"scope": "read:* enqueue:*", "exp": int(time.time()) + 300, **extra}


async def status_with(relay: Relay, settings: ServerSettings, token: str | None) -> tuple[int, Any]:
    async with api_client(relay, settings, token) as api:
        response = await api.get("/api/v1/jobs")
        return response.status_code, response.json()


@pytest.fixture
def rs256(rsa_key: Any) -> ServerSettings:
    return ServerSettings(
        events_interval=0, jwt_public_key=public_pem(rsa_key), jwt_audience="relay", jwt_issuer="me"
    )


def attacks(rsa_key: Any) -> Iterator[tuple[str, str]]:
    """(name, token) for every token an RS256 server (audience relay, issuer me) must refuse."""
    good = claims(aud="relay", iss="me")
    public = public_pem(rsa_key).encode()
    yield "alg none", forge({"alg": "none", "typ": "JWT"}, good)
    yield "alg None, signature kept", forge({"alg": "None"}, good, lambda _: b"x")
    yield "wrong algorithm RS512", jwt.encode(good, rsa_key, algorithm="RS512")
    yield "wrong algorithm PS256", jwt.encode(good, rsa_key, algorithm="PS256")
    yield (
        "other key",
        jwt.encode(good, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    )
    yield (
        "HS256 signed with the RS256 public key",
        forge({"alg": "HS256", "typ": "JWT"}, good, lambda m: hmac.new(public, m, hashlib.sha256).digest()),
    )
    yield "expired", jwt.encode({**good, "exp": int(time.time()) - 5}, rsa_key, "RS256")
    yield "no exp", jwt.encode({k: v for k, v in good.items() if k != "exp"}, rsa_key, "RS256")
    yield "not yet valid", jwt.encode({**good, "nbf": int(time.time()) + 300}, rsa_key, "RS256")
    yield "wrong aud", jwt.encode({**good, "aud": "someone-else"}, rsa_key, "RS256")
    yield "no aud", jwt.encode({k: v for k, v in good.items() if k != "aud"}, rsa_key, "RS256")
    yield "wrong iss", jwt.encode({**good, "iss": "mallory"}, rsa_key, "RS256")
    valid = jwt.encode(good, rsa_key, "RS256")
    head, payload, signature = valid.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["scope"] = "admin:*"
    yield "tampered payload", f"{head}.{b64(json.dumps(tampered).encode())}.{signature}"
    yield "garbage", "not-a-token"
    yield "empty segments", ".."


async def test_rs256_attack_matrix(relay: Relay, rsa_key: Any, rs256: ServerSettings) -> None:
    valid = jwt.encode(claims(aud="relay", iss="me"), rsa_key, "RS256")
    assert (await status_with(relay, rs256, valid))[0] == 200
    for name, token in attacks(rsa_key):
        assert await status_with(relay, rs256, token) == (401, GENERIC_401), name


async def test_hs256_server_refuses_other_algorithms_and_keys(relay: Relay, rsa_key: Any) -> None:
    settings = ServerSettings(events_interval=0, jwt_secret=SECRET)
    assert (await status_with(relay, settings, jwt.encode(claims(), SECRET, "HS256")))[0] == 200
    refused = {
        "alg none": forge({"alg": "none"}, claims()),
        "HS512 with the secret": jwt.encode(claims(), SECRET + "!" * 40, "HS512"),
        "another secret": jwt.encode(claims(), "x" * 40, "HS256"),
        "RS256 token": jwt.encode(claims(), rsa_key, "RS256"),
        "expired": jwt.encode({**claims(), "exp": int(time.time()) - 5}, SECRET, "HS256"),
        "no exp": jwt.encode({"scope": "read:*"}, SECRET, "HS256"),
    }
    for name, token in refused.items():
        assert await status_with(relay, settings, token) == (401, GENERIC_401), name


async def test_missing_or_malformed_authorization(relay: Relay) -> None:
    settings = ServerSettings(events_interval=0, jwt_secret=SECRET)
    token = mint_token(SECRET, "enqueue:*", 60)
    async with api_client(relay, settings) as api:
        for headers in (
            {},
            {"Authorization": f"Basic {token}"},
            {"Authorization": "Bearer"},
            {"Authorization": token},
        ):
            response = await api.post("/api/v1/jobs", json=SHELL, headers=headers)
            assert (response.status_code, response.json()) == (401, GENERIC_401), headers
            assert response.headers["WWW-Authenticate"] == "Bearer"
        # The refused requests never reached a handler: nothing was enqueued.
        assert await relay.storage.queue_list() == []
        for public in ("/healthz", "/readyz", "/openapi.json"):
            assert (await api.get(public)).status_code == 200, public
        assert (await api.get("/metrics")).status_code == 401
        assert (await api.get("/v1/next", params={"queue": "q"})).status_code == 401


async def test_es256_tokens_minted_and_verified(relay: Relay, ec_key: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "public.pem"
    key_file.write_text(public_pem(ec_key))
    settings = ServerSettings(events_interval=0, jwt_public_key=str(key_file))
    token = mint_token(pem(ec_key), "read:*", "1h", subject="ops")
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert (await status_with(relay, settings, token))[0] == 200
    other = mint_token(pem(ec.generate_private_key(ec.SECP256R1())), "read:*", "1h")
    assert (await status_with(relay, settings, other))[0] == 401


def test_mint_token_claims(rsa_key: Any) -> None:
    token = mint_token(
        pem(rsa_key), ["enqueue:emails", "read"], "30m", subject="svc", audience="relay", now=1000
    )
    decoded = jwt.decode(
        token, rsa_key.public_key(), algorithms=["RS256"], audience="relay", options={"verify_exp": False}
    )
    assert decoded == {
        "scope": "enqueue:emails read:*",
        "iat": 1000,
        "exp": 2800,
        "sub": "svc",
        "aud": "relay",
    }
    grants = TokenVerifier(SECRET.encode(), "HS256").verify(mint_token(SECRET, "admin:billing-*", 60))
    assert grants.allows(Action.ADMIN, "billing-eu")
    assert grants.allows(Action.READ, "billing-eu")  # admin implies read
    assert not grants.allows(Action.ADMIN, "emails")
    assert not grants.allows(Action.ENQUEUE, "billing-eu")
    with pytest.raises(ConfigurationError, match="unknown action"):
        mint_token(SECRET, "delete:*", 60)
    with pytest.raises(ConfigurationError, match="at least one scope"):
        mint_token(SECRET, "", 60)
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        mint_token("short", "read:*", 60)
    with pytest.raises(ConfigurationError, match="ttl"):
        mint_token(SECRET, "read:*", "forever")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (ServerSettings(host="0.0.0.0"), "beyond loopback"),
        (ServerSettings(host="::"), "beyond loopback"),
        (ServerSettings(host="relay.example.com"), "beyond loopback"),
        (ServerSettings(auth="required"), "RELAY_AUTH=required"),
        (ServerSettings(auth="sometimes"), "'auto' or 'required'"),
        (ServerSettings(jwt_secret="too-short"), "at least 32 bytes"),
        (ServerSettings(jwt_secret=SECRET, jwt_public_key="x"), "not both"),
        (ServerSettings(jwt_secret=SECRET, jwt_algorithm="RS256"), "RELAY_JWT_ALGORITHM"),
        (ServerSettings(jwt_public_key="/no/such/key.pem"), "cannot read the key file"),
        (ServerSettings(jwt_public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"), "PEM"),
    ],
)
def test_server_refuses_to_start(relay: Relay, settings: ServerSettings, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_app(relay, settings)


def test_auth_decision() -> None:
    assert not ServerSettings().auth_required
    assert not ServerSettings(host="localhost").auth_required
    assert not ServerSettings(host="::1").auth_required
    assert ServerSettings(host="0.0.0.0", jwt_secret=SECRET).auth_required
    assert ServerSettings(jwt_secret=SECRET).auth_required  # a configured key turns auth on
    env = {"RELAY_HOST": "0.0.0.0", "RELAY_PORT": "8080", "RELAY_JWT_SECRET": SECRET, "RELAY_MAX_BATCH": "5"}
    settings = ServerSettings.from_env(env, port=9000).check()
    assert (settings.host, settings.port, settings.max_batch, settings.auth_required) == (
        "0.0.0.0",
        9000,
        5,
        True,
    )
    with pytest.raises(ConfigurationError, match="RELAY_PORT"):
        ServerSettings.from_env({"RELAY_PORT": "http"})
