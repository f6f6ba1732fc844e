"""The ingester's HTTP routes: verify a webhook, make it durable, answer fast.

`POST /webhooks/whatsapp` checks, in order: source network (403), authorization
(401), content type (415), size (413, before the body is read), a body slower than
`client_timeout_seconds` (408), signature (401), JSON object (400). Whatever passes
is published byte for byte to the raw topic, or spooled, and answered 200; 503 only
when neither Kafka nor the spool can take it. Every refusal has a JSON body
`{"error": ..., "message": ...}`, also aiohttp's own (404, 405). The routes are
documented in schemas/openapi.json, served at `GET /openapi.json`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import BasicAuth, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ingest import envelope, openapi
from ingest.auth import AuthFailure, Gatekeeper
from ingest.metrics import IngestMetrics
from ingest.oauth import TokenIssuer
from ingest.publisher import Durability, Publisher
from ingest.spool import SpooledRecord, SpoolFullError
from wapipe import topics
from wapipe.logs import get_logger
from wapipe.settings import Settings

log = get_logger(__name__)

WEBHOOK_PATH = "/webhooks/whatsapp"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a route, not a secret
OPENAPI_PATH = "/openapi.json"
SIGNATURE_HEADER = "X-8x8-Signature"
_JSON_TYPES = ("application/json",)
_FORM_TYPE = "application/x-www-form-urlencoded"

PUBLISHER = web.AppKey("publisher", Publisher)
METRICS = web.AppKey("metrics", IngestMetrics)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> web.Application:
    """The ingester as an aiohttp application; starting it starts the publisher."""
    metrics = IngestMetrics(registry or CollectorRegistry())
    tokens = TokenIssuer.from_settings(settings)
    gatekeeper = Gatekeeper(settings, tokens)
    publisher = Publisher(settings, topics.RAW.name(settings.topic_prefix), metrics)
    handlers = _Handlers(settings, gatekeeper, tokens, publisher, metrics)

    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_json_errors])
    app[PUBLISHER] = publisher
    app[METRICS] = metrics
    app.router.add_post(WEBHOOK_PATH, handlers.webhook)
    if tokens is not None:
        app.router.add_post(TOKEN_PATH, handlers.token)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get(OPENAPI_PATH, handlers.openapi)

    async def publisher_context(_: web.Application) -> AsyncIterator[None]:
        await publisher.start()
        spool = publisher.spool
        metrics.spool_records.set_function(lambda: spool.records)
        metrics.spool_bytes.set_function(lambda: spool.size_bytes)
        metrics.spool_oldest_age.set_function(
            lambda: (
                0.0
                if spool.oldest_received_at_ms is None
                else max(0.0, time.time() - spool.oldest_received_at_ms / 1000)
            )
        )
        yield
        await publisher.stop()

    app.cleanup_ctx.append(publisher_context)
    if gatekeeper.open_to_anyone:
        log.warning(
            "no authorization, signature or network check configured: anyone who can reach "
            "this port can post webhooks (see WAPIPE_AUTHORIZATION, WAPIPE_OAUTH_CLIENTS, "
            "WAPIPE_WEBHOOK_SECRET, WAPIPE_ALLOWED_NETWORKS)"
        )
    return app


class Refusal(Exception):
    """A request we do not accept: its status, error code (also the metric's outcome
    label) and a message for the sender."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        headers: dict[str, str] | None = None,
        event_type: str = "none",  # known once the body is parsed
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers
        self.event_type = event_type

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=orjson.dumps({"error": self.error, "message": self.message}),
            content_type="application/json",
            headers=self.headers,
        )


_ACCEPTED_BODY = b'{"status":"accepted"}'


