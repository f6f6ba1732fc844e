"""`wapipe deadletters` on the real broker: letters of each kind summarized and shown; a
replay after a fix lands the fixed ones downstream once, sends the others round no more
than once, and a second replay re-injects nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from wapipe import topics
from wapipe.deadletters import REPLAY_HEADER, Group, Letter, summarize
from wapipe.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
UNKNOWN = b'{"eventType": "brand_new_event", "eventId": "n-1", "eventDetails": {}}'
BROKEN = (b'{"namespace": "ChatApps", "eventType": "outbound_message_status_changed", '
          b'"payload": {"umid": "u-broken", "subAccountId": "s"}}')  # fmt: skip


def _wapipe(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "WAPIPE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                   "WAPIPE_TOPIC_PREFIX": settings.topic_prefix}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "wapipe", "deadletters", *args],
                          env=environment, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def _an_older_versions_letter(settings: Settings, body: bytes) -> None:
    """A receipt this version types, set aside as a version that did not know its shape
    would have: what a fix makes processable."""
    raw = topics.RAW.name(settings.topic_prefix)
    letter = {
        "kind": "unknown_event_type", "reason": "an older version did not know this shape",
        "errors": [], "eventType": "outbound_message_status_changed", "sourceTopic": raw,
        "sourcePartition": 0, "sourceOffset": 0, "key": "0a1b2c3d", "receivedAt": None,
        "original": body.decode(), "originalEncoding": "utf-8",
    }  # fmt: skip
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(
        topics.DEADLETTER.name(settings.topic_prefix),
        orjson.dumps(letter),
        b"0a1b2c3d",
        headers=[("wapipe-received-at", b"2026-03-14T10:00:02.000Z")],
    )
    assert producer.flush(30) == 0


def _end_offsets(settings: Settings, spec: topics.TopicSpec) -> list[int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "unused"})
    try:
        name = spec.name(settings.topic_prefix)
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        return [consumer.get_watermark_offsets(TopicPartition(name, p), 10)[1]
                for p in sorted(partitions)]  # fmt: skip
    finally:
        consumer.close()


async def test_dead_letters_summarized_shown_and_replayed_once_after_a_fix(
    kafka_settings, start_ingester, read_records, start_worker, tmp_path
):
    receipt = (EXAMPLES / "status_sent.json").read_bytes()
    async with start_ingester(kafka_settings) as ingester:
        for body in (UNKNOWN, BROKEN):
            assert (await ingester.post(body))[0] == 200
    worker = start_worker("normalize", kafka_settings)
    try:
        await read_records(kafka_settings, topics.DEADLETTER, 2, timeout=120)
        _an_older_versions_letter(kafka_settings, receipt)

        summary = _wapipe(kafka_settings, "--json")
        assert summary.returncode == 0, summary.stderr
        groups = json.loads(summary.stdout)
        assert sorted((g["kind"], g["count"]) for g in groups) == [
            ("schema_violation", 1),
            ("unknown_event_type", 1),
            ("unknown_event_type", 1),
        ]
        older = next(g for g in groups if g["reason"].startswith("an older version"))
        shown = _wapipe(kafka_settings, "--show", older["example"])
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["original"]["payload"]["umid"] == (
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
        )
        table = _wapipe(kafka_settings)
        assert "unknown_event_type" in table.stdout
        assert "3 dead letters" in table.stdout

        first = _wapipe(kafka_settings, "replay", "--yes")
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("re-injected 3 of 3 letters chosen"), first.stdout
        # The receipt is typed now; the other two are set aside again, marked as replayed.
        statuses = await read_records(kafka_settings, topics.STATUS, 1, timeout=120)
        letters = await read_records(kafka_settings, topics.DEADLETTER, 5, timeout=120)
        again = [letter for letter in letters if REPLAY_HEADER in dict(letter.headers)]
        assert sorted(json.loads(letter.value)["original"].encode() for letter in again) == \
            sorted([BROKEN, UNKNOWN])  # fmt: skip

        raw_before = _end_offsets(kafka_settings, topics.RAW)
        second = _wapipe(kafka_settings, "replay", "--yes")
        assert second.returncode == 0, second.stderr
        assert second.stdout.startswith("re-injected 0 of 5 letters chosen; 5 passed over"), (
            second.stdout
        )
        assert _end_offsets(kafka_settings, topics.RAW) == raw_before, "re-injected again"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, (tmp_path / "normalize.log").read_text()[-3000:]
    assert [json.loads(r.value)["umid"] for r in statuses] == [
        "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    ]


def _letter(partition: int, offset: int, kind: str, reason: str, at: int,
            again: bool = False) -> Letter:  # fmt: skip
    headers = ((REPLAY_HEADER, b"0:1"),) if again else ()
    value: dict[str, Any] = {"kind": kind, "reason": reason, "sourceTopic": "w.webhooks.raw"}
    return Letter(partition, offset, at, None, headers, value)


def test_the_summary_groups_by_kind_source_and_reason_with_first_and_last_seen() -> None:
    letters = [_letter(0, 1, "unknown_event_type", "x", 3_000),
               _letter(1, 7, "unknown_event_type", "x", 1_000),
               _letter(0, 2, "schema_violation", "y", 2_000, again=True)]  # fmt: skip
    assert summarize(letters, replayed={"0:1"}) == [
        Group("unknown_event_type", "w.webhooks.raw", "x", 2, 1_000, 3_000, "0:1", 1, 0),
        Group("schema_violation", "w.webhooks.raw", "y", 1, 2_000, 2_000, "0:2", 0, 1),
    ]
