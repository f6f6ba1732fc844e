"""Who may post (ingest.auth, ingest.oauth): static header, OAuth tokens, networks, signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
import pytest

from ingest.auth import AuthFailure, AuthMethod, Gatekeeper, SignatureCheck, Verdict, sign
from ingest.oauth import TokenIssuer
from wapipe.settings import Settings

STATIC_BEARER = "Bearer abc"
STATIC_BASIC = "Basic dXNlcjpwdw=="
CLIENT_ID, CLIENT_SECRET = "sender", "s3cret-of-the-sender"
FIRST_SECRET, SECOND_SECRET = "first-webhook-secret", "second-webhook-secret"
# Signing keys of at least 32 bytes (RFC 7518 3.2), so PyJWT does not warn.
SHARED_KEY = "a-shared-signing-key-of-at-least-32-bytes"
OTHER_KEY = b"another-signing-key-of-at-least-32-bytes"
BODY = b'{"namespace":"ChatApps","eventType":"inbound_message_received","payload":{"umid":"u1"}}'

# 8x8's published source addresses (8x8's webhook docs, "Delivery behaviour of the sender").
EIGHT_BY_EIGHT = [
    "52.220.117.120",
    "52.220.109.9",
    "18.136.13.204",
    "34.101.157.207",
    "34.101.215.77",
    "34.34.217.244",
    "34.101.109.67",
    "34.142.20.188",
    "34.142.64.178",
    "34.39.69.103",
    "34.39.114.155",
    "50.112.250.190",
    "100.21.170.42",
    "52.10.10.63",
]


def gatekeeper(**settings: Any) -> Gatekeeper:
    configured = Settings(**settings)
    return Gatekeeper(configured, TokenIssuer.from_settings(configured))


def issuer(**settings: Any) -> TokenIssuer:
    tokens = TokenIssuer.from_settings(Settings(**settings))
    assert tokens is not None
    return tokens


def digest(secret: str, body: bytes = BODY) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


STATIC = Verdict(method=AuthMethod.STATIC)
OAUTH = Verdict(method=AuthMethod.OAUTH)
MISSING = Verdict(failure=AuthFailure.MISSING_AUTHORIZATION)
WRONG = Verdict(failure=AuthFailure.WRONG_AUTHORIZATION)
EXPIRED = Verdict(failure=AuthFailure.EXPIRED_TOKEN)


# --------------------------------------------------------------------------- nothing configured


def test_no_checks_configured_lets_anyone_in() -> None:
    gate = gatekeeper()

    assert gate.open_to_anyone is True
    verdict = gate.check_authorization(None)
    assert verdict == Verdict(method=AuthMethod.NONE)
    assert verdict.ok
    assert gate.check_authorization("Bearer anything").method is AuthMethod.NONE
    assert gate.network_allowed("127.0.0.1")
    assert gate.network_allowed("not-an-address")
    assert gate.check_signature(BODY, None) is SignatureCheck.NOT_CONFIGURED
    assert gate.check_signature(BODY, "garbage") is SignatureCheck.NOT_CONFIGURED


def test_trusted_proxies_alone_are_not_a_check() -> None:
    assert gatekeeper(trusted_proxies="10.0.0.0/8").open_to_anyone is True


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"authorization": STATIC_BEARER}, id="static"),
        pytest.param({"oauth_clients": f"{CLIENT_ID}:{CLIENT_SECRET}"}, id="oauth"),
        pytest.param({"allowed_networks": "8x8"}, id="networks"),
        pytest.param({"webhook_secret": FIRST_SECRET}, id="signature"),
    ],
)
def test_any_check_closes_the_door(settings: dict[str, str]) -> None:
    assert gatekeeper(**settings).open_to_anyone is False


# --------------------------------------------------------------------------- static header


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(STATIC_BEARER, STATIC, id="bearer-right"),
        pytest.param(STATIC_BASIC, STATIC, id="basic-right-rotation"),
        pytest.param("bearer abc", STATIC, id="scheme-lower-case"),
        pytest.param("BEARER abc", STATIC, id="scheme-upper-case"),
        pytest.param("bAsIc dXNlcjpwdw==", STATIC, id="basic-scheme-mixed-case"),
        pytest.param("  Bearer abc  ", STATIC, id="surrounding-spaces"),
        pytest.param(None, MISSING, id="missing"),
        pytest.param("", MISSING, id="empty"),
        pytest.param("Bearer abd", WRONG, id="wrong-token"),
        pytest.param("Bearer ABC", WRONG, id="credentials-case-sensitive"),
        pytest.param("Basic abc", WRONG, id="right-credentials-wrong-scheme"),
        pytest.param("Bearer dXNlcjpwdw==", WRONG, id="basic-credentials-as-bearer"),
        pytest.param("abc", WRONG, id="no-scheme"),
        pytest.param("Bearer", WRONG, id="scheme-only"),
        pytest.param("Bearer abc extra", WRONG, id="trailing-junk"),
        pytest.param("Bearer ab", WRONG, id="prefix-of-token"),
    ],
)
def test_static_authorization(header: str | None, expected: Verdict) -> None:
    gate = gatekeeper(authorization=f"{STATIC_BEARER},{STATIC_BASIC}")

    assert gate.check_authorization(header) == expected


def test_configured_scheme_case_does_not_matter() -> None:
    gate = gatekeeper(authorization="bearer abc")

    assert gate.check_authorization("Bearer abc") == STATIC


def test_static_values_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("ingest.auth.hmac.compare_digest", recording)
    gate = gatekeeper(authorization=STATIC_BEARER)

    assert gate.check_authorization("Bearer xyz") == WRONG
    assert (b"xyz", b"abc") in compared


# --------------------------------------------------------------------------- OAuth tokens


def test_issued_token_verifies_and_is_accepted() -> None:
    settings = {"oauth_clients": f"{CLIENT_ID}:{CLIENT_SECRET}"}
    tokens = issuer(**settings)

    token = tokens.issue(CLIENT_ID, scope="webhooks")

    assert tokens.verify(token) is None
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == CLIENT_ID
    assert gatekeeper(**settings).check_authorization(f"Bearer {token}") == OAUTH
    assert gatekeeper(**settings).check_authorization(f"bearer {token}") == OAUTH


def test_expired_token() -> None:
    settings = {"oauth_clients": f"{CLIENT_ID}:{CLIENT_SECRET}", "oauth_token_ttl_seconds": 60}
    tokens = issuer(**settings)

    token = tokens.issue(CLIENT_ID, now=time.time() - 2 * tokens.ttl_seconds)

    assert tokens.ttl_seconds == 60
    assert tokens.verify(token) == "expired"
    assert gatekeeper(**settings).check_authorization(f"Bearer {token}") == EXPIRED


def test_token_lives_for_the_configured_ttl() -> None:
    tokens = issuer(oauth_clients=f"{CLIENT_ID}:{CLIENT_SECRET}", oauth_token_ttl_seconds=600)

    claims = jwt.decode(tokens.issue(CLIENT_ID, now=1_000_000), options={"verify_signature": False})

    assert claims["iat"] == 1_000_000
    assert claims["exp"] == 1_000_600
    assert tokens.verify(tokens.issue(CLIENT_ID, now=time.time() - 590)) is None


def test_token_signed_by_another_key_is_invalid() -> None:
    settings = {"oauth_clients": f"{CLIENT_ID}:{CLIENT_SECRET}"}
    forged = TokenIssuer({CLIENT_ID: CLIENT_SECRET}, OTHER_KEY, 3600).issue(CLIENT_ID)

    assert issuer(**settings).verify(forged) == "invalid"
    assert gatekeeper(**settings).check_authorization(f"Bearer {forged}") == WRONG


def test_unsigned_token_is_invalid() -> None:
    now = int(time.time())
    claims = {
        "iss": "wapipe-ingest",
        "aud": "wapipe-webhooks",
        "sub": CLIENT_ID,
        "iat": now,
        "exp": now + 60,
    }
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]

    assert issuer(oauth_clients=f"{CLIENT_ID}:{CLIENT_SECRET}").verify(unsigned) == "invalid"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("a.b.c", id="three-garbage-parts"),
    ],
)
def test_malformed_token_is_invalid(token: str) -> None:
    settings = {"oauth_clients": f"{CLIENT_ID}:{CLIENT_SECRET}"}

    assert issuer(**settings).verify(token) == "invalid"
    assert gatekeeper(**settings).check_authorization(f"Bearer {token}") == WRONG


def test_tampered_token_is_invalid() -> None:
    tokens = issuer(oauth_clients=f"{CLIENT_ID}:{CLIENT_SECRET}")
    header, claims, signature = tokens.issue(CLIENT_ID).split(".")
    other = TokenIssuer({"intruder": "x"}, OTHER_KEY, 3600).issue("intruder").split(".")[1]

    assert tokens.verify(f"{header}.{other}.{signature}") == "invalid"
    assert tokens.verify(f"{header}.{claims}.{signature[:-2]}") == "invalid"


def test_token_is_only_accepted_as_bearer() -> None:
    settings = {"oauth_clients": f"{CLIENT_ID}:{CLIENT_SECRET}"}
    token = issuer(**settings).issue(CLIENT_ID)

    assert gatekeeper(**settings).check_authorization(f"Basic {token}") == WRONG


@pytest.mark.parametrize(
    "signing_key",
    [pytest.param(None, id="derived-key"), pytest.param(SHARED_KEY, id="explicit-key")],
)
def test_token_of_a_client_no_longer_configured_is_invalid(signing_key: str | None) -> None:
    before = issuer(oauth_clients="alpha:secret-a,beta:secret-b", oauth_signing_key=signing_key)
    after = issuer(oauth_clients="alpha:secret-a", oauth_signing_key=signing_key)
    beta_token = before.issue("beta")

    assert before.verify(beta_token) is None
    assert after.verify(beta_token) == "invalid"
    assert after.verify(after.issue("alpha")) is None


def test_token_for_an_unknown_subject_is_invalid() -> None:
    tokens = issuer(oauth_clients=f"{CLIENT_ID}:{CLIENT_SECRET}")

    assert tokens.verify(tokens.issue("somebody-else")) == "invalid"


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"oauth_clients": "alpha:secret-a,beta:secret-b"}, id="derived-key"),
        pytest.param(
            {"oauth_clients": "alpha:secret-a", "oauth_signing_key": SHARED_KEY},
            id="explicit-key",
        ),
    ],
)
def test_tokens_stay_valid_across_replicas_and_restarts(settings: dict[str, str]) -> None:
    replica_one, replica_two = issuer(**settings), issuer(**settings)

    token = replica_one.issue("alpha")

    assert replica_two.verify(token) is None
    assert gatekeeper(**settings).check_authorization(f"Bearer {token}") == OAUTH


def test_derived_signing_key_changes_with_the_client_secrets() -> None:
    token = issuer(oauth_clients="alpha:old-secret").issue("alpha")

    assert issuer(oauth_clients="alpha:new-secret").verify(token) == "invalid"


@pytest.mark.parametrize(
    ("client_id", "client_secret", "expected"),
    [
        pytest.param(CLIENT_ID, CLIENT_SECRET, True, id="right"),
        pytest.param(CLIENT_ID, "wrong", False, id="wrong-secret"),
        pytest.param(CLIENT_ID, "", False, id="empty-secret"),
        pytest.param(CLIENT_ID, CLIENT_SECRET + "x", False, id="secret-with-suffix"),
        pytest.param("other", "other-secret", True, id="second-client"),
        pytest.param("other", CLIENT_SECRET, False, id="another-clients-secret"),
        pytest.param("nobody", CLIENT_SECRET, False, id="unknown-id"),
        pytest.param("nobody", "\0", False, id="unknown-id-with-placeholder-secret"),
        pytest.param("", "", False, id="empty-id"),
    ],
)
def test_authenticate(client_id: str, client_secret: str, expected: bool) -> None:
    tokens = issuer(oauth_clients=f"{CLIENT_ID}:{CLIENT_SECRET},other:other-secret")

    assert tokens.authenticate(client_id, client_secret) is expected


def test_no_oauth_clients_means_no_issuer() -> None:
    assert TokenIssuer.from_settings(Settings()) is None


# --------------------------------------------------------------------------- static + OAuth


def test_static_and_oauth_combined_accept_either() -> None:
    settings = {"authorization": STATIC_BEARER, "oauth_clients": f"{CLIENT_ID}:{CLIENT_SECRET}"}
    gate = gatekeeper(**settings)
    tokens = issuer(**settings)
    expired = tokens.issue(CLIENT_ID, now=time.time() - 2 * tokens.ttl_seconds)

    assert gate.check_authorization(STATIC_BEARER) == STATIC
    assert gate.check_authorization(f"Bearer {tokens.issue(CLIENT_ID)}") == OAUTH
    assert gate.check_authorization(f"Bearer {expired}") == EXPIRED
    assert gate.check_authorization("Bearer nope") == WRONG
    assert gate.check_authorization(None) == MISSING


# --------------------------------------------------------------------------- signature


def _urlsafe_body() -> bytes:
    """A body whose signature's base64 has '+' or '/', so urlsafe base64 differs."""
    for n in range(1000):
        body = b'{"n":%d}' % n
        encoded = base64.b64encode(digest(FIRST_SECRET, body)).decode()
        if "+" in encoded and "/" in encoded:
            return body
    raise AssertionError("no such body")


