"""A simulator timeline as the reliability tests post it: in a random order (arrival
order is not event order), evenly over its span, or a share of it at once (retries)."""

from __future__ import annotations

import random
from dataclasses import replace

from simulator import Timeline


def shuffled(timeline: Timeline, seed: int, share: float = 1.0) -> Timeline:
    """`share` of `timeline`'s events in a random order, posted evenly over its span (a
    share below 1: all at once, as fast as the plan's rate allows)."""
    rng = random.Random(seed)
    events = rng.sample(timeline.events, k=round(share * len(timeline.events)))
    step = timeline.plan.span / len(events) if share == 1.0 else 0.0
    return replace(timeline, events=tuple(replace(event, post_at=index * step)
                                          for index, event in enumerate(events)))  # fmt: skip
