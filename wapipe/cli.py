"""`wapipe`: the one command behind `make run`, `make test` and production.

Every subcommand reads its settings from the environment once (`Settings.from_env`)
and fails at start-up, naming the variable, when one is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Callable, Sequence

from wapipe.settings import Settings, SettingsError, environment_variables

_DESCRIPTION = """\
wapipe: a streaming pipeline for 8x8 CPaaS WhatsApp webhooks.

Typical local session:
  wapipe kafka up          start a single-node Kafka broker on this machine
  wapipe topics create     create every topic of the contract (idempotent)
  wapipe ingest            serve POST /webhooks/whatsapp on WAPIPE_INGEST_PORT
  wapipe process normalize run one worker of a stream job
  wapipe run               all of the above, in the foreground, until Ctrl-C

Settings come from WAPIPE_* environment variables: `wapipe config` lists them
with their current values; the README explains each one.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "handler"):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"wapipe: {error}", file=sys.stderr)
        return 2
    handler: Callable[[Settings, argparse.Namespace], int] = arguments.handler
    try:
        return handler(settings, arguments)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wapipe", description=_DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    kafka = commands.add_parser(
        "kafka",
        help="run a local single-node Kafka broker (KRaft, from Maven Central jars)",
        description="Manage the local broker whose data lives under WAPIPE_HOME/kafka. "
        "Needs Java 17+; the first `up` resolves the Kafka jars with Maven.",
    )
    kafka_commands = kafka.add_subparsers(title="actions", metavar="ACTION", required=True)
    for name, help_text, handler in (
        ("up", "start the broker and wait until it answers", _kafka_up),
        ("down", "stop the broker (SIGTERM, then SIGKILL after 30 s)", _kafka_down),
        ("status", "say whether the broker runs and answers (exit 1 if not)", _kafka_status),
    ):
        kafka_commands.add_parser(name, help=help_text).set_defaults(handler=handler)

    topic_commands = commands.add_parser(
        "topics", help="create the contract's topics", description="Topics of the contract."
    ).add_subparsers(title="actions", metavar="ACTION", required=True)
    topic_commands.add_parser(
        "create",
        help="create every missing topic with the configured partitions and replication "
        "(idempotent; reports existing topics that differ)",
    ).set_defaults(handler=_topics_create)
    topic_commands.add_parser("list", help="list the topics and their settings").set_defaults(
        handler=_topics_list
    )

    commands.add_parser(
        "ingest",
        help="serve the webhook ingester (HTTP -> Kafka, spooling while Kafka is away)",
        description="Serve POST /webhooks/whatsapp, /oauth/token, /healthz, /readyz, /metrics "
        "on WAPIPE_INGEST_HOST:WAPIPE_INGEST_PORT until SIGTERM or SIGINT.",
    ).set_defaults(handler=_ingest)

    process = commands.add_parser(
        "process",
        help="run one worker of a stream job (more workers of a job share its partitions)",
        description="Run one worker of JOB on the stream engine until SIGTERM or SIGINT (it "
        "finishes and commits the batch in hand, then leaves the group). Its /metrics, "
        "/healthz and /readyz are served on WAPIPE_PROCESSOR_WEB_HOST:WAPIPE_PROCESSOR_WEB_PORT.",
    )
    process.add_argument("job", choices=sorted(PROCESSOR_JOBS), help="the job to run")
    process.set_defaults(handler=_process)

    commands.add_parser(
        "run",
        help="start the local stack in the foreground: broker, topics, ingester, workers",
        description="Start a local broker (unless WAPIPE_KAFKA_BOOTSTRAP is set), create the "
        "topics, start the ingester and the processor workers, and stay in the foreground "
        "with their logs; "
        "Ctrl-C stops everything this command started.",
    ).set_defaults(handler=_run)

    simulate = commands.add_parser(
        "simulate",
        help="post realistic 8x8 webhooks (messages, receipts, replies, template strikes, "
        "tier changes) to the ingester",
        description="Generate a seeded story of sub-accounts, customers, templates and numbers "
        "and post its webhooks as 8x8's sender does: signed (WAPIPE_WEBHOOK_SECRET), with "
        "WAPIPE_AUTHORIZATION or a token of WAPIPE_OAUTH_CLIENTS, retried after about 1, 10, "
        "30, 90 s. Story time runs TIME_SCALE times faster than real time; the story ends "
        "now. Progress on stderr, a summary on stdout; exit 1 when webhooks were given up.",
    )
    simulate.add_argument(
        "--url", help="webhook URL (default: the local ingester on WAPIPE_INGEST_PORT)"
    )
    for flag, kind, default, metavar, help_text in (
        ("--rate", _positive(float), 20.0, "N",
         "webhooks per second: the pace, and a cap (default 20)"),
        ("--duration", _positive(float), 60.0, "S", "real seconds the run lasts (default 60)"),
        ("--messages", _positive(int), None, "N", "outbound messages (default: enough for --rate)"),
        ("--time-scale", _positive(float), 1.0, "X",
         "story seconds per real second, e.g. 1800: 30 h in a minute (default 1)"),
        ("--seed", int, None, "N", "makes the run repeatable (default: random, printed)"),
        ("--expected", str, None, "FILE", "write the expected final results (funnel totals "
         "per sub-account, message states, template strikes) as JSON"),
        ("--sub-accounts", _positive(int), 3, "N",
         "sub-accounts, one business number each (default 3)"),
        ("--customers", _positive(int), 200, "N", "customers (default 200)"),
        ("--templates", _positive(int), 6, "N", "message templates (default 6)"),
        ("--concurrency", _positive(int), 32, "N", "requests open at once at most (default 32)"),
        ("--timeout", _positive(float), 5.0, "S",
         "seconds to wait for a 200 before retrying (default 5, as 8x8)"),
        ("--retry-pauses", str, "1,10,30,90", "S,S,...",
         "pauses before each retry, in seconds (default 1,10,30,90)"),
    ):  # fmt: skip
        simulate.add_argument(flag, type=kind, default=default, metavar=metavar, help=help_text)
    simulate.add_argument(
        "--dry-run",
        action="store_true",
        help="generate the story (and --expected) without posting",
    )
    simulate.set_defaults(handler=_simulate)

    tail = commands.add_parser(
        "tail",
        help="print a topic's records as they arrive (JSON indented)",
        description="Print the records of TOPIC (e.g. alerts, funnel, template_state, "
        "webhooks.raw; with or without the WAPIPE_TOPIC_PREFIX) with partition, offset, "
        "timestamp, key and headers. No consumer group: nothing is committed.",
    )
    tail.add_argument("topic", metavar="TOPIC", help="topic name, with or without the prefix")
    tail.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record instead of new ones only",
    )
    tail.add_argument(
        "--count",
        type=_positive(int),
        metavar="N",
        help="stop after N records (exit 1 if fewer came by --timeout)",
    )
    tail.add_argument(
        "--timeout",
        type=_positive(float),
        metavar="S",
        help="stop after S seconds (default: run until Ctrl-C)",
    )
    tail.set_defaults(handler=_tail)

    config = commands.add_parser(
        "config", help="print every setting, its environment variable and its current value"
    )
    config.add_argument(
        "--markdown", action="store_true", help="print the README's table of settings instead"
    )
    config.set_defaults(handler=_config)
    return parser


