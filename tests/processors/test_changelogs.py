"""The changelog topics `wapipe topics create` makes are exactly those of the jobs' tables
(wapipe/topics.py, CHANGELOGS: a worker must not create one itself)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from processors.jobs import JOBS, create_job
from wapipe.settings import Settings
from wapipe.topics import CHANGELOGS, CleanupPolicy, changelog


def test_every_table_has_its_changelog_in_the_topic_list(tmp_path):
    settings = Settings(topic_prefix="acme.whatsapp", home=tmp_path)
    names = set()
    for job in JOBS:
        tables = create_job(job, settings, CollectorRegistry()).tables
        names |= {changelog(job, table.name).name(settings.topic_prefix) for table in tables}
    assert names == {spec.name(settings.topic_prefix) for spec in CHANGELOGS}
    assert {spec.cleanup_policy for spec in CHANGELOGS} == {CleanupPolicy.COMPACT}
