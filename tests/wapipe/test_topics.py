"""`wapipe topics create` against a real broker: idempotent, with the contract's policies."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from wapipe.topics import CHANGELOGS, TOPICS, CleanupPolicy, create_topics

pytestmark = pytest.mark.kafka


async def _configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for _code, _message, _type, name, entries in response.resources:
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return configs


async def test_create_is_idempotent_and_applies_each_topics_policy(kafka_bootstrap, settings_for):
    settings = settings_for(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.whatsapp",
        topic_partitions=2,
    )
    first = await create_topics(settings)
    assert [report.name for report in first] == [
        spec.name(settings.topic_prefix) for spec in TOPICS
    ]
    assert all(report.created and report.problem is None for report in first)

    second = await create_topics(settings)
    assert not any(report.created for report in second)
    assert all(report.problem is None for report in second)

    configs = await _configs(kafka_bootstrap, [report.name for report in first])
    for spec in TOPICS:
        config = configs[spec.name(settings.topic_prefix)]
        assert config["cleanup.policy"] == spec.cleanup_policy.value, spec.suffix
        if spec.cleanup_policy is CleanupPolicy.DELETE:
            assert int(config["retention.ms"]) == spec.retention_days * 24 * 3600 * 1000
    compacted = {s.suffix for s in TOPICS if s.cleanup_policy is CleanupPolicy.COMPACT}
    changelogs = {spec.suffix for spec in CHANGELOGS}
    states = {"message_state", "template_state", "phone_state", "service_windows",
              "messaging_limits"}  # fmt: skip
    markers = {"deadletter.replayed"}  # `wapipe deadletters replay`'s, one per letter
    assert compacted == states | changelogs | markers


async def test_existing_topic_with_other_partitions_is_reported(kafka_bootstrap, settings_for):
    prefix = f"t{uuid.uuid4().hex[:10]}.whatsapp"
    await create_topics(
        settings_for(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, topic_partitions=1)
    )
    reports = await create_topics(
        settings_for(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, topic_partitions=3)
    )
    assert [r.problem for r in reports] == ["has 1 partitions, settings say 3"] * len(TOPICS)
