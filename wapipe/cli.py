"""`wapipe`: the one command behind `make run`, `make test` and production.

Every subcommand reads its settings from the environment once (`Settings.from_env`)
and fails at start-up, naming the variable, when one is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from processors.jobs import JOBS
from wapipe.settings import Settings, SettingsError, environment_variables

_DESCRIPTION = """\
wapipe: a streaming pipeline for 8x8 CPaaS WhatsApp webhooks.

Typical local session:
  wapipe kafka up          start a single-node Kafka broker on this machine
  wapipe topics create     create every topic of the contract (idempotent)
  wapipe ingest            serve POST /webhooks/whatsapp on WAPIPE_INGEST_PORT
  wapipe process normalize run one worker of a stream job
  wapipe run               all of the above, in the foreground, until Ctrl-C
  wapipe status            how each job is doing: workers, partitions, lag, events/s
  wapipe logs funnel -f    follow a service's log (`wapipe run` writes them)

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
    except Exception as error:
        if not _kafka_unreachable(error):
            raise
        from wapipe.preflight import cannot_reach_kafka, tcp_problem

        reason = tcp_problem(settings.kafka_bootstrap) or "it does not answer Kafka requests"
        print(f"wapipe: {cannot_reach_kafka(settings.kafka_bootstrap, reason)}", file=sys.stderr)
        return 1


def _kafka_unreachable(error: Exception) -> bool:
    """An aiokafka client found no broker (`wapipe topics create`, `wapipe tail`)."""
    errors = sys.modules.get("aiokafka.errors")  # not imported: not an aiokafka error
    return errors is not None and isinstance(error, errors.KafkaConnectionError)


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
    process.add_argument("job", choices=sorted(JOBS), help="the job to run")
    process.set_defaults(handler=_process)

    commands.add_parser(
        "run",
        help="start the local stack in the foreground: broker, topics, ingester, workers",
        description="Start a local broker (unless WAPIPE_KAFKA_BOOTSTRAP is set), create the "
        "topics, start the ingester (WAPIPE_INGEST_PORT) and the processor workers (web ports "
        "WAPIPE_PROCESSOR_WEB_PORT and the next ones, one per job: 6066-6071 by default), and "
        "stay in the "
        "foreground. Each service logs to WAPIPE_HOME/logs/<service>.log (`wapipe logs`); "
        "the terminal shows each service as it becomes ready, a summary, then only errors "
        "and exits. A service that exits stops everything; Ctrl-C stops everything this "
        "command started.",
    ).set_defaults(handler=_run)

    _add_status(commands)
    _add_logs(commands)
    _add_replay(commands)
    _add_deadletters(commands)

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
        "--story",
        choices=("mixed", "guardrails"),
        default="mixed",
        help="mixed (default): sub-accounts, customers, templates and numbers living their "
        "usual lives; guardrails: a number walked to 80%% and 100%% of its TIER_1K messaging "
        "limit by 1,000 customers, service windows opened and missed, and billable messages "
        "in three pricing categories and two countries (run it with --time-scale, e.g. 240)",
    )
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


_STATUS_DESCRIPTION = """\
How the pipeline is doing, read-only: for each job, its consumer group's workers and
partitions (from the broker), its lag per source topic (the end a read_committed reader
sees minus the group's committed offsets), events/s and the age of its last commit
(from its worker's /metrics), restore progress; for the ingester, /readyz and the
spool's depth. Workers and ingester are looked for where `wapipe run` puts them
(WAPIPE_PROCESSOR_WEB_PORT and the next ones, WAPIPE_INGEST_PORT) unless --worker or
--ingester say otherwise.

Events/s: over --sample seconds (two scrapes), or over the last minute with --watch.

Exit status: 0 all well; 1 a service is down (no worker in its group, its web server
unreachable), behind (lag above --max-lag), restoring, starting or rebalancing, or the
ingester is not ready; 3 Kafka does not answer; 2 bad usage or settings.
"""


