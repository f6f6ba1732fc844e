"""`wapipe deadletters`: what is on `<prefix>.deadletter`, and putting it back after a fix.

A dead letter is a record a job set aside with its reason and the original bytes
(processors/dead_letters.py): a webhook normalize could not type (an event type this
version does not know, a shape that breaks its schema), or a record that made a job
raise (a poison record). This command

- summarizes the letters of a time range by kind, source topic and reason (count, first
  and last seen, one letter to look at), `--show PARTITION:OFFSET` prints one whole;
- `replay` re-injects the chosen letters' original bytes into their source topic (the raw
  topic for rejected webhooks), in the partition they came from, with their key,
  timestamp and original headers, plus `wapipe-deadletter: <partition>:<offset>` naming
  the letter. Each letter goes back once: a marker keyed by the letter's
  `<partition>:<offset>` goes to the compacted `<prefix>.deadletter.replayed` in the same
  transaction as the re-injected record, and letters with a marker are passed over, so a
  second run (or one run interrupted and started again) re-injects nothing twice.

Use it after a fix that makes the letters processable (a new event type learnt, a bug of
a job fixed); `wapipe replay` is for re-deriving everything from the raw topic into a new
prefix. docs/operations.md ("Dead letters") says when to use which.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import confluent_kafka
import orjson
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processors.engine.job import headers_of, origin, record_time_ms
from processors.engine.kafka import client_config
from wapipe.replay import Progress, point_in_time, utc
from wapipe.settings import Settings
from wapipe.topics import DEADLETTER, DEADLETTER_REPLAYED

USAGE, FAILED = 2, 1
REPLAY_HEADER = "wapipe-deadletter"
_CLIENT_ID = "wapipe-deadletters"
_KAFKA_TIMEOUT_SECONDS = 10.0
_TRANSACTION_RECORDS = 1_000  # letters re-injected per transaction


class DeadLettersError(Exception):
    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Letter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    value: dict[str, Any]

    @property
    def name(self) -> str:
        """`<partition>:<offset>`: how the commands and the replay marker name it."""
        return f"{self.partition}:{self.offset}"

    @property
    def again(self) -> bool:
        """Whether it is a re-injected letter's original set aside again (the fix did not
        cover it): replaying it once more would only send it round again."""
        return any(name == REPLAY_HEADER for name, _ in self.headers)

    @property
    def original(self) -> bytes:
        """The original record's value, byte for byte."""
        text = str(self.value.get("original", ""))
        if self.value.get("originalEncoding") == "base64":
            return base64.b64decode(text)
        return text.encode()


@dataclass(frozen=True)
class Selection:
    """Which letters: stamped within [since, until) (epoch ms), of a kind, from a topic."""

    since_ms: int | None = None
    until_ms: int | None = None
    kinds: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()

    def takes(self, letter: Letter) -> bool:
        at = letter.timestamp_ms
        if self.until_ms is not None and at is not None and at >= self.until_ms:
            return False
        if self.kinds and letter.value.get("kind") not in self.kinds:
            return False
        return not self.sources or letter.value.get("sourceTopic") in self.sources


def selection(since: str | None, until: str | None, kinds: Sequence[str],
              sources: Sequence[str], prefix: str, now: datetime) -> Selection:  # fmt: skip
    """The options as a `Selection`; DeadLettersError(USAGE) naming a bad one. A source
    topic may be given without the prefix (`webhooks.raw`)."""
    bounds: list[int | None] = []
    for option, text in (("--from", since), ("--to", until)):
        try:
            at = None if text is None else point_in_time(text, now)
        except ValueError as error:
            raise DeadLettersError(f"{option}: {error}", USAGE) from None
        bounds.append(None if at is None else max(0, int(at.timestamp() * 1000)))
    named = {source if source.startswith(f"{prefix}.") else f"{prefix}.{source}"
             for source in sources}  # fmt: skip
    return Selection(bounds[0], bounds[1], frozenset(kinds), frozenset(named))


# --------------------------------------------------------------------------- reading


def _reader(settings: Settings) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer({
        **client_config(settings.kafka_bootstrap, _CLIENT_ID),
        "group.id": f"{settings.topic_prefix}.wapipe-deadletters",  # never joined
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })  # fmt: skip


def _partitions(client: confluent_kafka.Consumer, topic: str) -> list[int]:
    found = client.list_topics(topic, timeout=_KAFKA_TIMEOUT_SECONDS).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise DeadLettersError(f"no topic {topic} (run `wapipe topics create`)")
    return sorted(found.partitions)


