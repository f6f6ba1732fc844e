"""What a simulation run is asked to do, and how its story time maps to real time.

Two clocks meet here. *Story time* is the time of the events themselves (a read
three hours after delivery is three story hours later); *real time* is when the
sender posts them. `time_scale` story seconds pass per real second, so a demo
can show a day of traffic in a minute. Event times stay in story time: a
compressed run still tells the pipeline that the read came three hours later.

Event times are anchored so that the run's last events happen about "now"
(`anchor`): a record's event time is its Kafka timestamp, and Kafka refuses
timestamps more than an hour in the future (Kafka 4's default
`message.timestamp.after.max.ms`), so the story lies in the recent past and
never ahead of the wall clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# Webhooks a message yields on average (queued/sent/delivered/read receipts, a
# share of replies and inbound messages): sizes the default message count so
# that a run posts about `rate` webhooks per second.
WEBHOOKS_PER_MESSAGE = 2.6
STORIES = ("mixed", "guardrails")
GUARDRAILS_SPAN = (60.0, 12 * 3600.0)  # story seconds the guardrails story fits in


@dataclass(frozen=True)
class Plan:
    """A simulation: its seed, its pace, its length and the population it plays with.

    `rate` is webhooks per real second: the target of the default message count
    and, in the sender, a cap (posts are paced, never faster than `rate`).
    """

    seed: int = 1
    rate: float = 20.0
    duration: float = 60.0  # real seconds over which the story's webhooks are posted
    time_scale: float = 1.0  # story seconds per real second
    messages: int | None = None  # outbound messages; None: sized from rate and duration
    sub_accounts: int = 3
    customers: int = 200
    templates: int = 6
    strike_template: bool = True  # one MARKETING template walks into its disabling strike
    # Which story: "mixed" (stories.py: every kind of event, sized by the fields above)
    # or "guardrails" (guardrails.py: a number walked to its messaging limit, service
    # windows and billing; it uses the seed and the span only).
    story: str = "mixed"

    def __post_init__(self) -> None:
        # Checked here so that the CLI and tests get the same clear message.
        for name in ("rate", "duration", "time_scale"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if self.messages is not None and self.messages < 0:
            raise ValueError(f"messages must be 0 or more, not {self.messages}")
        for name in ("sub_accounts", "customers", "templates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.story not in STORIES:
            raise ValueError(f"story must be one of {', '.join(STORIES)}, not {self.story!r}")
        if self.story == "guardrails" and not (
            GUARDRAILS_SPAN[0] <= self.span <= GUARDRAILS_SPAN[1]
        ):
            raise ValueError(
                f"the guardrails story spans {GUARDRAILS_SPAN[0]:g} s to "
                f"{GUARDRAILS_SPAN[1] / 3600:g} h of story time (its windows and limits "
                f"are those of the last 24 h), not {self.span:g} s: set duration x "
                "time scale in that range"
            )

    @property
    def span(self) -> float:
        """The story's length in story seconds: what the run compresses into `duration`."""
        return self.duration * self.time_scale

    @property
    def message_count(self) -> int:
        if self.messages is not None:
            return self.messages
        return max(1, round(self.rate * self.duration / WEBHOOKS_PER_MESSAGE))

    @property
    def lead(self) -> timedelta:
        """How far the story's start lies before the run's start: the story ends at
        about the run's real end, so no event time is ever ahead of the wall clock.
        (A slow-motion run, time scale below 1, starts its story at the run's start.)"""
        return timedelta(seconds=max(0.0, self.span - self.duration))

    def anchor(self, run_start: datetime) -> datetime:
        """The event time of story second 0 for a run starting at `run_start`."""
        return run_start - self.lead

    def real_offset(self, story_seconds: float) -> float:
        """Seconds after the run's start at which a post due at `story_seconds` is made."""
        return story_seconds / self.time_scale


def seeded(*parts: object) -> random.Random:
    """A deterministic RNG for `parts` (e.g. the seed and a concern's name): a string
    seed is hashed with SHA-512, the same in every process and Python run."""
    return random.Random(":".join(map(str, parts)))  # noqa: S311 - repeatable stories, no secrets