URLSAFE_BODY = _urlsafe_body()


@pytest.mark.parametrize(
    ("body", "header"),
    [
        pytest.param(BODY, digest(FIRST_SECRET).hex(), id="hex"),
        pytest.param(BODY, digest(FIRST_SECRET).hex().upper(), id="hex-upper-case"),
        pytest.param(BODY, base64.b64encode(digest(FIRST_SECRET)).decode(), id="base64"),
        pytest.param(
            BODY, base64.b64encode(digest(FIRST_SECRET)).decode().rstrip("="), id="base64-unpadded"
        ),
        pytest.param(
            URLSAFE_BODY,
            base64.urlsafe_b64encode(digest(FIRST_SECRET, URLSAFE_BODY)).decode(),
            id="urlsafe-base64",
        ),
        pytest.param(BODY, "sha256=" + digest(FIRST_SECRET).hex(), id="sha256-prefix-hex"),
        pytest.param(
            BODY,
            "sha256=" + base64.b64encode(digest(FIRST_SECRET)).decode(),
            id="sha256-prefix-base64",
        ),
        pytest.param(BODY, "SHA256=" + digest(FIRST_SECRET).hex(), id="prefix-upper-case"),
        pytest.param(BODY, f"  {digest(FIRST_SECRET).hex()}  ", id="surrounding-spaces"),
        pytest.param(BODY, digest(SECOND_SECRET).hex(), id="second-secret-rotation"),
        pytest.param(
            BODY,
            base64.b64encode(digest(SECOND_SECRET)).decode(),
            id="second-secret-base64",
        ),
        pytest.param(b"", digest(FIRST_SECRET, b"").hex(), id="empty-body"),
    ],
)
def test_valid_signature(body: bytes, header: str) -> None:
    gate = gatekeeper(webhook_secret=f"{FIRST_SECRET},{SECOND_SECRET}")

    assert gate.check_signature(body, header) is SignatureCheck.VALID