def _read(client: confluent_kafka.Consumer, topic: str, since_ms: int | None,
          ) -> Iterable[confluent_kafka.Message]:  # fmt: skip
    """Every record of `topic` stamped at or after `since_ms`, up to the ends it had when
    reading began, partition by partition."""
    partitions = _partitions(client, topic)
    ends = {p: client.get_watermark_offsets(TopicPartition(topic, p), _KAFKA_TIMEOUT_SECONDS)[1]
            for p in partitions}  # fmt: skip
    starts = {p: confluent_kafka.OFFSET_BEGINNING for p in partitions}
    if since_ms is not None:
        found = client.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions],
                                         _KAFKA_TIMEOUT_SECONDS)  # fmt: skip
        starts = {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition]
                  for tp in found}  # fmt: skip
    reading = {p for p in partitions if ends[p] > 0 and starts[p] != ends[p]}
    client.assign([TopicPartition(topic, p, starts[p]) for p in reading])
    while reading:
        for message in client.consume(1_000, 1.0):
            _, partition, offset = origin(message)
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    reading.discard(partition)
                    continue
                raise DeadLettersError(f"reading {topic}: {error}")
            if offset >= ends[partition]:
                reading.discard(partition)
                continue
            yield message
            if offset + 1 >= ends[partition]:
                reading.discard(partition)
    client.unassign()


def _letter(message: confluent_kafka.Message) -> Letter:
    _, partition, offset = origin(message)
    return Letter(partition, offset, record_time_ms(message), message.key(),
                  tuple(headers_of(message)), orjson.loads(message.value() or b"{}"))  # fmt: skip


def read_letters(settings: Settings, chosen: Selection) -> list[Letter]:
    client = _reader(settings)
    try:
        found = (_letter(m) for m in _read(client, DEADLETTER.name(settings.topic_prefix),
                                           chosen.since_ms))  # fmt: skip
        return [letter for letter in found if chosen.takes(letter)]
    except KafkaException as error:
        raise DeadLettersError(f"Kafka: {error.args[0]}") from None
    finally:
        client.close()


def replayed_names(settings: Settings) -> set[str]:
    """The letters re-injected before (their markers)."""
    client = _reader(settings)
    try:
        topic = DEADLETTER_REPLAYED.name(settings.topic_prefix)
        return {(m.key() or b"").decode() for m in _read(client, topic, None)}
    except KafkaException as error:
        raise DeadLettersError(f"Kafka: {error.args[0]}") from None
    finally:
        client.close()


def one_letter(settings: Settings, name: str) -> Letter:
    """The letter `<partition>:<offset>`; DeadLettersError when there is none."""
    partition, _, offset = name.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise DeadLettersError(f"--show {name!r}: give PARTITION:OFFSET, e.g. 0:42", USAGE)
    client = _reader(settings)
    topic = DEADLETTER.name(settings.topic_prefix)
    try:
        client.assign([TopicPartition(topic, int(partition), int(offset))])
        for message in client.consume(1, _KAFKA_TIMEOUT_SECONDS):
            if message.error() is None and message.offset() == int(offset):
                return _letter(message)
    finally:
        client.close()
    raise DeadLettersError(f"no dead letter at {topic} {name} (deleted by retention, or "
                           "never written)")  # fmt: skip


# --------------------------------------------------------------------------- summary


@dataclass
class Group:
    kind: str
    source: str
    reason: str
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    example: str = ""
    replayed: int = 0  # re-injected since
    again: int = 0  # set aside again after being re-injected


def summarize(letters: Iterable[Letter], replayed: set[str]) -> list[Group]:
    """The letters grouped by kind, source topic and reason; the largest groups first."""
    groups: dict[tuple[str, str, str], Group] = {}
    for letter in letters:
        value = letter.value
        key = (str(value.get("kind")), str(value.get("sourceTopic")), str(value.get("reason")))
        group = groups.setdefault(key, Group(*key, example=letter.name))
        group.count += 1
        group.replayed += letter.name in replayed
        group.again += letter.again
        at = letter.timestamp_ms
        if at is not None:
            group.first_ms = at if group.first_ms is None else min(group.first_ms, at)
            group.last_ms = at if group.last_ms is None else max(group.last_ms, at)
    return sorted(groups.values(), key=lambda g: (-g.count, g.kind, g.source, g.reason))


def render_summary(groups: Sequence[Group], topic: str) -> str:
    if not groups:
        return f"no dead letters on {topic} in that range"
    rows = [("KIND", "SOURCE", "COUNT", "REPLAYED", "AGAIN", "FIRST", "LAST", "SHOW", "REASON")]
    rows += [(g.kind, g.source, f"{g.count:,}", f"{g.replayed:,}", f"{g.again:,}",
              "-" if g.first_ms is None else utc(g.first_ms),
              "-" if g.last_ms is None else utc(g.last_ms), g.example, g.reason)
             for g in groups]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)),
                        row[-1]]).rstrip() for row in rows]  # fmt: skip
    total = sum(g.count for g in groups)
    lines += ["", f"{total:,} dead letters on {topic}; `wapipe deadletters --show "
                  "PARTITION:OFFSET` shows one whole, `wapipe deadletters replay` puts them back "
                  "after a fix"]  # fmt: skip
    return "\n".join(lines)


