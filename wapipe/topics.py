"""Every Kafka topic of the contract, defined in one place.

`wapipe topics create`, the tests, docker-compose's topic step and the
Kubernetes KafkaTopic resources all follow `TOPICS`: partitions and
replication come from the settings, cleanup policy and retention from here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from wapipe.settings import Settings

DAY_MS = 24 * 3600 * 1000
_DESCRIBE_TIMEOUT_SECONDS = 10.0


class CleanupPolicy(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name after the prefix, what keys it, and how long it keeps records."""

    suffix: str
    key: str
    description: str
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    retention_days: int | None = 7

    def name(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"

    def configs(self, settings: Settings) -> dict[str, str]:
        configs = {
            "cleanup.policy": self.cleanup_policy.value,
            "min.insync.replicas": str(settings.topic_min_insync_replicas),
        }
        if self.retention_days is not None:
            configs["retention.ms"] = str(self.retention_days * DAY_MS)
        return configs


# Raw webhooks are kept 14 days: longer than any sender re-send from 8x8's portal
# and long enough to replay a processor's whole input after a bug fix.
RAW = TopicSpec(
    "webhooks.raw",
    "umid, templateId, displayPhoneNumber, eventId, another id, or body hash",
    "webhook bodies byte for byte",
    retention_days=14,
)
INBOUND = TopicSpec("inbound", "umid", "normalized inbound messages")
STATUS = TopicSpec("status", "umid", "normalized delivery receipts")
TEMPLATE = TopicSpec("template", "templateId", "normalized template events")
PHONE = TopicSpec("phone", "displayPhoneNumber", "normalized phone-number events")
ACCOUNT = TopicSpec("account", "businessAccountId", "normalized account and user-id events")
MESSAGE_STATE = TopicSpec(
    "message_state",
    "umid",
    "latest funnel state of one outbound message",
    cleanup_policy=CleanupPolicy.COMPACT,
    retention_days=None,
)
FUNNEL = TopicSpec(
    "funnel", "subAccountId", "windowed delivery-funnel aggregates", retention_days=30
)
BILLING = TopicSpec(
    "billing",
    "subAccountId",
    "delivered messages per window, country and pricing category",
    retention_days=30,
)
SERVICE_WINDOWS = TopicSpec(
    "service_windows",
    "subAccountId|customer",
    "when each customer's 24-hour service window closes",
    cleanup_policy=CleanupPolicy.COMPACT,
    retention_days=None,
)
MESSAGING_LIMITS = TopicSpec(
    "messaging_limits",
    "displayPhoneNumber, or subAccountId when the number is unknown",
    "distinct customers each number reached in 24 hours, against its limit",
    cleanup_policy=CleanupPolicy.COMPACT,
    retention_days=None,
)
TEMPLATE_STATE = TopicSpec(
    "template_state",
    "templateId",
    "latest state of one template",
    cleanup_policy=CleanupPolicy.COMPACT,
    retention_days=None,
)
PHONE_STATE = TopicSpec(
    "phone_state",
    "displayPhoneNumber",
    "latest tier and quality of one number",
    cleanup_policy=CleanupPolicy.COMPACT,
    retention_days=None,
)
ALERTS = TopicSpec("alerts", "subject id", "alerts for people and automation", retention_days=30)
DEADLETTER = TopicSpec(
    "deadletter",
    "as received",
    "what could not be processed, with the reason",
    retention_days=30,
)
# `wapipe deadletters replay`'s markers: the letters it re-injected, each once.
DEADLETTER_REPLAYED = TopicSpec(
    "deadletter.replayed", "dead letter partition:offset",
    "the dead letters `wapipe deadletters replay` re-injected (internal)",
    CleanupPolicy.COMPACT, retention_days=None,
)  # fmt: skip

NORMALIZED = (INBOUND, STATUS, TEMPLATE, PHONE, ACCOUNT)  # normalize's typed outputs

# Internal to the funnel. Replies: customers' replies re-keyed by the umid they
# answer, so that each meets its message's receipts in one partition. Deltas: each
# batch's changes to the windows, keyed by sub-account, so that one partition sums
# a sub-account's windows.
FUNNEL_REPLIES = TopicSpec(
    "funnel.replies", "umid", "customers' replies, keyed by the umid they answer (internal)"
)
FUNNEL_DELTAS = TopicSpec(
    "funnel.deltas", "subAccountId", "each batch's changes to the funnel windows (internal)"
)

# Internal to the conversations job: customers' inbound messages and our receipts,
# re-keyed by their (sub-account, customer) pair, so that one partition holds a pair.
CONVERSATIONS_EVENTS = TopicSpec(
    "conversations.events", "subAccountId|customer",
    "inbound messages and receipts keyed by (sub-account, customer) (internal)",
)  # fmt: skip

# Internal to the limits job. Senders: each sub-account's reach changes (from the
# conversations job) and the channels its customers write to (from inbound messages),
# keyed by sub-account. Subjects: reach changes keyed by the number (or sub-account)
# they count under, co-partitioned with whatsapp.phone_state for the tier.
LIMITS_SENDERS = TopicSpec(
    "limits.senders", "subAccountId",
    "each sub-account's reach changes and channels (internal)",
)  # fmt: skip
LIMITS_SUBJECTS = TopicSpec(
    "limits.subjects", "displayPhoneNumber, or sub-account:<id>",
    "reach changes by the number they count under (internal)",
)  # fmt: skip


def changelog(job: str, table: str) -> TopicSpec:
    """The changelog of a table of a job on the stream engine: `<prefix>.<job>.<table>.
    changelog`, raw bytes keys and values, one partition per table partition."""
    return TopicSpec(f"{job}.{table}.changelog", "table key",
                     f"changelog of the {job} job's {table} table (internal)",
                     CleanupPolicy.COMPACT, retention_days=None)  # fmt: skip


# The changelogs of the jobs' tables, created with the other topics so that they exist
# (with the sources' partition count) before any worker starts; a worker never creates
# one. tests/processors/test_changelogs.py keeps this list equal to the jobs' tables.
CHANGELOGS: tuple[TopicSpec, ...] = (
    changelog("normalize", "seen"),
    changelog("funnel", "messages"),
    changelog("funnel", "windows"),
    changelog("funnel", "subaccount_windows"),
    changelog("funnel", "billing"),
    changelog("funnel", "alerts_due"),
    changelog("funnel", "progress"),
    changelog("conversations", "pairs"),
    changelog("limits", "senders"),
    changelog("limits", "subjects"),
    changelog("templates", "templates"),
    changelog("templates", "pause_ends"),
    changelog("phones", "phones"),
)

TOPICS: tuple[TopicSpec, ...] = (
    RAW, INBOUND, STATUS, TEMPLATE, PHONE, ACCOUNT,
    MESSAGE_STATE, FUNNEL, BILLING, SERVICE_WINDOWS, MESSAGING_LIMITS, TEMPLATE_STATE,
    PHONE_STATE, ALERTS, DEADLETTER, DEADLETTER_REPLAYED, FUNNEL_REPLIES, FUNNEL_DELTAS,
    CONVERSATIONS_EVENTS, LIMITS_SENDERS, LIMITS_SUBJECTS, *CHANGELOGS,
)  # fmt: skip


@dataclass(frozen=True)
class TopicReport:
    name: str
    created: bool
    problem: str | None = None


async def create_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] = TOPICS
) -> list[TopicReport]:
    """Create the missing topics; report (not change) existing ones that differ.

    Idempotent: safe to run on every start, and concurrently from several hosts.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id="wapipe-topics"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {spec.name(settings.topic_prefix): spec for spec in specs}
        missing = [
            NewTopic(
                name=name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=spec.configs(settings),
            )
            for name, spec in wanted.items()
            if name not in existing
        ]
        created: set[str] = set()
        if missing:
            response = await admin.create_topics(missing)
            for name, code, *_ in response.topic_errors:
                if code == 0:
                    created.add(name)
                elif code != TopicAlreadyExistsError.errno:
                    raise RuntimeError(f"creating topic {name} failed with Kafka error {code}")
        # Describe them all: those another creator made between our listing and our
        # request ("already exists" above), and those we just made, so that a client
        # started right after this (`wapipe run`'s ingester) finds each one in metadata.
        partitions = await _partition_counts(admin, list(wanted))
        reports = []
        for name in wanted:
            problem = None
            count = partitions[name]
            if count != settings.topic_partitions:
                problem = f"has {count} partitions, settings say {settings.topic_partitions}"
            reports.append(TopicReport(name=name, created=name in created, problem=problem))
        return reports
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions of each topic; waits for topics so new that metadata lags behind."""
    counts: dict[str, int] = {}
    deadline = asyncio.get_running_loop().time() + _DESCRIBE_TIMEOUT_SECONDS
    while names:
        for topic in await admin.describe_topics(names):
            if topic["error_code"] == 0 and topic["partitions"]:
                counts[topic["topic"]] = len(topic["partitions"])
        names = [name for name in names if name not in counts]
        if names and asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"Kafka does not describe the topics {names} (error in metadata)")
        if names:
            await asyncio.sleep(0.2)
    return counts