def test_urlsafe_body_really_needs_urlsafe_decoding() -> None:
    standard = base64.b64encode(digest(FIRST_SECRET, URLSAFE_BODY)).decode()
    urlsafe = base64.urlsafe_b64encode(digest(FIRST_SECRET, URLSAFE_BODY)).decode()
    assert standard != urlsafe


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        pytest.param(BODY, None, AuthFailure.MISSING_SIGNATURE, id="missing"),
        pytest.param(BODY, "", AuthFailure.MISSING_SIGNATURE, id="empty"),
        pytest.param(
            BODY, digest("a-third-secret").hex(), AuthFailure.WRONG_SIGNATURE, id="wrong-secret"
        ),
        pytest.param(
            BODY + b" ", digest(FIRST_SECRET).hex(), AuthFailure.WRONG_SIGNATURE, id="other-body"
        ),
        pytest.param(BODY, "not a signature!", AuthFailure.WRONG_SIGNATURE, id="garbage"),
        pytest.param(BODY, "sha256=", AuthFailure.WRONG_SIGNATURE, id="prefix-only"),
        pytest.param(BODY, "   ", AuthFailure.WRONG_SIGNATURE, id="blank"),
        pytest.param(
            BODY, digest(FIRST_SECRET).hex()[:-1], AuthFailure.WRONG_SIGNATURE, id="hex-too-short"
        ),
        pytest.param(
            BODY, digest(FIRST_SECRET).hex() + "00", AuthFailure.WRONG_SIGNATURE, id="hex-too-long"
        ),
        pytest.param(
            BODY,
            base64.b64encode(digest(FIRST_SECRET)[:16]).decode(),
            AuthFailure.WRONG_SIGNATURE,
            id="base64-of-16-bytes",
        ),
        pytest.param(
            BODY,
            hashlib.sha256(BODY).hexdigest(),
            AuthFailure.WRONG_SIGNATURE,
            id="plain-sha256-without-secret",
        ),
        pytest.param(
            BODY,
            "sha1=" + digest(FIRST_SECRET).hex(),
            AuthFailure.WRONG_SIGNATURE,
            id="other-algorithm-prefix",
        ),
    ],
)
def test_refused_signature(body: bytes, header: str | None, expected: AuthFailure) -> None:
    gate = gatekeeper(webhook_secret=f"{FIRST_SECRET},{SECOND_SECRET}")

    assert gate.check_signature(body, header) is expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(BODY, id="json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\x00", id="binary"),
    ],
)
def test_sign_round_trips(body: bytes) -> None:
    gate = gatekeeper(webhook_secret=FIRST_SECRET)

    signature = sign(FIRST_SECRET, body)

    assert signature == hmac.new(FIRST_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert gate.check_signature(body, signature) is SignatureCheck.VALID
    assert gate.check_signature(body, f"sha256={signature}") is SignatureCheck.VALID
    assert gate.check_signature(body + b"x", signature) is AuthFailure.WRONG_SIGNATURE


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("address", EIGHT_BY_EIGHT)
def test_8x8_preset_accepts_each_published_address(address: str) -> None:
    assert gatekeeper(allowed_networks="8x8").network_allowed(address)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("34.142.20.188", True, id="europe"),
        pytest.param("::ffff:34.142.20.188", True, id="ipv4-mapped-ipv6"),
        pytest.param("127.0.0.1", False, id="loopback"),
        pytest.param("::ffff:127.0.0.1", False, id="ipv4-mapped-loopback"),
        pytest.param("34.142.20.189", False, id="neighbour-address"),
        pytest.param("::1", False, id="ipv6-loopback"),
        pytest.param("", False, id="empty"),
        pytest.param("not-an-address", False, id="unparseable"),
        pytest.param("34.142.20.188:443", False, id="with-port"),
    ],
)
def test_8x8_preset(address: str, expected: bool) -> None:
    assert gatekeeper(allowed_networks="8x8").network_allowed(address) is expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("10.1.2.3", True, id="in-first-cidr"),
        pytest.param("192.168.1.77", True, id="in-second-cidr"),
        pytest.param("203.0.113.5", True, id="single-address"),
        pytest.param("2001:db8::1", True, id="ipv6-in-cidr"),
        pytest.param("2001:db8:ffff::1", True, id="ipv6-edge-of-cidr"),
        pytest.param("::ffff:10.9.8.7", True, id="ipv4-mapped-in-cidr"),
        pytest.param("11.0.0.1", False, id="outside-ipv4"),
        pytest.param("192.168.2.1", False, id="neighbour-cidr"),
        pytest.param("203.0.113.6", False, id="next-to-single-address"),
        pytest.param("2001:db9::1", False, id="outside-ipv6"),
        pytest.param("2001:db8::zz", False, id="bad-ipv6"),
    ],
)
def test_cidr_list(address: str, expected: bool) -> None:
    gate = gatekeeper(allowed_networks="10.0.0.0/8, 192.168.1.0/24,203.0.113.5,2001:db8::/32")

    assert gate.network_allowed(address) is expected