def render_letter(letter: Letter) -> str:
    value = dict(letter.value)
    original = letter.original
    try:
        body: Any = orjson.loads(original)
    except orjson.JSONDecodeError:
        body = original.decode(errors="replace")
    value.pop("original", None)
    shown = {
        "letter": letter.name,
        "timestamp": None if letter.timestamp_ms is None else utc(letter.timestamp_ms),
        "key": None if letter.key is None else letter.key.decode(errors="replace"),
        "headers": {name: raw.decode(errors="replace") for name, raw in letter.headers},
        **value, "original": body,
    }  # fmt: skip
    return orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode()


# --------------------------------------------------------------------------- replay


@dataclass
class Replayed:
    chosen: int = 0
    skipped: int = 0  # re-injected by an earlier run, or set aside again after one
    sent: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)


def replay(settings: Settings, letters: Sequence[Letter], replayed: set[str],
           progress: Progress | None = None) -> Replayed:  # fmt: skip
    """Re-inject each letter not in `replayed` into its source topic, with its marker, in
    transactions of `_TRANSACTION_RECORDS`."""
    result = Replayed(chosen=len(letters))
    todo = [letter for letter in letters if letter.name not in replayed and not letter.again]
    result.skipped = len(letters) - len(todo)
    if not todo:
        return result
    markers = DEADLETTER_REPLAYED.name(settings.topic_prefix)
    producer = confluent_kafka.Producer({
        **client_config(settings.kafka_bootstrap, _CLIENT_ID),
        # One per prefix: a second replay running at once fences the first.
        "transactional.id": f"{settings.topic_prefix}.wapipe-deadletters",
        "enable.idempotence": True,
        "acks": "all",
    })  # fmt: skip
    try:
        producer.init_transactions(_KAFKA_TIMEOUT_SECONDS)
        for first in range(0, len(todo), _TRANSACTION_RECORDS):
            chunk = todo[first : first + _TRANSACTION_RECORDS]
            producer.begin_transaction()
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            for letter in chunk:
                source = str(letter.value.get("sourceTopic"))
                headers: list[tuple[str, str | bytes | None]] = [
                    *letter.headers, (REPLAY_HEADER, letter.name.encode())]  # fmt: skip
                producer.produce(source, letter.original, letter.key,
                                 partition=int(letter.value.get("sourcePartition", 0)),
                                 timestamp=letter.timestamp_ms or 0, headers=headers)  # fmt: skip
                producer.produce(markers, orjson.dumps({"to": source, "replayedAt": now}),
                                 letter.name.encode())  # fmt: skip
                producer.poll(0)
            producer.commit_transaction(60)
            for letter in chunk:
                source = str(letter.value.get("sourceTopic"))
                result.per_topic[source] = result.per_topic.get(source, 0) + 1
            result.sent += len(chunk)
            if progress is not None:
                progress.show(result.sent)
    except KafkaException as error:
        raise DeadLettersError(
            f"the replay stopped after {result.sent:,} letters: {error.args[0]}; run it again: "
            "what was re-injected is marked and passed over"
        ) from None
    finally:
        if progress is not None:
            progress.finish()
    return result


# --------------------------------------------------------------------------- the command


def run_deadletters(
    settings: Settings, *, action: str | None, since: str | None, until: str | None,
    kinds: Sequence[str], sources: Sequence[str], show: str | None, as_json: bool, yes: bool,
    out: TextIO | None = None, err: TextIO | None = None,
) -> int:  # fmt: skip
    out, err = out or sys.stdout, err or sys.stderr
    topic = DEADLETTER.name(settings.topic_prefix)
    try:
        if show is not None:
            print(render_letter(one_letter(settings, show)), file=out)
            return 0
        chosen = selection(since, until, kinds, sources, settings.topic_prefix, datetime.now(UTC))
        letters = read_letters(settings, chosen)
        replayed = replayed_names(settings)
        if action != "replay":
            groups = summarize(letters, replayed)
            if as_json:
                print(orjson.dumps([g.__dict__ for g in groups]).decode(), file=out)
            else:
                print(render_summary(groups, topic), file=out)
            return 0
        todo = sum(letter.name not in replayed and not letter.again for letter in letters)
        if todo and not yes:
            if not sys.stdin.isatty():
                raise DeadLettersError(f"{todo:,} letters would be re-injected: add --yes", USAGE)
            answer = input(f"re-inject {todo:,} dead letters into their source topics? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing re-injected", file=err)
                return FAILED
        result = replay(settings, letters, replayed, Progress(err, max(1, todo)))
    except DeadLettersError as error:
        print(f"wapipe deadletters: {error}", file=err)
        return error.status
    except KafkaException as error:
        print(f"wapipe deadletters: Kafka: {error.args[0]}", file=err)
        return FAILED
    where = ", ".join(f"{count:,} to {name}" for name, count in sorted(result.per_topic.items()))
    print(f"re-injected {result.sent:,} of {result.chosen:,} letters chosen"
          + (f" ({where})" if where else "")
          + (f"; {result.skipped:,} passed over (re-injected before, or set aside again "
             "after a replay)" if result.skipped else ""),
          file=out)  # fmt: skip
    return 0
