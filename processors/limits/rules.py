"""Messaging limits: the distinct customers a subject (a business number, or a sub-account
whose number is unknown) reached in the rolling 24 hours, its status against its tier's
limit, as pure functions.

A customer is reached at T when one of its contact times c (a business-initiated
message's first sent-or-later time) has c <= T < c + 24 h: its reach is the union of the
half-open intervals [c, c + 24 h) (`reach_intervals`; touching ones merge).

Why the count is exact whatever the order and grouping of the deltas:
- a customer's contribution (`steps`) is its merged intervals, one entry
  `<start>/<end>` each: +1 from the start, -1 from the end, kept paired (not summed
  per time) because who leaves next depends on which ends belong to intervals covering
  the time asked about. A customer's intervals are disjoint, so the entries covering
  T are the customers reached at T;
- a change of a customer's contact times sends `step_changes(before, after)`; its
  changes telescope to its current contribution, in any order;
- a subject's state (`Reach`) is the sum of its customers' changes: addition of
  integer multisets, commutative and associative (`add`). Each delta is applied once
  (the job writes it in a transaction), so no idempotence is needed, nor given. Part-way
  a state may hold negative counts (a removal before its addition); they cancel;
- `settle(reach, cut)` projects the state onto the times >= cut: an interval over by
  the cut is dropped, one that started before it is kept by its end only (the base:
  the customers counted at the cut, by when they leave). The projection of a sum is the
  sum of the projections, and a later cut after an earlier one is the later cut alone,
  so `add` and `settle` commute: a delta arriving after a settle, however late, gives
  the state it would have given before. Counts at times >= the cut are unchanged;
  earlier ones are forgotten (`reached_at` refuses them). The job settles at
  `now - 24 h - lateness`: every time it may still publish a status of stays exact.

The alerts on these counts are in `limits.alerts`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from processors.normalize import canonical

REACH_WINDOW = timedelta(hours=24)
DEFAULT_NEAR_SHARE = 0.8
NEAR = "MESSAGING_LIMIT_NEAR"
REACHED = "MESSAGING_LIMIT_REACHED"
# How long after the 24-hour window a subject's reach stays exact (its settle cut): a
# receipt later than that changes no count still published and no crossing still known.
LATENESS = timedelta(hours=6)

SubjectKind = Literal["number", "sub_account"]
# Intervals `<start>/<end>` (canonical times) -> how many: a customer's contribution, a
# change of it (the delta the job sends, JSON as it is) and the sum in a `Reach`.
ReachSteps = dict[str, int]
_K = TypeVar("_K")
_PAIR = "/"  # canonical times hold no `/`
_TIER = re.compile(r"TIER_([0-9]+)(K?)")


def tier_limit(tier: str | None) -> int | None:
    """The distinct customers per rolling 24 h `tier` allows: `TIER_<n>` is n, `TIER_<n>K`
    n thousand. None when there is no limit to watch: TIER_UNLIMITED (or the older
    UNLIMITED), TIER_NOT_SET, no tier, or a name we cannot read."""
    match = _TIER.fullmatch(tier.strip().upper()) if tier is not None else None
    limit = int(match[1]) * (1_000 if match[2] else 1) if match else 0
    return limit if limit > 0 else None


def near_threshold(limit: int, near_share: float = DEFAULT_NEAR_SHARE) -> int:
    """The count at which a subject is near its limit: `near_share` of it, rounded up."""
    if not 0 < near_share <= 1:
        raise ValueError(f"near_share must be in (0, 1], got {near_share}")
    # Rounded first: 0.7 * 250 is 174.99999999999997 in floating point.
    return max(1, math.ceil(round(near_share * limit, 9)))


# --- one customer -------------------------------------------------------------------------
def reach_intervals(contact_times: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """When a customer counts as reached: the union of `[c, c + 24 h)` over its contact
    times, as sorted, disjoint, half-open (start, end) intervals."""
    merged: list[list[datetime]] = []
    for contact in sorted({_parse(c) for c in contact_times}):
        if merged and contact <= merged[-1][1]:  # overlapping or touching: one stretch
            merged[-1][1] = contact + REACH_WINDOW
        else:
            merged.append([contact, contact + REACH_WINDOW])
    return tuple((_format(start), _format(end)) for start, end in merged)


def steps(intervals: Iterable[tuple[str, str]]) -> ReachSteps:
    """A customer's contribution to its subject's reach: one entry per interval."""
    result: ReachSteps = {}
    for start, end in intervals:
        _bump(result, f"{start}{_PAIR}{end}", 1)
    return result


def step_changes(before: Mapping[str, int], after: Mapping[str, int]) -> ReachSteps:
    """`after - before` without the entries that do not change: the delta to send."""
    return add_steps(after, {key: -count for key, count in before.items()})


def add_steps(left: Mapping[str, int], right: Mapping[str, int]) -> ReachSteps:
    """The sum of two deltas (a batch's deltas, summed first, are added to a state once)."""
    total = dict(left)
    for key, count in right.items():
        _bump(total, key, count)
    return total


# --- one subject --------------------------------------------------------------------------
@dataclass(frozen=True)
class Reach:
    """A subject's summed reach (see the module docstring). JSON as it is: orjson writes
    it, `Reach(**fields)` reads it back."""

    intervals: Mapping[str, int] = field(default_factory=dict)  # each starting >= the cut
    # The base: end -> count of the intervals that started before the cut and end after it.
    base: Mapping[str, int] = field(default_factory=dict)
    settled_before: str | None = None  # the cut: counts before it are no longer known


def add(reach: Reach, changes: Mapping[str, int]) -> Reach:
    """`reach` with a delta summed in (commutative, associative). It copies the state: sum
    a batch's deltas with `add_steps` and add them once."""
    intervals, base = dict(reach.intervals), dict(reach.base)
    for key, count in changes.items():
        _place(intervals, base, reach.settled_before, key, count)
    return replace(reach, intervals=intervals, base=base)


def settle(reach: Reach, before: str) -> Reach:
    """`reach` with every step older than `before` folded into its base: the counts at
    times >= `before` are unchanged, earlier ones forgotten. A cut behind the state's own
    changes nothing."""
    if reach.settled_before is not None and before <= reach.settled_before:
        return reach
    base = {end: count for end, count in reach.base.items() if end > before}
    intervals: dict[str, int] = {}
    for key, count in reach.intervals.items():
        _place(intervals, base, before, key, count)
    return Reach(intervals, base, before)


def reached_at(reach: Reach, at: str) -> int:
    """How many distinct customers the subject reached in the 24 hours up to `at`."""
    _check_known(reach, at)
    return sum(count for end, count in reach.base.items() if end > at) + sum(
        count for key, count in reach.intervals.items() if _covers(key, at)
    )


def oldest_leaves_at(reach: Reach, at: str) -> str | None:
    """When the first customer counted at `at` stops counting (the earliest end after `at`
    of an interval covering it); None when nobody is counted."""
    _check_known(reach, at)
    leaving = {end: count for end, count in reach.base.items() if end > at}
    for key, count in reach.intervals.items():
        if _covers(key, at):
            _bump(leaving, _interval(key)[1], count)
    return min((end for end, count in leaving.items() if count > 0), default=None)


def crossing_at(reach: Reach, threshold: int, at: str) -> str | None:
    """The start of the stretch up to `at` during which the count stayed >= `threshold`:
    when it crossed. None when the count at `at` is below it, or when the stretch began at
    or before the cut (its start is no longer known)."""
    count = reached_at(reach, at)
    if count < threshold:
        return None
    change = {end: -n for end, n in reach.base.items() if end <= at}  # time -> net step
    for key, n in reach.intervals.items():
        start, end = _interval(key)
        if start <= at:
            _bump(change, start, n)
        if end <= at:
            _bump(change, end, -n)
    cut = reach.settled_before
    for moment in sorted(change, reverse=True):
        # The intervals that ended at the cut are forgotten: the count just before it is
        # not known, so neither is a crossing there.
        if cut is not None and moment <= cut:
            break
        count -= change[moment]  # now the count just before `moment`
        if count < threshold:
            return moment
    return None


# --- status: the record of whatsapp.messaging_limits -------------------------------------------
@dataclass(frozen=True)
class LimitStatus:
    """A subject against its messaging limit at one time."""

    subject: str  # the business number, or the sub-account when the number is unknown
    subject_kind: SubjectKind
    tier: str | None  # as Meta names it (None: not known yet)
    limit: int | None  # distinct customers per rolling 24 h; None: unlimited or unknown tier
    reached: int  # distinct customers reached in the 24 hours up to `at`
    headroom: int | None  # limit - reached: negative past the limit; None without a limit
    used_share: float | None  # reached / limit, 6 decimals; None without a limit
    oldest_leaves_at: str | None  # when the first counted customer stops counting, if any
    at: str  # the time the status is of (canonical)


def limit_status(
    subject: str, subject_kind: SubjectKind, reach: Reach, tier: str | None, at: str
) -> LimitStatus:
    """The status of `subject` at `at`, under its `tier` at that time."""
    limit, reached = tier_limit(tier), reached_at(reach, at)
    headroom = None if limit is None else limit - reached
    share = None if limit is None else round(reached / limit, 6)
    leaves = oldest_leaves_at(reach, at)
    return LimitStatus(subject, subject_kind, tier, limit, reached, headroom, share, leaves, at)


def messaging_limit_value(status: LimitStatus) -> dict[str, object]:
    """The record of `whatsapp.messaging_limits`, keyed by `subject`: the fields of
    `LimitStatus`, camelCase."""
    return {
        "subject": status.subject, "subjectKind": status.subject_kind, "tier": status.tier,
        "limit": status.limit, "reached": status.reached, "headroom": status.headroom,
        "usedShare": status.used_share, "oldestLeavesAt": status.oldest_leaves_at,
        "at": status.at,
    }  # fmt: skip


# --- helpers ------------------------------------------------------------------------------------
def _place(
    intervals: dict[str, int], base: dict[str, int], cut: str | None, key: str, count: int
) -> None:
    """Adds `count` of interval `key` to a state settled at `cut`: the projection."""
    start, end = _interval(key)
    if cut is None or start >= cut:
        _bump(intervals, key, count)
    elif end > cut:
        _bump(base, end, count)
    # else: over by the cut, it counts at no time the state still knows


def _bump(counts: dict[_K, int], key: _K, count: int) -> None:
    total = counts.get(key, 0) + count
    if total:
        counts[key] = total
    else:
        counts.pop(key, None)


def _interval(key: str) -> tuple[str, str]:
    start, _, end = key.partition(_PAIR)
    return start, end


def _covers(key: str, at: str) -> bool:
    start, end = _interval(key)
    return start <= at < end


def _check_known(reach: Reach, at: str) -> None:
    if reach.settled_before is not None and at < reach.settled_before:
        raise ValueError(f"the reach at {at} is not known: settled before {reach.settled_before}")


def _parse(at: str) -> datetime:
    return canonical.parse_timestamp(at, "at")


def _format(moment: datetime) -> str:
    return canonical.format_timestamp(moment)
