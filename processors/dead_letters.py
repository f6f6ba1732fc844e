"""Dead letters as the jobs send them: a source record the rules rejected (normalize),
or a poison record, one that made a job raise. The engine sends a poison record's
letter instead of stopping (processors/engine/loop.py); its reason names the error,
so that the bug can be fixed and the record replayed from `original`."""

from __future__ import annotations

import orjson
from confluent_kafka import Message

from processors.engine.job import Output, header, headers_of, origin, record_time_ms
from processors.normalize import rules
from processors.normalize.records import DeadLetterKind, record_value


def dead_letter(
    record: Message, rejected: rules.Rejected, topic: str, received_at: str | None
) -> Output:
    """`record`'s dead letter for `rejected`, with its key, Kafka timestamp and headers."""
    source_topic, partition, offset = origin(record)
    key = record.key()
    letter = rules.dead_letter(
        rejected, record.value() or b"", source_topic=source_topic, source_partition=partition,
        source_offset=offset, key=key, received_at=received_at,
    )  # fmt: skip
    return Output(topic, key, orjson.dumps(record_value(letter)),
                  timestamp_ms=record_time_ms(record), headers=headers_of(record))  # fmt: skip


def poison_letter(record: Message, error: BaseException, topic: str) -> Output:
    rejected = rules.Rejected(
        DeadLetterKind.PROCESSING_ERROR,
        f"the {origin(record)[0]} record made the job fail: {type(error).__name__}",
        (str(error)[:1000],),
    )
    return dead_letter(record, rejected, topic, header(record, "wapipe-received-at"))
