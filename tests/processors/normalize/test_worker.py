"""The normalize worker on the real broker: webhooks posted at the ingester come out typed."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest

import schemas
from processors.normalize.rules import Normalized, normalize
from wapipe import topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "examples").rglob("*.json"))
TYPED = (topics.INBOUND, topics.STATUS, topics.TEMPLATE, topics.PHONE, topics.ACCOUNT)


async def test_every_example_comes_out_typed_once_and_the_rest_dead_lettered(
    kafka_settings, start_ingester, read_records, start_worker, tmp_path
):
    bodies = [path.read_bytes() for path in EXAMPLES]
    unknown = b'{"eventType": "brand_new_event", "eventId": "n-1", "eventDetails": {}}'
    broken = (b'{"namespace": "ChatApps", "eventType": "outbound_message_status_changed", '
              b'"payload": {"umid": "u-broken", "subAccountId": "s"}}')  # fmt: skip
    async with start_ingester(kafka_settings) as ingester:
        for body in [*bodies, *bodies, unknown, broken]:  # every example twice: retries
            assert (await ingester.post(body))[0] == 200

    # What the rules say must come out, per topic, each event once.
    expected: dict[str, dict[str, bytes]] = {spec.suffix: {} for spec in TYPED}
    for body in bodies:
        result = normalize(body, None)
        assert isinstance(result, Normalized)
        expected[result.topic.suffix].setdefault(result.dedupe_key, body)

    worker = start_worker("normalize", kafka_settings)
    try:
        letters = await read_records(kafka_settings, topics.DEADLETTER, 2, timeout=120)
        found = {
            spec.suffix: await read_records(kafka_settings, spec, len(expected[spec.suffix]))
            for spec in TYPED
        }
    finally:
        worker.send_signal(signal.SIGTERM)
        status = worker.wait(timeout=60)
    assert status == 0, (tmp_path / "normalize.log").read_text()[-3000:]

    for spec in TYPED:
        records = found[spec.suffix]
        keys = [dict(r.headers)["wapipe-dedupe-key"].decode() for r in records]
        duplicates = [key for key, count in Counter(keys).items() if count > 1]
        assert not duplicates, f"{spec.suffix} holds retries twice: {duplicates}"
        assert set(keys) == set(expected[spec.suffix]), spec.suffix
        validator = schemas.validator(f"topics/{spec.suffix}")
        for record in records:
            value = orjson.loads(record.value)
            assert validator.is_valid(value), list(validator.iter_errors(value))
            assert dict(record.headers)["wapipe-received-at"]  # the ingester's headers travel
            if value["occurredAt"] is not None:  # event time is the Kafka timestamp
                assert record.timestamp == _epoch_ms(value["occurredAt"])

    kinds = {json.loads(letter.value)["kind"] for letter in letters}
    assert kinds == {"unknown_event_type", "schema_violation"}
    for letter in letters:
        value = json.loads(letter.value)
        assert schemas.validator("topics/deadletter").is_valid(value)
        assert value["original"].encode() in (unknown, broken)
        assert value["sourceTopic"] == topics.RAW.name(kafka_settings.topic_prefix)


def _epoch_ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)
