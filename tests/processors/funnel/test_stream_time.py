"""The funnel's and the conversations' window folds against stream time, as plain
functions (no Kafka): a record's changes are judged at the stream time its own record
brought (the highest record time so far), so

- any batching of the same records in the same order gives the same window totals,
  also when windows close mid-batch (a sparse replay's batch spans days of event time).
  (How many changes were dropped as late is a metric counted per subject, window and
  batch: a batch that telescopes two dropped changes of a window counts one.)
- when no record comes later than the grace period, nothing is dropped and the totals
  are what the events alone determine, whatever the stream time's advances.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.conversations.batch import PairFold, inbound_event, receipt_event
from processors.conversations.rules import Conversation, OutboundObservation
from processors.funnel.batch import MessageFold
from processors.funnel.rate_alerts import RateThresholds
from processors.funnel.state import MessageState, Observation, merge
from processors.funnel.windows import Counts, WindowKey, add_counts, contributions
from processors.normalize import canonical

BASE = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
GRACE = timedelta(hours=6)
# The rate alerts' horizon: the 1 h windows up to 10 minutes past their end.
RATES = RateThresholds(window="1h", delay=timedelta(minutes=10))
HOURS = 3_600


def at(seconds: float) -> str:
    return canonical.format_timestamp(BASE + timedelta(seconds=seconds))


_STATES = ("sent", "delivered", "read", "undelivered", "replied")
observations = st.builds(
    Observation,
    at=st.integers(0, 40 * HOURS).map(at),
    state=st.sampled_from(_STATES),
    detail=st.sampled_from([None, "delivered_to_recipient"]),
    error_code=st.sampled_from([None, 1022]),
    sub_account_id=st.sampled_from([None, "acme", "globex"]),
    country=st.sampled_from([None, "ID"]),
    template_category=st.sampled_from([None, "marketing"]),
)
# (umid, observation, the record's own time: when it came, at or after its event)
records = st.lists(
    st.tuples(st.integers(0, 5), observations, st.integers(0, 4 * HOURS)), min_size=1, max_size=50
)

Record = tuple[int, Observation, int]


def _stream_times(log: list[Record]) -> list[datetime]:
    """The stream time at each record: the highest record time so far."""
    times, latest = [], None
    for _, observation, delay in log:
        came = canonical.parse_timestamp(observation.at, "at") + timedelta(seconds=delay)
        latest = came if latest is None or came > latest else latest
        times.append(latest)
    return times


Sums = dict[tuple[str, WindowKey], Counts]  # ("window" or "alerts", window) -> its sum


def _funnel(log: list[Record], sizes: list[int]) -> tuple[Sums, int]:
    """The merge hop over `log` in batches of `sizes` (cycled): the windows' summed
    deltas and the rate alerts' sums, and the changes dropped as late."""
    states: dict[str, MessageState] = {}
    totals: dict[WindowKey, Counts] = {}
    alerts: dict[WindowKey, Counts] = {}
    late, position, turn = 0, 0, 0
    stream = _stream_times(log)
    while position < len(log):
        end = min(len(log), position + sizes[turn % len(sizes)])
        fold = MessageFold(states, GRACE)
        for (umid, observation, _), now in zip(log[position:end], stream[position:end],
                                               strict=True):  # fmt: skip
            fold.add(f"m-{umid}", observation, now)
        horizon = RATES.horizon()
        deltas, dropped = fold.window_deltas(horizon)
        late += dropped
        for sums, batch in ((totals, deltas), (alerts, horizon.deltas)):
            for window, counts in batch.items():
                sums[window] = add_counts(sums.get(window, {}), counts)
        states.update(fold.changed)
        position, turn = end, turn + 1
    return _tagged(totals, alerts), late


def _tagged(windows: dict[WindowKey, Counts], alerts: dict[WindowKey, Counts]) -> Sums:
    return {(tag, window): counts for tag, sums in (("window", windows), ("alerts", alerts))
            for window, counts in sums.items() if counts}  # fmt: skip