def _kafka_up(settings: Settings, _: argparse.Namespace) -> int:
    from wapipe.local_kafka import LocalBroker, LocalKafkaError

    broker = LocalBroker.from_settings(settings)
    print(f"starting Kafka on {broker.bootstrap} (data in {broker.directory}) ...", flush=True)
    try:
        status = broker.up()
    except LocalKafkaError as error:
        print(f"wapipe kafka up: {error}", file=sys.stderr)
        return 1
    print(f"Kafka answers on {status.bootstrap} (pid {status.pid}); log: {broker.log_file}")
    return 0


def _kafka_down(settings: Settings, _: argparse.Namespace) -> int:
    from wapipe.local_kafka import LocalBroker

    stopped = LocalBroker.from_settings(settings).down()
    print("Kafka stopped" if stopped else "no local Kafka was running")
    return 0


def _kafka_status(settings: Settings, _: argparse.Namespace) -> int:
    from wapipe.local_kafka import LocalBroker

    status = LocalBroker.from_settings(settings).status()
    if not status.running:
        print("local Kafka: not running")
        return 1
    state = "answering" if status.answering else "started, not answering yet"
    print(f"local Kafka: running (pid {status.pid}) on {status.bootstrap}, {state}")
    return 0 if status.answering else 1


def _topics_create(settings: Settings, _: argparse.Namespace) -> int:
    from wapipe.topics import create_topics

    reports = asyncio.run(create_topics(settings))
    for report in reports:
        verb = "created" if report.created else "exists "
        print(
            f"{verb} {report.name}" + (f"  (warning: {report.problem})" if report.problem else "")
        )
    return 0


