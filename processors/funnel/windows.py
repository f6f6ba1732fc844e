"""The funnel's windows: what one message contributes to its 1-minute and 1-hour
windows, and the record of a window's counts.

A window is keyed by its size, its start (event time), the sub-account, the
destination country and the template category. A message contributes to the
window of each transition it made: `sent` at its `sentAt`, `delivered` at its
`deliveredAt` (with its time to deliver), `read` at its `readAt` (with its time
to read), `replied` at its `repliedAt`, `undelivered` (by error code) at its
failure when the customer's phone never got it. `contributions` is a pure
function of the message's state, so a window total is the sum over messages of
their contributions, whatever order and repetition the receipts came in, and each
change of a state changes its windows by `changes(before, after)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Generic, NamedTuple, Protocol, TypeVar

from processors.funnel.state import FAILURE_STATES, Attribute, MessageState
from processors.normalize import canonical


class Window(Protocol):
    """A window of any kind: the funnel's `WindowKey`, billing's `BillingKey`."""

    @property
    def size(self) -> str: ...

    @property
    def start(self) -> str: ...


K = TypeVar("K", bound=Window)  # a window's key: WindowKey, BillingKey
Counts = dict[str, int]  # "sent", "delivered", ..., "ttd:<le>", "ttr:<le>", "error:<code>"
# Free-form messages sent outside the customer's 24-hour service window, and those of
# them that failed: counted by the conversations job (processors/conversations), which
# sends its changes to the funnel's deltas.
FREEFORM_OUTSIDE = "freeform_outside"
FREEFORM_OUTSIDE_FAILED = "freeform_outside_failed"

WINDOW_SECONDS = {"1m": 60, "1h": 3_600}  # the funnel's window sizes
SIZE_SECONDS = {**WINDOW_SECONDS, "1d": 86_400}  # every window size (billing has 1h and 1d)
STAGES = ("sent", "delivered", "read", "replied", "undelivered")
# Upper bounds (seconds) of the time-to-deliver and time-to-read buckets: from a
# second to the 10 days read receipts keep coming after delivery.
TIME_BUCKETS = (1, 5, 10, 30, 60, 300, 900, 1_800, 3_600, 10_800, 21_600, 43_200, 86_400,
                259_200, 864_000)  # fmt: skip
QUANTILES = (0.5, 0.9, 0.99)
UNKNOWN = ""  # a dimension not (yet) known: null in records, "unknown" in metrics
_SEPARATOR = "|"


class WindowKey(NamedTuple):
    """One window of one sub-account, country and template category. A named tuple,
    not a dataclass: the window arithmetic builds and hashes several per event."""

    size: str  # "1m" or "1h"
    start: str  # canonical ISO time
    sub_account_id: str
    country: str
    template_category: str

    def encode(self) -> str:
        """The window's id: stable, readable, and the key of the windows tables. A `|`
        or `%` inside a value (sub-account ids are free text) is percent-escaped."""
        return encode_id(*self)

    @classmethod
    def decode(cls, text: str) -> WindowKey:
        return cls(*decode_id(text))

    @property
    def end(self) -> str:
        return window_end(self.start, self.size)


def window_end(start: str, size: str) -> str:
    """The end (exclusive) of the `size` window starting at `start`."""
    return canonical.format_timestamp(window_end_time(start, size))


def window_start(at: str, size: str) -> str:
    """The start of the `size` window holding the canonical time `at` (string arithmetic:
    canonical times are `YYYY-MM-DDTHH:MM:SS.mmmZ`)."""
    if size == "1m":
        return at[:17] + "00.000Z"
    return at[:14] + "00:00.000Z" if size == "1h" else at[:11] + "00:00:00.000Z"


def contributions(state: MessageState) -> dict[WindowKey, Counts]:
    """What `state` adds to each window: one entry per window it made a transition in."""
    sub_account, country = dimension(state.sub_account_id), dimension(state.country)
    dims = (sub_account, country, dimension(state.template_category))
    windows: dict[WindowKey, Counts] = {}

    def add(at: str, counts: Counts) -> None:
        for size in WINDOW_SECONDS:
            window = windows.setdefault(WindowKey(size, window_start(at, size), *dims), {})
            for name, count in counts.items():
                window[name] = window.get(name, 0) + count

    if state.sent_at is not None:
        add(state.sent_at, {"sent": 1})
    if state.delivered_at is not None:
        waited = _seconds(state.sent_at or state.delivered_at, state.delivered_at)
        add(state.delivered_at, {"delivered": 1, f"ttd:{time_bucket(waited)}": 1})
    if state.read_at is not None:
        waited = _seconds(state.delivered_at or state.read_at, state.read_at)
        add(state.read_at, {"read": 1, f"ttr:{time_bucket(waited)}": 1})
    if state.replied_at is not None:
        add(state.replied_at, {"replied": 1})
    failure = state.failure
    if failure is not None and state.state in FAILURE_STATES:
        code = UNKNOWN if failure.error_code is None else str(failure.error_code)
        add(failure.at, {"undelivered": 1, f"error:{code}": 1})
    return windows


def changes(before: Mapping[K, Counts], after: Mapping[K, Counts]) -> dict[K, Counts]:
    """`after - before` per window, without the windows that do not change."""
    result: dict[K, Counts] = {}
    for key in before.keys() | after.keys():
        difference = subtract(after.get(key, {}), before.get(key, {}))
        if difference:
            result[key] = difference
    return result


Step = tuple[Mapping[K, Counts], Mapping[K, Counts], datetime | None]  # before, after, when


@dataclass(frozen=True)
class Change(Generic[K]):
    """What one subject (a message, a customer pair) contributed to the windows before a
    batch and after it, and the stream times of the first and last record of the batch
    that changed it; `steps()` gives the same change record by record, each with its
    stream time, for when a window closed in between. `earliest`: no window it touched,
    before, after or in between, starts before this time (its events' earliest)."""

    before: Mapping[K, Counts]
    after: Mapping[K, Counts]
    first: datetime | None
    last: datetime | None
    earliest: str
    steps: Callable[[], Iterable[Step[K]]]


def earliest_start(event_times: Iterable[str], before: Iterable[Window]) -> str:
    """A `Change.earliest`: the earliest of a subject's events in the batch and of the
    windows it contributed to before it (its windows, before, after or in between,
    start at or after one of those)."""
    return min(min(event_times), min((window.start for window in before), default="9999"))


@dataclass
class Horizon(Generic[K]):
    """A second, shorter finality over the same changes (the rate alerts': a window's
    end plus their delay): each change also counts toward `key(window)` (None: not at
    all) while its record's stream time has not passed the window's end plus `after`.
    `summed_changes` adds them up in `deltas`, judged record by record as the windows."""

    key: Callable[[K], K | None]
    after: timedelta
    size: str  # the size of the windows that count (`key` is None for the others)
    deltas: dict[K, Counts] = field(default_factory=dict)

    def closes_between(self, earliest: str, last: datetime) -> bool:
        """Whether a window of a subject whose earliest time is `earliest` may pass the
        horizon by `last`: none ends before the `size` window holding `earliest`."""
        return last > window_end_time(window_start(earliest, self.size), self.size) + self.after


def summed_changes(
    subjects: Iterable[Change[K]], final_after: timedelta, horizon: Horizon[K] | None = None
) -> tuple[dict[K, Counts], int]:
    """A batch's change to each window: the sum of `after - before` over the subjects it
    changed, and how many changes were dropped because their window was final
    (`is_final`) at the stream time of the record that made them. One delta per window
    and batch. With a `horizon`, also its sums (in `horizon.deltas`).

    Each record is judged at its own stream time, so the outcome is the same however the
    records are batched (a sparse replay's batch can span days of event time). A
    subject's change over the batch is the sum of its records' changes (they telescope),
    so it is taken whole unless a window it touched may have closed (or passed the
    horizon) between its first and its last record; then its records are taken one by
    one."""
    deltas: dict[K, Counts] = {}
    late = 0
    cut: dict[datetime, str] = {}  # stream time -> the earliest window start still open

    def take(key: K, change: Counts, at: datetime | None) -> None:
        nonlocal late
        if is_final(key, at, final_after):
            late += 1
            return
        _add(deltas, key, change)
        if horizon is not None:
            counted = horizon.key(key)
            if counted is not None and not is_final(key, at, horizon.after):
                _add(horizon.deltas, counted, change)

    for subject in subjects:
        last = subject.last
        if subject.first != last and last is not None:
            if last not in cut:  # no window starting at or after this is final by `last`
                cut[last] = canonical.format_timestamp(last - final_after)
            if subject.earliest < cut[last] or (
                horizon is not None and horizon.closes_between(subject.earliest, last)
            ):
                for before, after, at in subject.steps():
                    for key, change in changes(before, after).items():
                        take(key, change, at)
                continue
        for key, change in changes(subject.before, subject.after).items():
            take(key, change, last)
    if horizon is not None:
        _drop_zeros(horizon.deltas)
    return _drop_zeros(deltas), late


def _add(sums: dict[K, Counts], key: K, change: Counts) -> None:
    """Add in place (the batch's sums are its own; `_drop_zeros` tidies them once)."""
    total = sums.get(key)
    if total is None:
        sums[key] = dict(change)
        return
    for name, count in change.items():
        total[name] = total.get(name, 0) + count


def _drop_zeros(sums: dict[K, Counts]) -> dict[K, Counts]:
    """Without the counts, and then the windows, whose changes cancelled out within the
    batch (messages moved between windows)."""
    for key in list(sums):
        counts = sums[key]
        if 0 in counts.values():
            counts = sums[key] = {name: count for name, count in counts.items() if count}
        if not counts:
            del sums[key]
    return sums


def add_counts(left: Mapping[str, int], right: Mapping[str, int]) -> Counts:
    total = dict(left)
    for name, count in right.items():
        total[name] = total.get(name, 0) + count
        if total[name] == 0:
            del total[name]
    return total


def subtract(left: Mapping[str, int], right: Mapping[str, int]) -> Counts:
    return add_counts(left, {name: -count for name, count in right.items()})


def is_final(key: Window, stream_time: datetime | None, final_after: timedelta) -> bool:
    """Whether window `key` is final at `stream_time`: `final_after` (the grace period)
    past its end. Stream time, not the wall clock: a replay of the events decides
    alike, and a window stays open while no later event has come (None: none yet).

    A final window takes no more changes (a webhook delayed by days, or an old
    message's sub-account learnt late); they are dropped and counted. The tables
    keep a window's total for a day longer than that, so a window that still takes
    changes always finds its total.
    """
    if stream_time is None:
        return False
    return stream_time > window_end_time(key.start, key.size) + final_after


@lru_cache(maxsize=4096)  # a batch touches few windows, many times each
def window_end_time(start: str, size: str) -> datetime:
    return canonical.parse_timestamp(start, "windowStart") + timedelta(seconds=SIZE_SECONDS[size])


# --- the record of whatsapp.funnel ----------------------------------------------------------------
def funnel_record(key: WindowKey, counts: Mapping[str, int]) -> dict[str, object]:
    """The record of `whatsapp.funnel` for one window (camelCase, absolute values)."""
    sent, delivered, read, replied, undelivered = (counts.get(stage, 0) for stage in STAGES)
    return {
        "windowId": key.encode(),
        "window": key.size,
        "windowStart": key.start,
        "windowEnd": key.end,
        "subAccountId": key.sub_account_id or None,
        "country": key.country or None,
        "templateCategory": key.template_category or None,
        "sent": sent,
        "delivered": delivered,
        "read": read,
        "replied": replied,
        "undelivered": undelivered,
        "deliveryRate": _ratio(delivered, sent),
        "readRate": _ratio(read, delivered),
        "replyRate": _ratio(replied, delivered),
        "failureRate": _ratio(undelivered, delivered + undelivered),
        "timeToDeliverSeconds": distribution(counts, "ttd"),
        "timeToReadSeconds": distribution(counts, "ttr"),
        "freeformOutsideWindow": counts.get(FREEFORM_OUTSIDE, 0),
        "freeformOutsideWindowFailed": counts.get(FREEFORM_OUTSIDE_FAILED, 0),
        "undeliveredByErrorCode": {
            (name.split(":", 1)[1] or "unknown"): count
            for name, count in sorted(counts.items())
            if name.startswith("error:")
        },
    }


def distribution(counts: Mapping[str, int], prefix: str) -> dict[str, object]:
    """A time distribution: cumulative buckets (`le`, as Prometheus has them), its count
    and estimated quantiles (None while empty)."""
    cumulative: dict[str, int] = {}
    running = 0
    for bound in (*TIME_BUCKETS, None):
        label = _bucket_label(bound)
        running += counts.get(f"{prefix}:{label}", 0)
        cumulative[label] = running
    result: dict[str, object] = {"count": running, "buckets": cumulative}
    for q in QUANTILES:
        result[f"p{round(q * 100)}"] = quantile(cumulative, q)
    return result


def quantile(cumulative: Mapping[str, int], q: float) -> float | None:
    """The q-quantile of bucketed times, interpolated linearly inside its bucket (as
    Prometheus's histogram_quantile does); the largest bound if it is beyond it."""
    total = cumulative[_bucket_label(None)]
    if total == 0:
        return None
    rank = q * total
    lower, below = 0.0, 0
    for bound in TIME_BUCKETS:
        count = cumulative[_bucket_label(bound)]
        if count >= rank and count > below:
            return round(lower + (bound - lower) * (rank - below) / (count - below), 3)
        lower, below = float(bound), count
    return float(TIME_BUCKETS[-1])


def time_bucket(seconds: float) -> str:
    """The label of the bucket holding a duration of `seconds`."""
    for bound in TIME_BUCKETS:
        if seconds <= bound:
            return _bucket_label(bound)
    return _bucket_label(None)


def _bucket_label(bound: int | None) -> str:
    return "+Inf" if bound is None else str(bound)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole > 0 else None


def _seconds(start: str, end: str) -> float:
    return max(0.0, (_parse(end) - _parse(start)).total_seconds())


def _parse(at: str) -> datetime:
    return canonical.parse_timestamp(at, "at")


def encode_id(*values: str) -> str:
    """A window's id: its values joined with `|`, a `|` or `%` inside one percent-escaped."""
    return _SEPARATOR.join(_escape(value) for value in values)


def decode_id(text: str) -> list[str]:
    return [_unescape(value) for value in text.split(_SEPARATOR)]


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace(_SEPARATOR, "%7C")


def _unescape(value: str) -> str:
    return value.replace("%7C", _SEPARATOR).replace("%25", "%")


def dimension(attribute: Attribute | None) -> str:
    return UNKNOWN if attribute is None else attribute.value
