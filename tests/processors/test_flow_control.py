"""Resuming faust's flow control clears the agents' queues only after a suspension:
records handed over while it was already flowing stay (faust's second resume after
a rebalance dropped them for good)."""

from __future__ import annotations

from mode.utils.queues import FlowControlEvent, ThrowableQueue

from processors.runtime import keep_handed_over_records


async def test_a_resume_while_flowing_keeps_the_queued_records() -> None:
    flow_control = FlowControlEvent()
    keep_handed_over_records(flow_control)
    queue: ThrowableQueue = ThrowableQueue(flow_control=flow_control, clear_on_resume=True)
    flow_control.resume()  # the tables' recovery
    queue.put_nowait("first record of a newly assigned partition")
    flow_control.resume()  # after the seek to the committed offsets
    assert queue.qsize() == 1


async def test_a_resume_after_a_suspension_still_clears() -> None:
    flow_control = FlowControlEvent()
    keep_handed_over_records(flow_control)
    queue: ThrowableQueue = ThrowableQueue(flow_control=flow_control, clear_on_resume=True)
    flow_control.resume()
    queue.put_nowait("a record of the previous assignment")
    flow_control.suspend()  # a rebalance begins
    flow_control.resume()
    assert queue.qsize() == 0
