"""OAuth 2.0 client credentials (RFC 6749 §4.4) for 8x8's sender.

The sender posts its client id and secret to `POST /oauth/token` and puts the
bearer token it gets in each webhook's `Authorization` header. Tokens are
HS256 JWTs (PyJWT): stateless, so every ingester replica that shares the
signing key accepts them, and a restart does not log the sender out.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal

import jwt

from wapipe.settings import Settings

_ISSUER = "wapipe-ingest"
_AUDIENCE = "wapipe-webhooks"
TokenProblem = Literal["expired", "invalid"]


class TokenIssuer:
    def __init__(self, clients: dict[str, str], signing_key: bytes, ttl_seconds: int) -> None:
        self._clients = clients
        self._key = signing_key
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenIssuer | None:
        clients = settings.oauth_client_secrets
        if not clients:
            return None
        if settings.oauth_signing_key is not None:
            key = settings.oauth_signing_key.get_secret_value().encode()
        else:
            # Derived from the client secrets: replicas with the same configuration
            # agree without another secret to distribute; rotating a secret
            # invalidates the outstanding tokens, which the sender then renews.
            material = "\n".join(f"{cid}:{secret}" for cid, secret in sorted(clients.items()))
            key = hashlib.sha256(b"wapipe-oauth-signing\n" + material.encode()).digest()
        return cls(clients, key, settings.oauth_token_ttl_seconds)

    def authenticate(self, client_id: str, client_secret: str) -> bool:
        expected = self._clients.get(client_id)
        # Compare even for an unknown id, so timing does not reveal which ids exist.
        return (
            hmac.compare_digest((expected or "\0").encode(), client_secret.encode())
            and expected is not None
        )

    def issue(self, client_id: str, scope: str | None = None, now: float | None = None) -> str:
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, object] = {
            "iss": _ISSUER,
            "aud": _AUDIENCE,
            "sub": client_id,
            "iat": issued_at,
            "exp": issued_at + self.ttl_seconds,
        }
        if scope:
            claims["scope"] = scope
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str) -> TokenProblem | None:
        """None when `token` is one we issued, unexpired, for a client still configured."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=_AUDIENCE,
                issuer=_ISSUER,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            return "expired"
        except jwt.PyJWTError:
            return "invalid"
        return None if claims["sub"] in self._clients else "invalid"
