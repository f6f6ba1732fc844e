"""Which number a sub-account sends from, and the reach of each sub-account on its way
to its number: the sub-account hop of the limits job, as pure functions.

Receipts carry the sub-account, not the business number, so a sub-account's reach
(`rules.Reach`, summed from its customers' changes) is counted under the subject it
resolves to (`subject_of`):
1. the number WAPIPE_SENDER_NUMBERS gives the sub-account;
2. else the number it gives the channel the sub-account's customers write to (the
   `recipient.channelId` of its latest inbound message, by time then value: a
   commutative choice, so any order of inbound messages learns the same channel);
3. else that channel itself when it is a phone number (digits);
4. else the sub-account itself, with the kind `sub_account` in every record: its
   number is not known.
When the subject changes (a channel learnt, the setting changed), the whole reach
moves: the old subject gets its negation, the new one all of it (`moves`), so each
subject's sum stays the sum of the reach of the sub-accounts resolved to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from processors.funnel.state import Attribute
from processors.limits.rules import Reach, ReachSteps, SubjectKind, add, add_steps, settle

SUB_ACCOUNT_PREFIX = "sub-account:"  # the internal key of a subject that is a sub-account
_DIGITS = re.compile(r"\+?[0-9]{5,15}")


@dataclass(frozen=True)
class Sender:
    """One sub-account: the channel its customers write to, its reach, and the subject its
    reach was last sent to."""

    channel: Attribute | None = None  # the latest inbound message's channel id
    reach: Reach = field(default_factory=Reach)
    subject: str | None = None


def number(text: str) -> str | None:
    """A business number as Meta's phone events name it (`displayPhoneNumber`: digits, no
    `+`); None when `text` is not one."""
    compact = text.replace(" ", "").replace("-", "")
    return compact.removeprefix("+") if _DIGITS.fullmatch(compact) else None


def subject_of(sub_account: str, channel: str | None, numbers: Mapping[str, str]) -> str:
    """The internal key of the subject a sub-account's reach counts under: a number, or
    `sub-account:<id>`."""
    for name in (sub_account, channel):
        if name is not None and name in numbers:
            return numbers[name]
    learnt = number(channel) if channel is not None else None
    return learnt if learnt is not None else SUB_ACCOUNT_PREFIX + sub_account


def subject_kind(subject: str) -> tuple[SubjectKind, str]:
    """(kind, id) of an internal subject key: the id is what the records are keyed by."""
    if subject.startswith(SUB_ACCOUNT_PREFIX):
        return "sub_account", subject.removeprefix(SUB_ACCOUNT_PREFIX)
    return "number", subject


def latest_channel(known: Attribute | None, at: str, channel: str) -> Attribute:
    """The channel of the latest inbound message, `known` or one to `channel` at `at`."""
    if known is not None and (known.at, known.value) >= (at, channel):
        return known
    return Attribute(at, channel)


def as_steps(reach: Reach) -> ReachSteps:
    """A reach as a delta that recreates it: a customer of the base (counted since before
    the cut) as an interval from the cut. Equal to the reach at every time the reach knows."""
    steps: ReachSteps = dict(reach.intervals)
    if reach.settled_before is not None:
        for end, count in reach.base.items():
            steps[f"{reach.settled_before}/{end}"] = count
    return steps


def moves(
    sub_account: str, before: Sender, changes: ReachSteps, after_channel: Attribute | None,
    numbers: Mapping[str, str], cut: str,
) -> tuple[Sender, dict[str, ReachSteps]]:  # fmt: skip
    """The sender after a batch (its reach deltas summed in `changes`, its channel now
    `after_channel`), and what each subject must add: the batch's changes to an
    unchanged subject; on a change, all of the reach to the new subject and its negation
    (as it was before) to the old."""
    reach = settle(add(before.reach, changes), cut)
    channel = after_channel.value if after_channel is not None else None
    subject = subject_of(sub_account, channel, numbers)
    sends: dict[str, ReachSteps] = {}
    if before.subject in (None, subject):
        if changes:
            sends[subject] = dict(changes)
    else:
        assert before.subject is not None
        sends[before.subject] = {key: -count for key, count in as_steps(before.reach).items()}
        sends[subject] = add_steps(sends.get(subject, {}), as_steps(reach))
    return Sender(after_channel, reach, subject), {s: c for s, c in sends.items() if c}


def dump_sender(sender: Sender) -> bytes:
    return orjson.dumps(sender)


def load_sender(data: bytes) -> Sender:
    raw = orjson.loads(data)
    channel = Attribute(**raw["channel"]) if raw["channel"] is not None else None
    return Sender(channel, Reach(**raw["reach"]), raw["subject"])
