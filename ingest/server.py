"""Runs the ingester until SIGTERM or SIGINT, then stops gracefully.

On a signal: stop accepting connections, let in-flight requests finish (up to
`shutdown_timeout_seconds`), flush the Kafka producer, and leave what is not
yet in Kafka in the spool for the next start.
"""

from __future__ import annotations

import asyncio
import signal
import ssl

from aiohttp import web

from ingest.app import create_app
from wapipe.logs import get_logger
from wapipe.settings import Settings

log = get_logger(__name__)


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        # aiohttp's keep-alive timer runs from the connection's start (and from each
        # answer) until a request's headers are complete: it is our header timeout.
        # Its default (over an hour) let a client that sends headers byte by byte
        # (slowloris) hold a connection that long; the body has its own timeout (app.py).
        keepalive_timeout=settings.client_timeout_seconds,
    )
    await runner.setup()
    tls = _tls_context(settings)
    site = web.TCPSite(
        runner, settings.ingest_host, settings.ingest_port, ssl_context=tls, backlog=1024
    )
    await site.start()
    log.info(
        "ingester listening",
        host=settings.ingest_host,
        port=settings.ingest_port,
        scheme="https" if tls else "http",
        note=None if tls else "plain HTTP: put a TLS-terminating proxy in front",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight requests, flushing to Kafka")
    await runner.cleanup()
    log.info("ingester stopped")


def run(settings: Settings) -> None:
    loop_factory = None
    if settings.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context
