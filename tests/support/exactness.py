"""The reliability tests' final check: what a simulator run posted, against what the
pipeline derived from it.

`assert_exact` waits (bounded) until every body is on the raw topic, every message's
last `message_state` record and every funnel window's last record equal the pure fold
of the bodies (normalize's rules, then the funnel's merge: `steady_sender.fold_bodies`),
and the simulator's own oracle (written from the contract, not from the pipeline's
code) agrees on every message's state and every sub-account's funnel totals. It
returns the figures the reliability table of docs/reliability.md reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from steady_sender import fold_bodies

from simulator import Summary, timeline_bodies
from wapipe.settings import Settings
from wapipe.topics import INBOUND, RAW, STATUS

STAGES = ("sent", "delivered", "read", "replied", "undelivered")  # a funnel window's counts


@dataclass(frozen=True)
class Figures:
    sent: int  # distinct webhooks the simulator posted
    acknowledged: int
    found: int  # of those, on the raw topic
    lost: int
    raw_duplicates: int  # extra copies on the raw topic (retries, replays after a crash)
    # extra copies of one event on the status and inbound topics: normalize is at least
    # once, the funnel absorbs them (reported, not asserted)
    typed_duplicates: int
    states: int  # message states found exact
    windows: int  # funnel windows found exact
    funnel: dict[str, int]  # totals over all sub-accounts

    def row(self) -> str:
        """`sent | acknowledged | found | lost | duplicated in derived data`: a row of the
        table in docs/reliability.md."""
        return (f"{self.sent:,} | {self.acknowledged:,} | {self.found:,} | {self.lost} | "
                f"0 ({self.states:,} states, {self.windows:,} windows exact)")  # fmt: skip


async def assert_exact(
    pipeline: Any, summary: Summary, follow_topic: Callable[..., Any], within: float = 240.0
) -> Figures:
    """Wait until `pipeline`'s output (tests/reliability/conftest.py, `Pipeline`) is
    exactly what `summary`'s webhooks make."""
    settings: Settings = pipeline.settings
    states, windows, a_worker_died = pipeline.states, pipeline.windows, pipeline.a_worker_died
    bodies = timeline_bodies(summary.timeline)
    story = fold_bodies(bodies)
    raw = await follow_topic(settings, RAW)
    await raw.until(lambda: set(bodies) <= raw.counts.keys(), "every body on the raw topic",
                    within)  # fmt: skip
    expected_states = story.expected_message_states()
    expected_windows = story.expected_windows()

    def windows_now() -> dict[str, Any]:
        return {window: value for window, value in windows.latest_json().items()
                if any(value[stage] for stage in STAGES)}  # fmt: skip

    await states.until(lambda: states.latest_json() == expected_states,
                       "every message's exact final state", within, a_worker_died)  # fmt: skip
    await windows.until(lambda: windows_now() == expected_windows,
                        "every funnel window's exact totals", within, a_worker_died)  # fmt: skip

    oracle = summary.expected()
    latest = states.latest_json()
    wrong = [umid for umid, result in oracle.messages.items()
             if latest.get(umid, {}).get("state") != result.state]  # fmt: skip
    assert not wrong, f"{len(wrong)} messages differ from the simulator's oracle: {wrong[:5]}"
    totals: dict[str, Counter[str]] = {}
    for value in windows_now().values():
        if value["window"] == "1h":
            totals.setdefault(value["subAccountId"] or "", Counter()).update(
                {stage: value[stage] for stage in STAGES}
            )
    oracle_totals = {sub: Counter({stage: getattr(counts, stage) for stage in STAGES})
                     for sub, counts in oracle.funnel.items()}  # fmt: skip
    assert {sub: +counts for sub, counts in totals.items()} == {
        sub: +counts for sub, counts in oracle_totals.items()
    }

    typed_duplicates = 0
    for spec in (STATUS, INBOUND):
        follower = await follow_topic(
            settings, spec, lambda r: dict(r.headers)["wapipe-dedupe-key"].decode()
        )
        await follower.drain()
        typed_duplicates += follower.duplicates
    return Figures(
        sent=len(bodies),
        acknowledged=summary.acknowledged,
        found=len(set(bodies) & raw.counts.keys()),
        lost=len(set(bodies) - raw.counts.keys()),
        raw_duplicates=raw.duplicates,
        typed_duplicates=typed_duplicates,
        states=len(expected_states),
        windows=len(expected_windows),
        funnel=dict(sum(oracle_totals.values(), Counter())),
    )
