"""Who may post: source networks, the `Authorization` header, and the optional signature.

Each check is optional and they combine, as 8x8 documents its sender (see
8x8's webhook documentation): a static `Authorization` value, OAuth 2.0 client-credentials
tokens (issued by `ingest.oauth`), an IP allow-list, and an `X-8x8-Signature`
HMAC. 8x8 does not specify the signature's algorithm; HMAC-SHA256 of the raw
body is our assumption, hence optional.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from ingest.oauth import TokenIssuer
from wapipe.settings import IPNetwork, Settings

_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# The source address of a request whose X-Forwarded-For hop (from a trusted proxy) is no
# IP address: that text came from the client, so it goes neither into the raw record's
# headers nor into logs; no allow-list matches it.
UNPARSEABLE_ADDRESS = "unparseable"
_URLSAFE_TO_STANDARD_BASE64 = str.maketrans("-_", "+/")


class AuthFailure(StrEnum):
    """Why a request was refused; the `reason` label of the auth-failure metric."""

    FORBIDDEN_NETWORK = "forbidden_network"
    MISSING_AUTHORIZATION = "missing_authorization"
    WRONG_AUTHORIZATION = "wrong_authorization"
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - a reason name, not a secret
    MISSING_SIGNATURE = "missing_signature"
    WRONG_SIGNATURE = "wrong_signature"


class AuthMethod(StrEnum):
    """How an accepted request proved itself; recorded in the raw record's headers."""

    NONE = "none"
    STATIC = "static"
    OAUTH = "oauth"


class SignatureCheck(StrEnum):
    VALID = "valid"
    NOT_CONFIGURED = "not_configured"


@dataclass(frozen=True)
class Verdict:
    method: AuthMethod | None = None
    failure: AuthFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class Gatekeeper:
    """Applies the configured checks to one request's address, headers and body."""

    def __init__(self, settings: Settings, tokens: TokenIssuer | None) -> None:
        self._allowed = settings.allowed_networks
        self._proxies = settings.trusted_proxies
        self._static = tuple(_split_header(v.get_secret_value()) for v in settings.authorization)
        self._tokens = tokens
        self._secrets = tuple(s.get_secret_value().encode() for s in settings.webhook_secret)

    @property
    def open_to_anyone(self) -> bool:
        return not (self._allowed or self._static or self._tokens or self._secrets)

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The sender's address: the peer, or the nearest untrusted X-Forwarded-For hop
        when the peer is one of our trusted proxies."""
        peer = peer or ""
        if not forwarded_for or not _in_networks(peer, self._proxies):
            return peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            if not _in_networks(hop, self._proxies):
                return hop if _is_address(hop) else UNPARSEABLE_ADDRESS
        return peer

    def network_allowed(self, address: str) -> bool:
        return not self._allowed or _in_networks(address, self._allowed)

    def check_authorization(self, header: str | None) -> Verdict:
        if not self._static and self._tokens is None:
            return Verdict(method=AuthMethod.NONE)
        if not header:
            return Verdict(failure=AuthFailure.MISSING_AUTHORIZATION)
        scheme, credentials = _split_header(header)
        # aiohttp decodes header bytes as UTF-8 with surrogateescape; a plain encode() of a
        # header that is not UTF-8 raised UnicodeEncodeError, a 500. This gives the bytes back.
        given = credentials.encode("utf-8", "surrogateescape")
        for allowed_scheme, allowed_credentials in self._static:
            if scheme == allowed_scheme and hmac.compare_digest(
                given, allowed_credentials.encode()
            ):
                return Verdict(method=AuthMethod.STATIC)
        # A JWT is ASCII; PyJWT would raise UnicodeEncodeError (a 500) on anything else.
        if self._tokens is not None and scheme == "bearer" and credentials.isascii():
            problem = self._tokens.verify(credentials)
            if problem is None:
                return Verdict(method=AuthMethod.OAUTH)
            if problem == "expired":
                return Verdict(failure=AuthFailure.EXPIRED_TOKEN)
        return Verdict(failure=AuthFailure.WRONG_AUTHORIZATION)

    def check_signature(self, body: bytes, header: str | None) -> SignatureCheck | AuthFailure:
        if not self._secrets:
            return SignatureCheck.NOT_CONFIGURED
        if not header:
            return AuthFailure.MISSING_SIGNATURE
        provided = _decode_signature(header)
        if provided is not None:
            for secret in self._secrets:
                expected = hmac.new(secret, body, hashlib.sha256).digest()
                if hmac.compare_digest(expected, provided):
                    return SignatureCheck.VALID
        return AuthFailure.WRONG_SIGNATURE


def sign(secret: str, body: bytes) -> str:
    """The `X-8x8-Signature` value we expect for `body` (hex); for senders and tests."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _split_header(value: str) -> tuple[str, str]:
    scheme, _, credentials = value.strip().partition(" ")
    return scheme.lower(), credentials.strip()


def _decode_signature(header: str) -> bytes | None:
    value = header.strip()
    if value[:7].lower() == "sha256=":
        value = value[7:]
    if _HEX_SHA256.match(value):
        return bytes.fromhex(value)
    standard = value.translate(_URLSAFE_TO_STANDARD_BASE64)
    try:
        decoded = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == hashlib.sha256().digest_size else None


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _in_networks(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)
