"""`wapipe simulate` and `wapipe tail`: what the CLI's two handlers run.

wapipe/cli.py defines the arguments; these functions turn them into a plan, run
it, and print what happened (progress and warnings on stderr, results on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from simulator.expected import Expected, expected_results
from simulator.guardrails_expected import expected_guardrails
from simulator.plan import Plan
from simulator.run import default_url, new_timeline, simulate
from simulator.sender import SendOptions
from simulator.stories import Inbound, PhoneChange, Receipt, TemplateQuality, Timeline
from wapipe.settings import Settings

_HOUR = 3600.0


def simulate_command(settings: Settings, arguments: argparse.Namespace) -> int:
    seed = arguments.seed if arguments.seed is not None else secrets.randbelow(1_000_000)
    try:
        plan = Plan(
            seed=seed,
            rate=arguments.rate,
            duration=arguments.duration,
            time_scale=arguments.time_scale,
            messages=arguments.messages,
            sub_accounts=arguments.sub_accounts,
            customers=arguments.customers,
            templates=arguments.templates,
            # `--story` (mixed or guardrails), where the CLI defines it.
            story=arguments.story,
        )
        options = SendOptions(
            concurrency=arguments.concurrency,
            timeout=arguments.timeout,
            retry_pauses=_pauses(arguments.retry_pauses),
        )
    except ValueError as error:
        print(f"wapipe simulate: {error}", file=sys.stderr)
        return 2
    url = arguments.url or default_url(settings)
    _warn_about_old_events(plan, settings)
    timeline = new_timeline(plan)
    print(f"seed {seed} (repeat this run with --seed {seed}): {describe(timeline)}", flush=True)
    if arguments.dry_run:
        summary_expected = expected_results(
            timeline, disabling_strike=settings.template_disabling_strike
        )
        print(f"dry run: nothing posted; would post {len(timeline)} webhooks to {url}")
    else:
        print(
            f"posting to {url}: story span {_span(plan.span)} in {plan.duration:g} s "
            f"(time scale {plan.time_scale:g}), at most {plan.rate:g} webhooks/s",
            flush=True,
        )
        summary = asyncio.run(
            simulate(settings, url, plan, options=options, timeline=timeline, progress=sys.stderr)
        )
        print(summary.describe())
        summary_expected = summary.expected(settings.template_disabling_strike)
        if summary.failed:
            print(
                f"{summary.failed} webhooks were given up after every retry: they are "
                "lost, and left out of the expected results",
                file=sys.stderr,
            )
    if plan.story == "guardrails":
        summary_expected = _with_guardrails(summary_expected, timeline)
    total = summary_expected.funnel_total
    print(
        f"expected funnel: sent {total.sent}, delivered {total.delivered}, read {total.read}, "
        f"replied {total.replied}, undelivered {total.undelivered}"
    )
    if arguments.expected is not None:
        path = Path(arguments.expected)
        summary_expected.write(path)
        print(f"expected final results written to {path}")
    return 0 if arguments.dry_run or not summary_expected.lost else 1


def tail_command(settings: Settings, arguments: argparse.Namespace) -> int:
    from simulator.tail import TailError, resolve_topic, tail

    def ready(name: str) -> None:
        start = "from the beginning" if arguments.from_beginning else "from now on"
        print(f"tailing {name} {start} (Ctrl-C stops)", file=sys.stderr, flush=True)

    try:
        printed = asyncio.run(
            tail(
                settings,
                arguments.topic,
                sys.stdout,
                from_beginning=arguments.from_beginning,
                count=arguments.count,
                stop_after=arguments.timeout,
                ready=ready,
            )
        )
    except TailError as error:
        print(f"wapipe tail: {error}", file=sys.stderr)
        return 1
    if arguments.count is not None and printed < arguments.count:
        name = resolve_topic(arguments.topic, settings.topic_prefix)
        print(
            f"wapipe tail: {printed} of {arguments.count} records of {name} within "
            f"{arguments.timeout:g} s",
            file=sys.stderr,
        )
        return 1
    return 0


def describe(timeline: Timeline) -> str:
    """One sentence on what the story holds."""
    kinds = Counter[str]()
    umids, strikes = set(), Counter[str]()
    for event in timeline.events:
        fact = event.fact
        if isinstance(fact, Receipt):
            kinds["receipts"] += 1
            umids.add(fact.umid)
        elif isinstance(fact, Inbound):
            kinds["echoes" if fact.echo else "inbound"] += 1
            kinds["replies"] += fact.reply_to is not None
        elif isinstance(fact, PhoneChange):
            kinds["phone"] += 1
        else:
            kinds["template"] += 1
            if isinstance(fact, TemplateQuality) and fact.new == "RED" and fact.previous != "RED":
                strikes[f"{fact.template.name} ({fact.template.language})"] += 1
    population = timeline.population
    countries = {customer.country for customer in population.customers}
    worst = ", ".join(f"{name}: {count} RED strikes" for name, count in strikes.most_common(2))
    return (
        f"{len(umids)} messages from {len(population.sub_accounts)} sub-accounts to "
        f"{len(population.customers)} customers in {len(countries)} countries; "
        f"{kinds['receipts']} receipts, {kinds['inbound']} inbound messages "
        f"({kinds['replies']} replies), {kinds['echoes']} echoes, {kinds['template']} "
        f"template events{' (' + worst + ')' if worst else ''}, {kinds['phone']} phone events"
    )


def _with_guardrails(expected: Expected, timeline: Timeline) -> Expected:
    """`expected` with the guard-rails oracle in `extra["guardrails"]`, and its gist printed."""
    guardrails = expected_guardrails(timeline, lost=expected.lost)
    for subject, limit in guardrails.limits.items():
        print(
            f"expected messaging limit of {subject}: {limit.reached} of {limit.limit} "
            f"customers reached (headroom {limit.headroom}); alerts "
            + ", ".join(sorted(guardrails.alerts))
        )
    outside = list(guardrails.freeform_outside.values())
    print(
        f"expected service windows: {len(guardrails.service_windows)}; free-form outside a "
        f"window: {sum(o for o, _ in outside)} ({sum(f for _, f in outside)} failed); "
        f"billed: {sum(guardrails.billing.values())} delivered in "
        f"{len(guardrails.billing)} (day, country, category) windows"
    )
    return replace(expected, extra={**expected.extra, "guardrails": guardrails.to_json()})


def _pauses(text: str) -> tuple[float, ...]:
    try:
        pauses = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--retry-pauses must be seconds, comma-separated: {text!r}") from None
    if any(pause < 0 for pause in pauses):
        raise ValueError("--retry-pauses cannot be negative")
    return pauses


def _warn_about_old_events(plan: Plan, settings: Settings) -> None:
    # The story ends now, so it starts `lead` ago: the funnel no longer takes
    # changes to windows that ended WAPIPE_FUNNEL_WINDOW_DAYS before now.
    oldest = plan.lead.total_seconds()
    limit = settings.funnel_window_days * 24 * _HOUR - _HOUR
    if oldest > limit:
        print(
            f"warning: the story spans {_span(plan.span)} and ends now, so its first events "
            f"are {_span(oldest)} old: the funnel drops changes to windows older than "
            f"WAPIPE_FUNNEL_WINDOW_DAYS={settings.funnel_window_days} d, and its totals will "
            f"fall short of the expected ones; use a smaller --time-scale or --duration",
            file=sys.stderr,
        )


def _span(seconds: float) -> str:
    if seconds >= 2 * _HOUR:
        return f"{seconds / _HOUR:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