# --------------------------------------------------------------------------- client address

PROXIES = "10.0.0.0/8,fd00::/8"


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        pytest.param("203.0.113.9", None, "203.0.113.9", id="no-header"),
        pytest.param("203.0.113.9", "34.142.20.188", "203.0.113.9", id="untrusted-peer-ignored"),
        pytest.param("10.0.0.5", None, "10.0.0.5", id="trusted-peer-no-header"),
        pytest.param("10.0.0.5", "", "10.0.0.5", id="trusted-peer-empty-header"),
        pytest.param("10.0.0.5", "34.142.20.188", "34.142.20.188", id="trusted-proxy-honoured"),
        pytest.param(
            "10.0.0.5", "1.2.3.4, 34.142.20.188", "34.142.20.188", id="rightmost-untrusted-wins"
        ),
        pytest.param(
            "10.0.0.9",
            "1.2.3.4, 34.142.20.188, 10.0.0.7, 10.0.0.8",
            "34.142.20.188",
            id="chain-of-trusted-proxies",
        ),
        pytest.param(
            "10.0.0.9", "34.142.20.188 , , 10.0.0.7", "34.142.20.188", id="blank-hops-skipped"
        ),
        pytest.param("::ffff:10.0.0.5", "34.142.20.188", "34.142.20.188", id="mapped-proxy"),
        pytest.param("fd00::1", "2001:db8::7", "2001:db8::7", id="ipv6-proxy"),
        pytest.param("10.0.0.5", "garbage", "unparseable", id="garbage-hop-unparseable"),
        pytest.param(None, "34.142.20.188", "", id="no-peer"),
    ],
)
def test_client_address(peer: str | None, forwarded_for: str | None, expected: str) -> None:
    gate = gatekeeper(trusted_proxies=PROXIES)

    assert gate.client_address(peer, forwarded_for) == expected


def test_forwarded_for_is_ignored_when_no_proxy_is_trusted() -> None:
    gate = gatekeeper()

    assert gate.client_address("10.0.0.5", "34.142.20.188") == "10.0.0.5"


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "allowed"),
    [
        pytest.param("34.142.20.188", None, True, id="8x8-direct"),
        pytest.param("203.0.113.9", "34.142.20.188", False, id="spoofed-from-untrusted-peer"),
        pytest.param("10.0.0.5", "34.142.20.188", True, id="8x8-via-proxy"),
        pytest.param("10.0.0.5", "34.142.20.188, 203.0.113.9", False, id="spoofed-via-proxy"),
        pytest.param("10.0.0.5", "garbage", False, id="garbage-via-proxy"),
        pytest.param("10.0.0.5", None, False, id="proxy-itself"),
    ],
)
def test_address_check_through_proxies(peer: str, forwarded_for: str | None, allowed: bool) -> None:
    gate = gatekeeper(allowed_networks="8x8", trusted_proxies="10.0.0.0/8")

    assert gate.network_allowed(gate.client_address(peer, forwarded_for)) is allowed