def _topics_list(settings: Settings, _: argparse.Namespace) -> int:
    from wapipe.topics import TOPICS

    for spec in TOPICS:
        retention = f"{spec.retention_days} d" if spec.retention_days else "forever"
        print(f"{spec.name(settings.topic_prefix):40} key={spec.key:40} "
              f"{spec.cleanup_policy.value:8} retention={retention}")  # fmt: skip
    return 0


def _ingest(settings: Settings, _: argparse.Namespace) -> int:
    from ingest.server import run
    from wapipe.logs import configure_logging

    configure_logging(settings, service="ingest")
    run(settings)
    return 0


# Each processor job: the module whose `create_job(settings, registry)` builds it.
PROCESSOR_JOBS = {
    "normalize": "processors.normalize.app",
    "funnel": "processors.funnel.app",
    "templates": "processors.templates.app",
    "phones": "processors.phones.app",
}


def _process(settings: Settings, arguments: argparse.Namespace) -> int:
    import importlib

    from prometheus_client import CollectorRegistry

    from processors.engine import worker
    from wapipe.logs import configure_logging

    configure_logging(settings, service=arguments.job)
    module = importlib.import_module(PROCESSOR_JOBS[arguments.job])
    registry = CollectorRegistry()
    return worker.run(module.create_job(settings, registry), settings, registry)


def _run(settings: Settings, _: argparse.Namespace) -> int:
    from wapipe.stack import run_stack

    return run_stack(settings)


def _simulate(settings: Settings, arguments: argparse.Namespace) -> int:
    from simulator.command import simulate_command

    return simulate_command(settings, arguments)


def _tail(settings: Settings, arguments: argparse.Namespace) -> int:
    from simulator.command import tail_command

    return tail_command(settings, arguments)


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number of `kind` above zero."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be above zero: {text!r}")
        return value

    return parse


def _config(settings: Settings, arguments: argparse.Namespace) -> int:
    descriptions = environment_variables()
    if arguments.markdown:
        print("| variable | default | meaning |\n|---|---|---|")
        for name, field in Settings.model_fields.items():
            default = _show(field.default)
            print(f"| `WAPIPE_{name.upper()}` | `{default}` | {field.description} |")
        return 0
    for name, value in settings.model_dump().items():
        variable = f"WAPIPE_{name.upper()}"
        print(f"{variable} = {_show(value)}")
        print(textwrap.indent(textwrap.fill(descriptions[variable], 76), "    "))
    return 0


def _show(value: object) -> str:
    if isinstance(value, tuple | list):
        return ",".join(_show(item) for item in value) or "(unset)"
    if value is None:
        return "(unset)"
    return str(value)  # a SecretStr shows as **********


if __name__ == "__main__":
    sys.exit(main())
