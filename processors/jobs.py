"""The stream jobs by name, each built by its module's `create_job(settings, registry)`:
`wapipe process <job>` runs one, `wapipe run` starts them all, `wapipe status` asks
each for its source topics. Modules are imported when a job is built, so naming the
jobs costs nothing."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports JOBS at start-up: no Kafka client for that
    from prometheus_client import CollectorRegistry

    from processors.engine.job import Job
    from wapipe.settings import Settings

JOBS: dict[str, str] = {
    "normalize": "processors.normalize.app",
    "funnel": "processors.funnel.app",
    "templates": "processors.templates.app",
    "phones": "processors.phones.app",
    "conversations": "processors.conversations.app",
    "limits": "processors.limits.app",
}


def create_job(name: str, settings: Settings, registry: CollectorRegistry) -> Job:
    job: Job = importlib.import_module(JOBS[name]).create_job(settings, registry)
    return job
