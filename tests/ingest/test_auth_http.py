"""Each authorization mode over real HTTP: right and wrong credentials, expiry, rotation."""

from __future__ import annotations

import base64
import time

import pytest
from pydantic import SecretStr as _secret

from ingest.auth import sign
from ingest.oauth import TokenIssuer

pytestmark = pytest.mark.kafka

BODY = b'{"eventId": "auth-1", "eventType": "something_new"}'


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "status"),
    [
        pytest.param("Bearer current-token", 200, id="current-value"),
        pytest.param("bearer current-token", 200, id="scheme-case-insensitive"),
        pytest.param(_basic("eightbyeight", "old-password"), 200, id="rotated-out-value-still-on"),
        pytest.param("Bearer wrong-token", 401, id="wrong-token"),
        pytest.param(_basic("eightbyeight", "nope"), 401, id="wrong-basic"),
        pytest.param(None, 401, id="missing"),
    ],
)
async def test_static_authorization_header(kafka_settings, start_ingester, header, status):
    settings = kafka_settings.model_copy(
        update={
            "authorization": (
                _secret("Bearer current-token"),
                _secret(_basic("eightbyeight", "old-password")),
            )
        }
    )
    async with start_ingester(settings) as ingester:
        answer_status, answer = await ingester.post(
            BODY, {"Authorization": header} if header else {}
        )
        assert answer_status == status
        if status == 401:
            assert answer["error"] == "unauthorized"
            assert ingester.metric("wapipe_ingest_auth_failures_total", reason=(
                "missing_authorization" if header is None else "wrong_authorization"
            )) == 1  # fmt: skip


async def test_oauth_client_credentials_flow(kafka_settings, start_ingester, read_raw):
    settings = kafka_settings.model_copy(
        update={"oauth_clients": (_secret("sender-8x8:s3cret"),), "oauth_token_ttl_seconds": 600}
    )
    async with start_ingester(settings) as ingester:
        token_url = ingester.url("/oauth/token")
        # Client authentication in the form body (RFC 6749 §2.3.1)...
        async with ingester.session.post(token_url, data={
            "grant_type": "client_credentials", "client_id": "sender-8x8",
            "client_secret": "s3cret", "scope": "webhooks",
        }) as response:  # fmt: skip
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            grant = await response.json()
        assert grant["token_type"] == "Bearer"
        assert grant["expires_in"] == 600
        assert grant["scope"] == "webhooks"
        # ... or with HTTP Basic.
        async with ingester.session.post(
            token_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": _basic("sender-8x8", "s3cret")},
        ) as response:
            assert response.status == 200
            second = await response.json()

        for token in (grant["access_token"], second["access_token"]):
            status, _ = await ingester.post(BODY, {"Authorization": f"Bearer {token}"})
            assert status == 200
        status, answer = await ingester.post(BODY, {"Authorization": "Bearer not-a-token"})
        assert (status, answer["error"]) == (401, "unauthorized")

        expired = TokenIssuer.from_settings(settings).issue("sender-8x8", now=time.time() - 1200)
        status, _ = await ingester.post(BODY, {"Authorization": f"Bearer {expired}"})
        assert status == 401
        assert ingester.metric("wapipe_ingest_auth_failures_total", reason="expired_token") == 1
    await read_raw(settings, 2)


