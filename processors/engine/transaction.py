"""The worker's transactional producer, and how it outlasts the broker.

`Transactions` runs one Kafka transaction at a time: produce (waiting when
librdkafka's queue is full), send the input offsets, commit or abort. A broker that
is away is waited out rather than fatal: commits and aborts that time out are
retried for as long as it lasts (a restart would not bring it back), and
`renew()` replaces the producer by a new one with the same `transactional.id`,
whose `init_transactions` ends whatever transaction the old one left open.

One librdkafka fault is guarded against: after a broker outage,
`send_offsets_to_transaction` can keep a stale group coordinator and wait past its
own timeout for good (librdkafka issues 5456 and 5511, seen here in
tests/reliability/test_broker_outage.py). The call runs on a thread of its own and
is given up on after its timeout and a margin, as a fatal error: the worker then
starts over with a new producer, which fences the stuck one. The stuck call's thread
cannot be stopped; the next call gets a thread of its own, and should a call hang
again while a stuck one still has not returned, the worker exits (`StuckThreads`)
rather than leave a thread behind at every outage: its supervisor restarts it with
none. And a transaction left
open through an outage longer than the transaction timeout is aborted by the
coordinator, which bumps the producer's epoch: librdkafka then reports the producer
as fenced, though no other worker took over (`outlived_timeout`).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import confluent_kafka
from confluent_kafka import KafkaException, TopicPartition

from processors.engine import kafka
from wapipe.logs import get_logger

log = get_logger(__name__)

_PRODUCE_RETRY_SECONDS = 0.05
RETRY_SECONDS = 1.0  # between attempts while the broker is away
_SEND_OFFSETS_MARGIN_SECONDS = 10.0
HUNG = confluent_kafka.KafkaError(confluent_kafka.KafkaError._TIMED_OUT,
                                  "send_offsets_to_transaction hung", fatal=True)  # fmt: skip


class StuckThreads(Exception):
    """A call to librdkafka hung while an earlier hung one still holds its thread."""


# The fatal errors that mean another worker with our transactional.id took over.
FENCED = frozenset({confluent_kafka.KafkaError._FENCED, confluent_kafka.KafkaError.PRODUCER_FENCED})

_T = TypeVar("_T")


class Transactions:
    def __init__(
        self, options: kafka.KafkaOptions, timeout_seconds: float,
        waiting: Callable[[], None], stopping: Callable[[], bool],
    ) -> None:  # fmt: skip
        """`waiting()` is called at each retry (the worker's heartbeat); `stopping()` ends
        the retries."""
        self.options, self.timeout = options, timeout_seconds
        self.waiting, self.stopping = waiting, stopping
        self.producer = kafka.producer(options)
        self._offsets_sender = _Caller("send-offsets")
        self._stuck: _Caller | None = None  # the sender whose call hung, until it returns
        self._began = time.monotonic()

    def init(self) -> None:
        retrying(lambda: self.producer.init_transactions(self.timeout), "init_transactions",
                 self.waiting, self.stopping)  # fmt: skip

    def renew(self) -> None:
        """A new producer with the same transactional.id, initialised."""
        self.producer.purge()
        self.producer = kafka.producer(self.options)
        self.init()

    def begin(self) -> None:
        self.producer.begin_transaction()
        self._began = time.monotonic()

    def outlived_timeout(self) -> bool:
        """Whether the transaction in hand has been open longer than the transaction
        timeout: the coordinator may have aborted it by then (a broker away that long)."""
        return time.monotonic() - self._began > self.options.transaction_timeout_ms / 1000

    def produce(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
        timestamp_ms: int | None = None, headers: list[tuple[str, bytes]] | None = None,
        on_delivery: object = None,
    ) -> None:  # fmt: skip
        arguments: dict[str, Any] = {"key": key, "value": value}
        if partition is not None:
            arguments["partition"] = partition
        if timestamp_ms is not None:
            arguments["timestamp"] = timestamp_ms
        if headers:
            arguments["headers"] = headers
        if on_delivery is not None:
            arguments["on_delivery"] = on_delivery
        while True:
            try:
                self.producer.produce(topic, **arguments)
                return
            except BufferError:  # librdkafka's queue is full: let it send
                self.producer.poll(_PRODUCE_RETRY_SECONDS)

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: object) -> None:
        """`send_offsets_to_transaction`, given up on (HUNG, fatal) after its timeout and a
        margin; the call's thread is then left behind, once: StuckThreads when it hangs
        again before that thread returned."""
        producer, timeout = self.producer, self.timeout
        self.send_offsets_call(
            lambda: producer.send_offsets_to_transaction(offsets, group_metadata, timeout),
            timeout + _SEND_OFFSETS_MARGIN_SECONDS,
        )

    def send_offsets_call(self, call: Callable[[], object], timeout: float) -> None:
        """`call()` on the offsets sender's thread, given up on after `timeout` seconds."""
        if self._stuck is not None and self._stuck.idle.is_set():
            self._stuck.stop()  # the hung call returned at last: its thread ends
            self._stuck = None
        try:
            self._offsets_sender.call(call, timeout)
        except concurrent.futures.TimeoutError:
            if self._stuck is not None:
                raise StuckThreads(
                    "send_offsets_to_transaction hung while an earlier hung call still holds "
                    "its thread (librdkafka issues 5456, 5511)"
                ) from None
            self._stuck, self._offsets_sender = self._offsets_sender, _Caller("send-offsets")
            raise KafkaException(HUNG) from None

    def commit(self) -> None:
        """Commit; a retriable failure (the broker away) is retried as long as it lasts: the
        outcome is only known once a call returns."""
        self._until_done(lambda: self.producer.commit_transaction(self.timeout), "commit")

    def abort(self) -> None:
        self._until_done(lambda: self.producer.abort_transaction(self.timeout), "abort")

    def poll(self) -> None:
        """Serve the delivery reports that are due."""
        self.producer.poll(0)

    def close(self) -> None:
        self.producer.flush(5)
        self._offsets_sender.stop()

    def _until_done(self, call: Callable[[], None], what: str) -> None:
        while True:
            try:
                call()
                return
            except KafkaException as exception:
                error = kafka.kafka_error(exception)
                if error is None or not error.retriable() or self.stopping():
                    raise
                log.warning(f"{what} failed; retrying", error=str(error))
                self.waiting()


def retrying(
    call: Callable[[], _T], what: str, waiting: Callable[[], None], stopping: Callable[[], bool]
) -> _T:
    """`call()`, again after each failure that is not fatal (the broker away), until
    `stopping()`."""
    while True:
        try:
            return call()
        except KafkaException as exception:
            error = kafka.kafka_error(exception)
            if (error is not None and error.fatal()) or stopping():
                raise
            log.warning(f"{what} failed; retrying", error=str(error or exception))
            waiting()
            time.sleep(RETRY_SECONDS)


class _Caller:
    """Runs calls on a daemon thread of its own, so that a call stuck in librdkafka can be
    given up on, and the process still exits."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], object], Future[object]] | None] = (
            queue.SimpleQueue()
        )
        self.idle = threading.Event()  # cleared while a call runs
        self.idle.set()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def call(self, call: Callable[[], object], timeout: float) -> object:
        """`call()`'s result; concurrent.futures.TimeoutError after `timeout` seconds."""
        future: Future[object] = Future()
        self.idle.clear()
        self._calls.put((call, future))
        return future.result(timeout)

    def stop(self) -> None:
        """End the thread once it is done with the call in hand."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            try:
                future.set_result(call())
            except BaseException as exception:  # the caller re-raises it
                future.set_exception(exception)
            finally:
                self.idle.set()
