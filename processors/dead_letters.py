"""The dead letter of a poison record: a source record that made a job raise. The engine
sends it instead of stopping (processors/engine/loop.py); the reason names the error,
so that the bug can be fixed and the record replayed from `original`."""

from __future__ import annotations

import orjson
from confluent_kafka import Message

from processors.engine.job import Output, header, headers_of, origin, record_time_ms
from processors.normalize.records import DeadLetter, DeadLetterKind, record_value
from processors.normalize.rules import original_bytes


def poison_letter(record: Message, error: BaseException, topic: str) -> Output:
    source_topic, partition, offset = origin(record)
    key = record.key()
    letter = DeadLetter(
        kind=DeadLetterKind.PROCESSING_ERROR,
        reason=f"the {source_topic} record made the job fail: {type(error).__name__}",
        errors=(str(error)[:1000],),
        event_type=None,
        source_topic=source_topic,
        source_partition=partition,
        source_offset=offset,
        key=key.decode(errors="replace") if key is not None else None,
        received_at=header(record, "wapipe-received-at"),
        **original_bytes(record.value() or b""),
    )
    return Output(topic, key, orjson.dumps(record_value(letter)),
                  timestamp_ms=record_time_ms(record), headers=headers_of(record))  # fmt: skip