def _add_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # No import of wapipe.status or wapipe.stack here: every command builds this parser.
    services = ("ingest", *JOBS)
    status = commands.add_parser(
        "status",
        help="how the pipeline is doing: workers, partitions, lag, events/s, readiness "
        "(exit 1 when a job is down or behind)",
        description=_STATUS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument(
        "services", nargs="*", metavar="SERVICE", type=_one_of(services),
        help=f"only these ({', '.join(services)}; default: all)",
    )  # fmt: skip
    status.add_argument(
        "--worker", action="append", type=_worker_endpoint(tuple(JOBS)), default=[],
        metavar="JOB=HOST:PORT",
        help="a worker's web server (repeat for more workers of a job, or other jobs); "
        "default: where `wapipe run` puts each job",
    )  # fmt: skip
    status.add_argument(
        "--ingester", metavar="URL",
        help="the ingester's base URL (default: http://127.0.0.1:WAPIPE_INGEST_PORT)",
    )  # fmt: skip
    tls = status.add_mutually_exclusive_group()
    tls.add_argument(
        "--ca-file", type=Path, metavar="FILE",
        help="the CA (PEM) that signed an HTTPS ingester's certificate (default: "
        "WAPIPE_TLS_CERT when set, which a self-signed certificate is its own CA of; else "
        "the system's CAs)",
    )  # fmt: skip
    tls.add_argument(
        "--insecure", action="store_true",
        help="do not verify an HTTPS ingester's certificate (the output says so)",
    )  # fmt: skip
    status.add_argument(
        "--max-lag", type=_positive(int), metavar="N",
        help="a job with more unprocessed records is behind (default 1,000)",
    )  # fmt: skip
    status.add_argument(
        "--sample", type=_not_negative, default=1.0, metavar="S",
        help="seconds between the two scrapes that give events/s (default 1; 0: one scrape, "
        "no rate)",
    )  # fmt: skip
    status.add_argument(
        "--watch", nargs="?", type=_positive(float), const=2.0, metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C",
    )  # fmt: skip
    status.add_argument("--json", action="store_true", help="print JSON (with --watch: a "
                        "document per line)")  # fmt: skip
    status.add_argument(
        "--partitions", action="store_true", help="a line per partition instead of per topic"
    )
    status.add_argument(
        "--broker-only", action="store_true",
        help="ask only the broker (groups and lag), not the web servers",
    )  # fmt: skip
    status.set_defaults(handler=_status)


def _add_logs(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    services = ("ingest", *JOBS, "kafka")  # wapipe.stack.SERVICES and the broker
    logs = commands.add_parser(
        "logs",
        help="show the services' logs that `wapipe run` writes (-f follows them)",
        description="Show WAPIPE_HOME/logs/<service>.log: one service's, or all of them "
        "merged by time. On a terminal, one line per event (time in UTC, service, level, "
        "event, key=value); raw JSON with --json or when the output is not a terminal. "
        "`kafka` is the local broker's own log (WAPIPE_HOME/kafka/server.log).",
    )
    logs.add_argument(
        "service", nargs="?", metavar="SERVICE", choices=services,
        help=f"one of {', '.join(services)} (default: every service)",
    )  # fmt: skip
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new lines as they come, until Ctrl-C")  # fmt: skip
    logs.add_argument("-n", "--lines", type=_not_negative_int, metavar="N",
                      help="only the last N lines (default: all; 10 with -f)")  # fmt: skip
    logs.add_argument("--json", action="store_true", help="the raw JSON lines")
    logs.set_defaults(handler=_logs)


_REPLAY_DESCRIPTION = """\
Copy the retained raw topic of this prefix (WAPIPE_TOPIC_PREFIX) into the raw topic of
the prefix NEW, after creating every topic of NEW, so that a pipeline started on NEW
derives every topic again from the events (Kappa-style reprocessing). Each record keeps
its partition, key, value, timestamp and headers, in order. The range is fixed at the
start, so the copy ends while the ingesters keep writing. Refused when NEW's raw topic
already holds records (a replay is never appended twice) or has another partition count.

TIME: ISO 8601 (2026-12-01T00:00:00Z; UTC without an offset) or an age such as 3d or
12h (s, m, h, d, w): now minus it. On the records' Kafka timestamps.

Exit status: 0 copied; 1 refused or failed; 2 bad usage or settings.
The procedure: docs/operations.md, "Replaying the raw events".
"""


def _add_replay(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay",
        help="copy the raw topic into a new topic prefix, for a fresh pipeline to re-derive "
        "every topic from the events",
        description=_REPLAY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "--to-prefix", required=True, metavar="NEW",
        help="the topic prefix to replay into (not the current one)",
    )  # fmt: skip
    replay.add_argument(
        "--from", dest="since", metavar="TIME",
        help="only records stamped at or after TIME (default: the oldest)",
    )  # fmt: skip
    replay.add_argument(
        "--to", dest="until", metavar="TIME",
        help="only records stamped before TIME (default: up to the newest at the start)",
    )  # fmt: skip
    replay.add_argument(
        "--yes", action="store_true",
        help="do not ask for confirmation (needed without a terminal)",
    )  # fmt: skip
    replay.set_defaults(handler=_replay)


_DEADLETTERS_DESCRIPTION = """\
What is on <prefix>.deadletter: the webhooks normalize could not type (an event type
this version does not know, a shape that breaks its schema) and the records that made a
job raise, each with its reason and the original bytes.

  wapipe deadletters                  a summary: count, first and last seen, and one
                                      letter to show, per kind, source topic and reason
  wapipe deadletters --show P:O       one letter whole (partition P, offset O)
  wapipe deadletters replay --yes     after a fix: re-inject the chosen letters' original
                                      bytes into their source topic (key, partition,
                                      headers kept), each once: a second run re-injects
                                      nothing twice

--from/--to TIME: ISO 8601 or an age such as 3d (now minus it), on the letters' Kafka
timestamps (when the original was received). --kind and --source (repeatable) choose.

Exit status: 0 done; 1 refused or failed; 2 bad usage or settings.
When to use it rather than `wapipe replay`: docs/operations.md, "Dead letters".
"""


def _add_deadletters(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    letters = commands.add_parser(
        "deadletters",
        help="summarize the dead letters, show one, or re-inject them after a fix",
        description=_DEADLETTERS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    letters.add_argument("action", nargs="?", choices=("replay",),
                         help="replay: re-inject the chosen letters")  # fmt: skip
    letters.add_argument("--from", dest="since", metavar="TIME",
                         help="only letters stamped at or after TIME")  # fmt: skip
    letters.add_argument("--to", dest="until", metavar="TIME",
                         help="only letters stamped before TIME")  # fmt: skip
    letters.add_argument(
        "--kind", action="append", default=[], metavar="KIND",
        help="only this kind (unknown_event_type, schema_violation, invalid_body, "
        "invalid_value, processing_error, ...); repeatable",
    )  # fmt: skip
    letters.add_argument(
        "--source", action="append", default=[], metavar="TOPIC",
        help="only letters from this topic (with or without the prefix); repeatable",
    )  # fmt: skip
    letters.add_argument("--show", metavar="P:O", help="print one letter whole")
    letters.add_argument("--json", action="store_true", help="the summary as JSON")
    letters.add_argument("--yes", action="store_true",
                         help="replay without asking (needed without a terminal)")  # fmt: skip
    letters.set_defaults(handler=_deadletters)


def _deadletters(settings: Settings, arguments: argparse.Namespace) -> int:
    from wapipe.deadletters import run_deadletters
    from wapipe.logs import configure_logging

    configure_logging(settings, service="deadletters")
    return run_deadletters(
        settings, action=arguments.action, since=arguments.since, until=arguments.until,
        kinds=arguments.kind, sources=arguments.source, show=arguments.show,
        as_json=arguments.json, yes=arguments.yes,
    )  # fmt: skip


def _worker_endpoint(jobs: tuple[str, ...]) -> Callable[[str], tuple[str, str]]:
    """An argparse type: `JOB=HOST:PORT` (or `JOB=URL`) -> (job, base URL)."""

    def parse(text: str) -> tuple[str, str]:
        job, _, where = text.partition("=")
        if job not in jobs or not where:
            raise argparse.ArgumentTypeError(
                f"not JOB=HOST:PORT with JOB one of {', '.join(jobs)}: {text!r}"
            )
        url = where if "://" in where else f"http://{where}"
        _, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
        if not port.isdigit():
            raise argparse.ArgumentTypeError(f"no port in {text!r} (JOB=HOST:PORT)")
        return job, url.rstrip("/")

    return parse


def _one_of(names: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(names)}")
        return text

    return parse


def _not_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero or more: {text!r}")
    return value


def _not_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more: {text!r}")
    return value


def _status(settings: Settings, arguments: argparse.Namespace) -> int:
    from wapipe.status import DEFAULT_MAX_LAG, SERVICE_NAMES, Options, run_status

    workers: dict[str, tuple[str, ...]] = {}
    for job, url in arguments.worker:
        workers[job] = (*workers.get(job, ()), url)
    options = Options(
        services=tuple(dict.fromkeys(arguments.services)) or SERVICE_NAMES,
        workers=workers,
        ingester=arguments.ingester,
        max_lag=DEFAULT_MAX_LAG if arguments.max_lag is None else arguments.max_lag,
        sample=arguments.sample,
        watch=arguments.watch,
        json=arguments.json,
        partitions=arguments.partitions,
        broker_only=arguments.broker_only,
        ca_file=arguments.ca_file,
        insecure=arguments.insecure,
    )
    return run_status(settings, options)


def _logs(settings: Settings, arguments: argparse.Namespace) -> int:
    from wapipe.logfiles import show_logs

    return show_logs(settings, arguments.service, follow=arguments.follow,
                     lines=arguments.lines, raw=arguments.json)  # fmt: skip


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
    from wapipe.preflight import kafka_problem
    from wapipe.topics import create_topics

    problem = kafka_problem(settings.kafka_bootstrap)
    if problem is not None:
        print(f"wapipe topics create: {problem}", file=sys.stderr)
        return 1
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
    from wapipe.preflight import port_taken, port_taken_message

    host, port = settings.ingest_host, settings.ingest_port
    taken = port_taken_message(port, host, "the ingester's port", "WAPIPE_INGEST_PORT")
    if port_taken(host, port):
        print(f"wapipe ingest: {taken}", file=sys.stderr)
        return 1
    configure_logging(settings, service="ingest")
    try:
        run(settings)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:  # taken since the check above
            raise
        print(f"wapipe ingest: {taken}", file=sys.stderr)
        return 1
    return 0


def _process(settings: Settings, arguments: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from processors.engine import worker
    from processors.jobs import create_job
    from wapipe.logs import configure_logging
    from wapipe.preflight import port_taken, port_taken_message

    host, port = settings.processor_web_host, settings.processor_web_port
    taken = port_taken_message(port, host, f"{arguments.job}'s web port",
                               "WAPIPE_PROCESSOR_WEB_PORT")  # fmt: skip
    if port_taken(host, port):
        print(f"wapipe process {arguments.job}: {taken}", file=sys.stderr)
        return 1
    configure_logging(settings, service=arguments.job)
    registry = CollectorRegistry()
    try:
        return worker.run(create_job(arguments.job, settings, registry), settings, registry)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:  # taken since the check above
            raise
        print(f"wapipe process {arguments.job}: {taken}", file=sys.stderr)
        return 1


def _run(settings: Settings, _: argparse.Namespace) -> int:
    from wapipe.stack import run_stack

    return run_stack(settings)


def _simulate(settings: Settings, arguments: argparse.Namespace) -> int:
    from simulator.command import simulate_command

    return simulate_command(settings, arguments)


def _tail(settings: Settings, arguments: argparse.Namespace) -> int:
    from simulator.command import tail_command
    from wapipe.preflight import kafka_problem

    problem = kafka_problem(settings.kafka_bootstrap)
    if problem is not None:
        print(f"wapipe tail: {problem}", file=sys.stderr)
        return 1
    return tail_command(settings, arguments)


def _replay(settings: Settings, arguments: argparse.Namespace) -> int:
    from wapipe.logs import configure_logging
    from wapipe.replay import ReplayRequest, run_replay

    configure_logging(settings, service="replay")  # librdkafka's warnings, as our other lines
    request = ReplayRequest(to_prefix=arguments.to_prefix, since=arguments.since,
                            until=arguments.until, confirmed=arguments.yes)  # fmt: skip
    return run_replay(settings, request)


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
