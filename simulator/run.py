"""One simulation run in-process: the entry point for the CLI and for tests.

summary = await simulate(settings, url, Plan(seed=7, messages=200, duration=20))
expected = summary.expected()          # what the pipeline must end with
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from typing import TextIO

from simulator.plan import Plan
from simulator.sender import Credentials, SendOptions, Summary, send_timeline
from simulator.stories import Timeline, make_timeline
from wapipe.settings import Settings

WEBHOOK_PATH = "/webhooks/whatsapp"  # ingest/app.py's route (a test keeps them equal)


def default_url(settings: Settings) -> str:
    """The local ingester's webhook URL: HTTPS when it serves TLS."""
    scheme = "https" if settings.tls_cert is not None else "http"
    return f"{scheme}://127.0.0.1:{settings.ingest_port}{WEBHOOK_PATH}"


def new_timeline(plan: Plan, now: datetime | None = None) -> Timeline:
    """The timeline of `plan` for a run starting `now`: its last events happen about
    when the run ends, none ahead of the wall clock (see `Plan.anchor`)."""
    return make_timeline(plan, plan.anchor(now or datetime.now(UTC)))


async def simulate(
    settings: Settings,
    url: str | None = None,
    plan: Plan | None = None,
    *,
    options: SendOptions | None = None,
    timeline: Timeline | None = None,
    progress: TextIO | None = None,
) -> Summary:
    """Generate `plan`'s timeline (or take `timeline`) and post it to `url` (default:
    the local ingester) with the credentials `settings` configure for the ingester.
    Returns when every webhook was acknowledged or given up; `Summary.expected()`
    then gives the results the pipeline must reach."""
    timeline = timeline or new_timeline(plan or Plan())
    url = url or default_url(settings)
    return await send_timeline(
        timeline,
        url,
        Credentials.from_settings(settings),
        options,
        progress=progress,
        ssl_context=_ssl_context(settings, url),
    )


def _ssl_context(settings: Settings, url: str) -> ssl.SSLContext | None:
    if not url.startswith("https:") or settings.tls_cert is None:
        return None
    # The local ingester's own certificate is the trust anchor; it is usually made
    # for a host name, not 127.0.0.1, so the name is not checked (the chain is).
    context = ssl.create_default_context(cafile=str(settings.tls_cert))
    context.check_hostname = False
    return context