@pytest.mark.parametrize(
    ("form", "headers", "status", "error"),
    [
        pytest.param({"grant_type": "client_credentials", "client_id": "sender-8x8",
                      "client_secret": "wrong"}, {}, 401, "invalid_client", id="wrong-secret"),
        pytest.param({"grant_type": "client_credentials", "client_id": "someone",
                      "client_secret": "s3cret"}, {}, 401, "invalid_client", id="unknown-client"),
        pytest.param({"grant_type": "password", "client_id": "sender-8x8",
                      "client_secret": "s3cret"}, {}, 400, "unsupported_grant_type",
                     id="wrong-grant"),
        pytest.param({"grant_type": "client_credentials"}, {"Authorization": "Basic !!!"}, 400,
                     "invalid_request", id="malformed-basic"),
    ],
)  # fmt: skip
async def test_oauth_token_refusals(kafka_settings, start_ingester, form, headers, status, error):
    settings = kafka_settings.model_copy(update={"oauth_clients": (_secret("sender-8x8:s3cret"),)})
    async with (
        start_ingester(settings) as ingester,
        ingester.session.post(ingester.url("/oauth/token"), data=form, headers=headers) as response,
    ):
        assert response.status == status
        assert (await response.json())["error"] == error


async def test_oauth_and_static_values_combine(kafka_settings, start_ingester):
    settings = kafka_settings.model_copy(update={
        "oauth_clients": (_secret("sender-8x8:s3cret"),),
        "authorization": (_secret("Bearer static-value"),),
    })  # fmt: skip
    token = TokenIssuer.from_settings(settings).issue("sender-8x8")
    async with start_ingester(settings) as ingester:
        assert (await ingester.post(BODY, {"Authorization": f"Bearer {token}"}))[0] == 200
        assert (await ingester.post(BODY, {"Authorization": "Bearer static-value"}))[0] == 200
        assert (await ingester.post(BODY, {"Authorization": "Bearer other"}))[0] == 401


@pytest.mark.parametrize(
    ("signature", "status"),
    [
        pytest.param(sign("new-secret", BODY), 200, id="hex-current-secret"),
        pytest.param(sign("old-secret", BODY), 200, id="hex-rotated-secret"),
        pytest.param("sha256=" + sign("new-secret", BODY), 200, id="prefixed"),
        pytest.param(
            base64.b64encode(bytes.fromhex(sign("new-secret", BODY))).decode(), 200, id="base64"
        ),
        pytest.param(sign("new-secret", BODY + b" "), 401, id="other-body"),
        pytest.param(sign("unknown", BODY), 401, id="unknown-secret"),
        pytest.param(None, 401, id="missing"),
    ],
)
async def test_signature_check(kafka_settings, start_ingester, read_raw, signature, status):
    settings = kafka_settings.model_copy(
        update={"webhook_secret": (_secret("new-secret"), _secret("old-secret"))}
    )
    async with start_ingester(settings) as ingester:
        headers = {"X-8x8-Signature": signature} if signature else {}
        assert (await ingester.post(BODY, headers))[0] == status
    if status == 200:
        [record] = await read_raw(settings, 1)
        assert dict(record.headers)["wapipe-signature"] == b"valid"


@pytest.mark.parametrize(
    ("allowed", "proxies", "forwarded_for", "status"),
    [
        pytest.param("8x8", "", None, 403, id="loopback-is-not-8x8"),
        pytest.param("127.0.0.0/8", "", None, 200, id="loopback-allowed"),
        pytest.param("8x8", "127.0.0.1/32", "34.142.20.188", 200, id="8x8-behind-trusted-proxy"),
        pytest.param("8x8", "127.0.0.1/32", "203.0.113.9", 403, id="stranger-behind-proxy"),
        pytest.param("8x8", "", "34.142.20.188", 403, id="forwarded-for-from-untrusted-peer"),
        pytest.param(
            "8x8", "127.0.0.1/32", "34.142.20.188, 203.0.113.9", 403, id="spoofed-leftmost-hop"
        ),
    ],
)
async def test_source_networks(
    kafka_settings, settings_for, start_ingester, allowed, proxies, forwarded_for, status
):
    settings = settings_for(
        **kafka_settings.model_dump(exclude={"allowed_networks", "trusted_proxies"}),
        allowed_networks=allowed,
        trusted_proxies=proxies,
    )
    async with start_ingester(settings) as ingester:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        answer_status, answer = await ingester.post(BODY, headers)
        assert answer_status == status
        if status == 403:
            assert answer["error"] == "forbidden"
