"""A realistic 8x8 webhook sender, for demos, tests and load (`wapipe simulate`).

Public API for tests that run a simulation in-process:

    from simulator import Plan, SendOptions, simulate

    summary = await simulate(settings, url, Plan(seed=7, messages=200, duration=20))
    assert summary.failed == 0
    expected = summary.expected()       # expected_results(summary.timeline, lost=summary.lost)
    expected.funnel["acme_wa_marketing"].read, expected.templates[...].red_strikes

Or step by step: `new_timeline(plan)` (or `make_timeline(plan, anchor)`),
`timeline_bodies(timeline)`, `send_timeline(timeline, url, credentials, options)`,
`expected_results(timeline, lost=...)`.

Modules: plan (the run's parameters, story vs real time), population (who takes
part), stories (the timeline of events, pure), bodies (webhook JSON, pure),
expected (the oracle, pure), sender (HTTP, retries, progress), run (one run),
tail (`wapipe tail`), command (the CLI's two commands).

The guard-rails story (`Plan(story="guardrails")`, `wapipe simulate --story
guardrails`): guardrails (a number walked to its messaging limit, service windows,
billing; pure) and guardrails_expected (its oracle: `expected_guardrails(timeline,
lost=...)`, pure).
"""

from simulator.bodies import body, event_bytes, timeline_bodies
from simulator.expected import Expected, FunnelTotals, MessageResult, expected_results
from simulator.plan import Plan
from simulator.run import default_url, new_timeline, simulate
from simulator.sender import RETRY_PAUSES, Credentials, SendOptions, Summary, send_timeline
from simulator.stories import Event, Timeline, make_timeline

__all__ = [
    "RETRY_PAUSES",
    "Credentials",
    "Event",
    "Expected",
    "FunnelTotals",
    "MessageResult",
    "Plan",
    "SendOptions",
    "Summary",
    "Timeline",
    "body",
    "default_url",
    "event_bytes",
    "expected_results",
    "make_timeline",
    "new_timeline",
    "send_timeline",
    "simulate",
    "timeline_bodies",
]