def _events_alone(log: list[Record]) -> dict[WindowKey, Counts]:
    states: dict[str, MessageState] = {}
    for umid, observation, _ in log:
        states[f"m-{umid}"] = merge(states.get(f"m-{umid}", MessageState(f"m-{umid}")), observation)
    totals: dict[WindowKey, Counts] = {}
    for state in states.values():
        for window, counts in contributions(state).items():
            totals[window] = add_counts(totals.get(window, {}), counts)
    return {window: counts for window, counts in totals.items() if counts}


@settings(max_examples=300, deadline=None)
@given(log=records, seed=st.integers(0, 2**32 - 1))
def test_any_batching_gives_the_same_windows(log: list[Record], seed: int) -> None:
    rng = random.Random(seed)
    one_by_one, late = _funnel(log, [1])
    batched, batched_late = _funnel(log, [rng.randint(1, 8) for _ in range(8)])
    whole, whole_late = _funnel(log, [len(log)])
    assert batched == one_by_one
    assert whole == one_by_one
    assert bool(batched_late) == bool(whole_late) == bool(late)


@settings(max_examples=200, deadline=None)
@given(log=records, seed=st.integers(0, 2**32 - 1))
def test_records_within_the_grace_give_what_the_events_alone_determine(
    log: list[Record], seed: int
) -> None:
    # Events within a span shorter than the grace, coming in any order and at any delay
    # within it: the stream never runs past a window's end by the grace, so nothing is
    # dropped, however the stream time advances.
    rng = random.Random(seed)
    span = int(GRACE.total_seconds()) - 60
    recent = [(umid, replace(observation, at=at(rng.randint(0, span))), rng.randint(0, 59))
              for umid, observation, _ in log]  # fmt: skip
    sums, late = _funnel(recent, [rng.randint(1, 8) for _ in range(8)])
    assert late == 0
    windows = {window: counts for (tag, window), counts in sums.items() if tag == "window"}
    assert windows == _events_alone(recent)


PAIRS = ("acme|+6281", "acme|+6282")
pair_events = st.one_of(
    st.builds(lambda t: inbound_event(at(t)), st.integers(0, 40 * HOURS)),
    st.builds(lambda t, failed: receipt_event("m-1", OutboundObservation(
        at=at(t), sub_account_id="acme", country="ID", failed=failed,
        error_code=1022 if failed else None)), st.integers(0, 40 * HOURS), st.booleans()),
)  # fmt: skip
pair_log = st.lists(st.tuples(st.sampled_from(PAIRS), pair_events, st.integers(0, 4 * HOURS)),
                    min_size=1, max_size=40)  # fmt: skip


def _pairs(log: list[tuple[str, dict[str, object], int]], sizes: list[int]) -> object:
    states: dict[str, Conversation] = {}
    totals: dict[WindowKey, Counts] = {}
    alerts: dict[WindowKey, Counts] = {}
    late = stale = position = turn = 0
    times, latest = [], None
    for _, event, delay in log:
        happened = str(event["inbound"] if "inbound" in event else event["receipt"]["at"])  # type: ignore[index]
        came = canonical.parse_timestamp(happened, "at") + timedelta(seconds=delay)
        latest = came if latest is None or came > latest else latest
        times.append(latest)
    while position < len(log):
        end = min(len(log), position + sizes[turn % len(sizes)])
        fold = PairFold(states, timedelta(hours=30))
        for (pair, event, _), now in zip(log[position:end], times[position:end], strict=True):
            fold.add(pair, event, now)
        horizon = RATES.horizon()
        deltas, dropped = fold.window_deltas(GRACE, horizon)
        late, stale = late + bool(dropped), stale + fold.stale
        for sums, batch in ((totals, deltas), (alerts, horizon.deltas)):
            for window, counts in batch.items():
                sums[window] = add_counts(sums.get(window, {}), counts)
        states.update(fold.changed)  # unpruned: pruning keeps every answer at the horizon
        position, turn = end, turn + 1
    return _tagged(totals, alerts), stale


@settings(max_examples=200, deadline=None)
@given(log=pair_log, seed=st.integers(0, 2**32 - 1))
def test_a_pairs_windows_and_stale_events_do_not_depend_on_the_batching(
    log: list[tuple[str, dict[str, object], int]], seed: int
) -> None:
    rng = random.Random(seed)
    assert _pairs(log, [rng.randint(1, 6) for _ in range(6)]) == _pairs(log, [1])
