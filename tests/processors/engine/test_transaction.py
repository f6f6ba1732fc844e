"""The offsets sender's thread when librdkafka's `send_offsets_to_transaction` hangs
(librdkafka issues 5456 and 5511): a hung call is given up on and leaves its thread
behind once; a second hang while the first still holds its thread ends the worker
(`StuckThreads`) instead of leaving a thread behind at every outage; a hung call that
returns at last frees its thread.

The hang is a call that blocks on an event: the real one needs a broker outage
(tests/reliability/test_broker_outage.py). No broker is contacted here: the
transactional producer is created but never initialised.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException

from processors.engine.kafka import KafkaOptions
from processors.engine.transaction import HUNG, StuckThreads, Transactions


@pytest.fixture
def transactions(unused_port) -> Iterator[Transactions]:  # type: ignore[no-untyped-def]
    options = KafkaOptions(f"127.0.0.1:{unused_port()}", "group", "slot")
    found = Transactions(options, 1.0, lambda: None, lambda: True)
    yield found
    found.producer.purge()


def _sender_threads() -> int:
    return sum(thread.name == "send-offsets" and thread.is_alive()
               for thread in threading.enumerate())  # fmt: skip


def test_a_hung_call_leaves_one_thread_and_a_second_hang_ends_the_worker(
    transactions: Transactions,
) -> None:
    before = _sender_threads()
    release = threading.Event()
    with pytest.raises(KafkaException) as hung:
        transactions.send_offsets_call(release.wait, timeout=0.2)
    assert hung.value.args[0] == HUNG
    assert transactions.send_offsets_call(lambda: None, timeout=5) is None  # a new thread works
    with pytest.raises(StuckThreads):
        transactions.send_offsets_call(release.wait, timeout=0.2)
    assert _sender_threads() <= before + 2, "a thread was left behind at every hang"
    release.set()


def test_a_hung_call_that_returns_at_last_frees_its_thread(transactions: Transactions) -> None:
    release = threading.Event()
    with pytest.raises(KafkaException):
        transactions.send_offsets_call(release.wait, timeout=0.2)
    stuck = transactions._stuck
    assert stuck is not None
    release.set()
    assert stuck.idle.wait(5), "the hung call did not return once released"
    transactions.send_offsets_call(lambda: None, timeout=5)  # sees it returned, ends its thread
    stuck.thread.join(5)
    assert not stuck.thread.is_alive(), "the freed thread did not end"
    assert transactions._stuck is None
    later = threading.Event()
    with pytest.raises(KafkaException):  # a hang again: given up on, not the end of the worker
        transactions.send_offsets_call(later.wait, timeout=0.2)
    later.set()
