"""Structured logs: one JSON object per line on stderr, for our code and libraries alike.

Our modules log through structlog (`get_logger(__name__).info("event", key=value)`);
librdkafka (through confluent-kafka's logger), aiohttp and aiokafka (the tests')
log through the standard library, and both end in the
same formatter, so every line has `timestamp`, `level`, `logger` and `event`.
Never log a secret, a token or message text at info level.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from wapipe.settings import Settings


def configure_logging(settings: Settings, *, service: str) -> None:
    """Route every log record of the process to stderr in the configured format."""

    pid = os.getpid()

    def add_service(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        # A processor, not a context variable: library threads log too.
        event.setdefault("service", service)
        event.setdefault("pid", pid)  # tells restarts and side-by-side workers apart
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aiohttp's access log is one line per request: too much at 5,000 requests/s.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