class _Handlers:
    def __init__(
        self,
        settings: Settings,
        gatekeeper: Gatekeeper,
        tokens: TokenIssuer | None,
        publisher: Publisher,
        metrics: IngestMetrics,
    ) -> None:
        self._gate = gatekeeper
        self._tokens = tokens
        self._publisher = publisher
        self._metrics = metrics
        self._max_body = settings.max_body_bytes
        self._client_timeout = settings.client_timeout_seconds

    async def webhook(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            event_type, durability = await self._accept(request)
        except Refusal as refusal:
            response, outcome, event_type = refusal.response(), refusal.error, refusal.event_type
            if refusal.status == 408:
                response.force_close()  # the rest of the body may still be on its way
        else:
            response = web.Response(body=_ACCEPTED_BODY, content_type="application/json")
            outcome = durability.value
        self._metrics.observe_request(event_type, outcome, time.perf_counter() - started)
        return response

    async def _accept(self, request: web.Request) -> tuple[str, Durability]:
        """Check, parse and store one webhook; raise Refusal for what is not accepted."""
        address = self._gate.client_address(request.remote, request.headers.get("X-Forwarded-For"))
        if not self._gate.network_allowed(address):
            raise self._auth_refusal(AuthFailure.FORBIDDEN_NETWORK, address)
        verdict = self._gate.check_authorization(request.headers.get("Authorization"))
        if verdict.failure is not None:
            raise self._auth_refusal(verdict.failure, address)
        content_type = request.content_type
        if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
            raise Refusal(415, "unsupported_media_type",
                          f"Content-Type must be application/json, not {content_type}")  # fmt: skip
        too_large = Refusal(413, "too_large", f"body exceeds {self._max_body} bytes")
        if request.content_length is not None and request.content_length > self._max_body:
            raise too_large
        try:
            # Without a deadline, a client sending its body byte by byte (slowloris)
            # would hold this request, and its buffer, for as long as it liked.
            async with asyncio.timeout(self._client_timeout):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except TimeoutError:
            raise self._slow_body() from None
        signature = self._gate.check_signature(raw, request.headers.get(SIGNATURE_HEADER))
        if isinstance(signature, AuthFailure):
            raise self._auth_refusal(signature, address)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise Refusal(400, "invalid_json", f"body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise Refusal(
                400, "not_an_object", f"body must be a JSON object, not {type(body).__name__}"
            )

        event_type = envelope.event_type_label(body)
        received_at_ms = time.time_ns() // 1_000_000
        record = SpooledRecord(
            key=envelope.record_key(body, raw),
            value=raw,
            headers=(
                ("wapipe-received-at", _iso_ms(received_at_ms).encode()),
                ("wapipe-source-address", address.encode()),
                ("wapipe-auth", (verdict.method or "none").encode()),
                ("wapipe-signature", signature.value.encode()),
                (
                    "wapipe-shape",
                    b"recognised" if envelope.is_recognised(body) else b"unrecognised",
                ),
                ("wapipe-event-type", envelope.event_type_header(body)),
            ),
            received_at_ms=received_at_ms,
        )
        try:
            durability = await self._publisher.publish(record)
        except (SpoolFullError, OSError) as error:
            log.error("event could not be made durable", error=str(error), event_type=event_type)
            raise Refusal(503, "unavailable", "the event could not be stored; retry later",
                          {"Retry-After": "10"}, event_type) from None  # fmt: skip
        self._metrics.received_bytes.inc(len(raw))
        return event_type, durability

    def _auth_refusal(self, failure: AuthFailure, address: str) -> Refusal:
        self._metrics.auth_failures.labels(failure.value).inc()
        log.info("webhook refused", reason=failure.value, source_address=address)
        if failure is AuthFailure.FORBIDDEN_NETWORK:
            return Refusal(403, "forbidden", "this source address may not post webhooks")
        return Refusal(401, "unauthorized", f"authorization failed: {failure.value}",
                       {"WWW-Authenticate": 'Bearer realm="wapipe"'})  # fmt: skip

    async def token(self, request: web.Request) -> web.Response:
        """OAuth 2.0 client-credentials grant (RFC 6749 §4.4; errors per §5.2)."""
        assert self._tokens is not None
        address = self._gate.client_address(request.remote, request.headers.get("X-Forwarded-For"))
        if not self._gate.network_allowed(address):
            return self._auth_refusal(AuthFailure.FORBIDDEN_NETWORK, address).response()
        # RFC 6749 §4.4.2: the token request is a urlencoded form. Parsing anything else
        # (multipart without a boundary, bytes that are not UTF-8) raised a ValueError
        # out of aiohttp: a 500.
        if request.content_type != _FORM_TYPE:
            return _oauth_error(400, "invalid_request", f"the body must be {_FORM_TYPE}")
        try:
            async with asyncio.timeout(self._client_timeout):
                form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return Refusal(413, "too_large", f"body exceeds {self._max_body} bytes").response()
        except TimeoutError:
            response = self._slow_body().response()
            response.force_close()
            return response
        except ValueError as error:  # e.g. UnicodeDecodeError
            return _oauth_error(400, "invalid_request", f"malformed form: {error}")
        client_id, client_secret = (
            str(form.get("client_id", "")),
            str(form.get("client_secret", "")),
        )
        basic = request.headers.get("Authorization", "")
        if basic[:6].lower() == "basic ":
            try:
                credentials = BasicAuth.decode(basic)
            except ValueError:
                return _oauth_error(400, "invalid_request", "malformed Basic credentials")
            client_id, client_secret = credentials.login, credentials.password
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only client_credentials")
        if not self._tokens.authenticate(client_id, client_secret):
            self._metrics.auth_failures.labels("invalid_client").inc()
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret",
                                **{"WWW-Authenticate": 'Basic realm="wapipe"'})  # fmt: skip
        scope = str(form.get("scope", "")) or None
        answer: dict[str, object] = {
            "access_token": self._tokens.issue(client_id, scope),
            "token_type": "Bearer",
            "expires_in": self._tokens.ttl_seconds,
        }
        if scope:
            answer["scope"] = scope
        return web.Response(
            body=orjson.dumps(answer),
            content_type="application/json",
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _slow_body(self) -> Refusal:
        return Refusal(408, "request_timeout",
                       f"body not received within {self._client_timeout:g} s")  # fmt: skip

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        ready, reason = self._publisher.readiness
        body = {"status": "ready" if ready else "not_ready", "reason": reason,
                "spoolRecords": self._publisher.spool.records}  # fmt: skip
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def openapi(self, _: web.Request) -> web.Response:
        return web.Response(body=openapi.document_bytes(), content_type="application/json")


_HTTP_ERRORS = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (no such route, wrong method) as our JSON error body too."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        name = _HTTP_ERRORS.get(error.status, error.reason.lower().replace(" ", "_"))
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return Refusal(error.status, name, error.reason, headers).response()


def _oauth_error(status: int, error: str, description: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error, "error_description": description}),
        content_type="application/json",
        headers={"Cache-Control": "no-store", **headers},
    )


def _iso_ms(epoch_ms: int) -> str:
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
