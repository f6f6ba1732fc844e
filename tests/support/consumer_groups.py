"""What the broker says of a consumer group: for tests that scale workers in and out."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """The group's state ("Stable", "PreparingRebalance", ...) and its member count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _error, _group_id, state, _protocol_type, _protocol, members = response.groups[0][:6]
    return state, len(members)
