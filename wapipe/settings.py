"""Every setting of wapipe, read once from the environment and validated.

`Settings.from_env()` is the only place in the project that reads `os.environ`;
the object it returns is passed down to whatever needs it. Each field's
environment variable is its name upper-cased with the `WAPIPE_` prefix
(`kafka_bootstrap` -> `WAPIPE_KAFKA_BOOTSTRAP`); the README's settings table
lists them all (a test keeps the two in step).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from processors.funnel.rate_card import RateCard

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# 8x8's published source addresses of its messaging platform (8x8's webhook documentation, last
# updated by 8x8 on 2025-10-13). `WAPIPE_ALLOWED_NETWORKS=8x8` stands for these.
EIGHT_BY_EIGHT_SOURCE_ADDRESSES: dict[str, tuple[str, ...]] = {
    "apac": ("52.220.117.120", "52.220.109.9", "18.136.13.204"),
    "indonesia": ("34.101.157.207", "34.101.215.77", "34.34.217.244", "34.101.109.67"),
    "europe": ("34.142.20.188", "34.142.64.178", "34.39.69.103", "34.39.114.155"),
    "north_america": ("50.112.250.190", "100.21.170.42", "52.10.10.63"),
}
EIGHT_BY_EIGHT_PRESET = "8x8"

_TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9._-]{1,100}$"

CommaList = Annotated[tuple[str, ...], NoDecode]
SecretList = Annotated[tuple[SecretStr, ...], NoDecode]
NetworkList = Annotated[tuple[IPNetwork, ...], NoDecode]
HoursList = Annotated[tuple[int, ...], NoDecode]
NumberMap = Annotated[dict[str, str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _parse_networks(value: Any) -> Any:
    items = _split_commas(value)
    if not isinstance(items, tuple | list):
        return items
    networks: list[IPNetwork] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
        elif str(item).lower() == EIGHT_BY_EIGHT_PRESET:
            networks.extend(
                ipaddress.ip_network(address)
                for region in EIGHT_BY_EIGHT_SOURCE_ADDRESSES.values()
                for address in region
            )
        else:
            try:
                networks.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError as error:
                raise ValueError(
                    f"{item!r} is neither a CIDR (e.g. 10.0.0.0/8, 2001:db8::/32), "
                    f"an address, nor the preset name {EIGHT_BY_EIGHT_PRESET!r}"
                ) from error
    return tuple(networks)


class Settings(BaseSettings):
    """wapipe's configuration. Defaults suit a laptop; production sets the rest."""

    model_config = SettingsConfigDict(
        env_prefix="WAPIPE_", case_sensitive=False, extra="ignore", frozen=True
    )

    # --- Kafka and topics -------------------------------------------------------
    kafka_bootstrap: str = Field(
        "localhost:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    topic_prefix: str = Field(
        "whatsapp", pattern=_TOPIC_PREFIX_PATTERN, description="Prefix of every topic name."
    )
    topic_partitions: int = Field(
        6, ge=1, le=10_000, description="Partitions of each topic `wapipe topics create` makes."
    )
    topic_replication: int = Field(
        1, ge=1, le=32, description="Replication factor of each topic (3 in production)."
    )
    topic_min_insync_replicas: int = Field(
        1, ge=1, le=32, description="min.insync.replicas of each topic (2 in production)."
    )

    # --- Ingester HTTP ------------------------------------------------------------
    ingest_host: str = Field("0.0.0.0", description="Address the ingester listens on.")
    ingest_port: int = Field(8080, ge=1, le=65535, description="Ingester HTTP port.")
    max_body_bytes: int = Field(
        262_144, ge=1024, le=900_000, description="Largest webhook body accepted (413 above)."
    )
    publish_timeout_ms: int = Field(
        1500,
        ge=50,
        le=4000,
        description="How long a request waits for Kafka's acknowledgement before the event "
        "goes to the spool instead; well inside the sender's 5 s.",
    )
    shutdown_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Grace period for in-flight requests on SIGTERM."
    )
    client_timeout_seconds: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="How long a client may take to send a request's headers (from connecting, "
        "or from the previous answer on a kept-alive connection), and then its body; a slower "
        "client is disconnected, or answered 408 (slowloris). Idle kept-alive connections "
        "close after it too.",
    )
    tls_cert: Path | None = Field(None, description="PEM certificate: serve HTTPS when set.")
    tls_key: Path | None = Field(None, description="PEM private key for WAPIPE_TLS_CERT.")
    uvloop: bool = Field(True, description="Run the event loop on uvloop.")

    # --- Spool: where events go while Kafka is unreachable --------------------------
    spool_dir: Path = Field(Path(".wapipe/spool"), description="Directory of the local spool.")
    spool_max_bytes: int = Field(
        1 << 30, ge=1 << 20, description="Spool size above which the ingester answers 503."
    )
    spool_segment_bytes: int = Field(
        64 << 20, ge=1 << 16, description="Size at which the spool starts a new segment file."
    )

    # --- Who may post ---------------------------------------------------------------
    authorization: SecretList = Field(
        (),
        description="Accepted `Authorization` header values, comma-separated "
        "(e.g. `Bearer abc,Basic dXNlcjpwdw==`); several for rotation.",
    )
    oauth_clients: SecretList = Field(
        (),
        description="OAuth 2.0 clients as `client_id:client_secret`, comma-separated; "
        "enables `POST /oauth/token`.",
    )
    oauth_token_ttl_seconds: int = Field(
        3600, ge=60, le=86_400, description="Lifetime of the bearer tokens the ingester issues."
    )
    oauth_signing_key: SecretStr | None = Field(
        None,
        description="Key that signs issued tokens; share it between replicas. Default: derived "
        "from the client secrets.",
    )
    webhook_secret: SecretList = Field(
        (),
        max_length=2,
        description="HMAC-SHA256 secret(s) for `X-8x8-Signature`, comma-separated, at most two "
        "(rotation). When set, every webhook must carry a valid signature.",
    )
    allowed_networks: NetworkList = Field(
        (),
        description="CIDRs allowed to post webhooks, comma-separated; `8x8` stands for 8x8's "
        "published source addresses. Empty: all.",
    )
    trusted_proxies: NetworkList = Field(
        (),
        description="CIDRs of reverse proxies whose `X-Forwarded-For` is believed.",
    )

    # --- Processors (the stream jobs' workers) -------------------------------------------
    processor_web_host: str = Field(
        "127.0.0.1",
        description="Address of a processor worker's web server (/metrics); loopback unless "
        "Prometheus scrapes it from elsewhere (then 0.0.0.0).",
    )
    processor_web_port: int = Field(
        6066,
        ge=1,
        le=65535,
        description="Port of a processor worker's web server. `wapipe run` gives its workers "
        "this port and the next ones, one per job (normalize, funnel, templates, phones, "
        "conversations, limits); `wapipe status` looks for them there.",
    )
    processor_batch_size: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="Events a processor handles per batch at most (one Kafka transaction "
        "each). Larger batches spread the transaction's fixed cost (a few ms) over more "
        "events under a backlog; when traffic is light a batch closes after 50 ms anyway.",
    )
    processor_max_drift_seconds: float = Field(
        600.0,
        ge=1,
        le=86_400,
        description="How far ahead in stream time (event time) a processor reads one source "
        "partition of the slowest one it is still reading; faster ones wait. It keeps the "
        "topics a job re-keys nearly in event-time order when it reads at full speed (a "
        "replay, a backlog), so that late-event rules (WAPIPE_FUNNEL_WINDOW_DAYS) drop "
        "nothing a live run kept: at most a quarter of WAPIPE_FUNNEL_WINDOW_DAYS (checked at "
        "start-up).",
    )
    processor_instance: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="This worker's slot among its job's workers (e.g. the pod name): its Kafka "
        "`transactional.id` is `<prefix>.<job>.<instance>`, so a restarted worker with the "
        "same instance fences its predecessor's open transaction at once. Two running "
        "workers of one job must not share it. Unset: the host name.",
    )
    processor_transaction_timeout_seconds: float = Field(
        10.0,
        ge=1,
        le=900,
        description="Kafka transaction timeout of a worker on the stream engine: how long a "
        "worker that died mid-batch, with no successor of the same instance, holds back "
        "read_committed readers of its outputs before the broker aborts its transaction.",
    )
    rocksdb_write_buffer_mb: int = Field(
        8,
        ge=1,
        le=256,
        description="RocksDB write buffer of each table partition in MB (two at most): "
        "larger means fewer flushes, more memory per partition.",
    )
    rocksdb_block_cache_mb: int = Field(
        16,
        ge=1,
        le=4096,
        description="RocksDB read cache of each table partition in MB.",
    )
    dedupe_days: int = Field(
        14,
        ge=1,
        le=90,
        description="How long normalize remembers an event to drop its retries and manual "
        "re-sends (8x8's portal re-sends failed deliveries hours or days later).",
    )
    event_time_max_ahead_seconds: int = Field(
        3000,
        ge=0,
        le=3300,
        description="How far an event's time may lie after the ingester received it; normalize "
        "dead-letters a later one (a sender's clock far ahead, or a forged time). Kafka 4 "
        "refuses records timestamped over 1 h ahead of its clock "
        "(message.timestamp.after.max.ms), which would stop the worker on every restart.",
    )

    message_state_days: int = Field(
        35,
        ge=30,
        le=400,
        description="How long the funnel keeps a message's state after its last event "
        "(a delivery can follow `sent` by a 30-day time-to-live; reads come 10 days later), "
        "and the conversations job a customer's service windows and the messages sent to them.",
    )
    funnel_window_days: int = Field(
        2,
        ge=1,
        le=30,
        description="How long after its end a funnel window still takes changes (webhooks "
        "delayed by a Kafka outage or the sender's retries); later ones are dropped and "
        "counted in `wapipe_funnel_late_changes_total`.",
    )
    funnel_alert_window: Literal["1m", "1h"] = Field(
        "1h", description="The funnel window size the rate alerts look at."
    )
    funnel_alert_delay_minutes: int = Field(
        10,
        ge=0,
        le=1440,
        description="How long after a rate-alert window's end (in stream time: event time) "
        "its receipts still count toward its alerts (reads come after deliveries). The "
        "alerts are decided once every partition of the funnel and conversations jobs has "
        "got that far: a window's alert comes that long after its end.",
    )
    funnel_failure_rate_alert: float = Field(
        0.2,
        gt=0,
        le=1,
        description="DELIVERY_FAILURE_SPIKE when a sub-account's window has at least this "
        "share of undelivered among its delivered and undelivered messages.",
    )
    funnel_read_rate_alert: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="READ_RATE_DROP when a sub-account's window has read at most this share "
        "of the messages delivered in it.",
    )
    funnel_alert_min_volume: int = Field(
        50,
        ge=1,
        description="Messages a sub-account's window needs before a rate alert (so 1 failure "
        "of 2 messages is no spike).",
    )
    service_window_failures_alert: int = Field(
        10,
        ge=0,
        description="SERVICE_WINDOW_FAILURES when a sub-account's funnel window (of "
        "WAPIPE_FUNNEL_ALERT_WINDOW) has more free-form messages than this that failed because "
        "the customer's 24-hour service window was closed.",
    )
    sender_numbers: NumberMap = Field(
        {},
        description="The business number each sub-account (or channel id) sends from, as "
        "`name=number` pairs, comma-separated (e.g. `acme-care=4930901820`): the messaging "
        "limits count a sub-account's customers under its number. Without one, the number "
        "is the recipient.channelId of the sub-account's inbound messages when that is a "
        "phone number, else the sub-account is counted on its own.",
    )
    messaging_limit_near_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="MESSAGING_LIMIT_NEAR when a number has reached this share of its "
        "messaging limit (distinct customers in 24 hours).",
    )
    messaging_limit_check_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How often the limits worker re-evaluates every number (customers "
        "leave the 24-hour window with time alone): every this many seconds of stream time "
        "(event time), and of the wall clock on partitions it has read to their end, as of "
        "the stream time.",
    )
    billing_rate_card: Path | None = Field(
        None,
        description="CSV rate card (country,category,price,currency per line) that gives "
        "whatsapp.billing its estimated costs; unset, the counts come without costs. "
        "deploy/billing/rate-card.example.csv shows the format (its prices are examples).",
    )
    template_pause_hours: HoursList = Field(
        (3, 6),
        description="Pause of a template at RED strike 1, 2, ... in hours, comma-separated "
        "(Meta's rule: 3 then 6).",
    )
    template_disabling_strike: int = Field(
        3, ge=1, le=10, description="The RED strike that disables a template for good."
    )
    template_pause_check_seconds: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="How often the templates worker looks for ended pauses: every this many "
        "seconds of stream time (event time), and of the wall clock on partitions it has read "
        "to their end.",
    )

    # --- Logs -----------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written."
    )
    log_format: Literal["json", "console"] = Field(
        "json",
        description="One JSON object per line, or human-readable console lines. `wapipe run` "
        "writes JSON to its services' log files whatever this says (`wapipe logs` shows them "
        "human-readable).",
    )
    log_file_mb: int = Field(
        50, ge=1, le=100_000,
        description="`wapipe run` moves a service's log file aside once it passes this size "
        "(`<service>.log` to `<service>.log.1`, and so on) and starts a new one.",
    )  # fmt: skip
    log_files_kept: int = Field(
        5, ge=1, le=1_000,
        description="How many log files `wapipe run` keeps per service besides the current "
        "one (`<service>.log.1` the newest); older ones are deleted. `wapipe logs` reads "
        "them all.",
    )  # fmt: skip

    # --- The local broker (`wapipe kafka ...`, `make run`, tests) -----------------------
    home: Path = Field(
        Path(".wapipe"),
        description="State directory: Kafka jar cache, local broker data and log, workers' "
        "state, and the services' logs of `wapipe run` (`logs/<service>.log`).",
    )
    local_kafka_port: int = Field(9092, ge=1, le=65535, description="Local broker client port.")
    local_kafka_controller_port: int = Field(
        9093, ge=1, le=65535, description="Local broker KRaft controller port."
    )
    local_kafka_heap: str = Field(
        "512m", pattern=r"^\d+[kmgKMG]$", description="JVM heap of the local broker (-Xmx)."
    )

    @field_validator("authorization", "oauth_clients", "webhook_secret", mode="before")
    @classmethod
    def _split_secret_lists(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("sender_numbers", mode="before")
    @classmethod
    def _parse_sender_numbers(cls, value: Any) -> Any:
        from processors.limits.senders import number

        items = _split_commas(value)
        if not isinstance(items, tuple):
            return items
        mapping: dict[str, str] = {}
        for item in items:
            name, equals, text = (part.strip() for part in item.partition("="))
            found = number(text) if equals and name else None
            if found is None:
                raise ValueError(f"{item!r} is not `name=number` (a sub-account or channel "
                                 "id, `=`, a phone number of 5 to 15 digits)")  # fmt: skip
            mapping[name] = found
        return mapping

    @field_validator("template_pause_hours", mode="before")
    @classmethod
    def _split_hours(cls, value: Any) -> Any:
        return _split_commas(value)

    _rate_card: RateCard | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _load_rate_card(self) -> Settings:
        # Read at start-up, whichever process reads the settings: a bad card stops it with
        # every bad line named, not the funnel worker at its first delivered message.
        from processors.funnel.rate_card import load_rate_card

        if self.billing_rate_card is not None:
            try:
                self._rate_card = load_rate_card(self.billing_rate_card)
            except ValueError as error:
                raise ValueError(f"WAPIPE_BILLING_RATE_CARD: {error}") from None
        return self

    @property
    def rate_card(self) -> RateCard | None:
        """The rate card of WAPIPE_BILLING_RATE_CARD, read and checked at start-up."""
        return self._rate_card

    @model_validator(mode="after")
    def _check_drift(self) -> Settings:
        # Alignment keeps re-keyed topics out of order by at most the drift: it must stay
        # well inside the grace of the rules that drop late changes (docs/design.md, Time).
        grace = self.funnel_window_days * 86_400
        if self.processor_max_drift_seconds > grace / 4:
            raise ValueError(
                f"WAPIPE_PROCESSOR_MAX_DRIFT_SECONDS ({self.processor_max_drift_seconds:g}) must "
                f"stay below a quarter of WAPIPE_FUNNEL_WINDOW_DAYS ({grace / 4:g} s): a "
                "replay could drop as late what a live run kept"
            )
        return self

    @model_validator(mode="after")
    def _check_template_pauses(self) -> Settings:
        pauses = self.template_pause_hours
        if len(pauses) < self.template_disabling_strike - 1 or any(h <= 0 for h in pauses):
            raise ValueError(
                f"WAPIPE_TEMPLATE_PAUSE_HOURS needs a positive pause for each of the "
                f"{self.template_disabling_strike - 1} strikes before the disabling one"
            )
        return self

    @field_validator("allowed_networks", "trusted_proxies", mode="before")
    @classmethod
    def _parse_network_lists(cls, value: Any) -> Any:
        return _parse_networks(value)

    @field_validator("authorization")
    @classmethod
    def _check_authorization(cls, values: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for value in values:
            scheme = value.get_secret_value().split(" ", 1)[0].lower()
            if scheme not in ("basic", "bearer") or " " not in value.get_secret_value():
                raise ValueError("each value must look like `Basic <b64>` or `Bearer <token>`")
        return values

    @field_validator("oauth_clients")
    @classmethod
    def _check_oauth_clients(cls, values: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for value in values:
            client_id, _, secret = value.get_secret_value().partition(":")
            if not client_id or not secret:
                raise ValueError("each client must be `client_id:client_secret`")
        return values

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("WAPIPE_TLS_CERT and WAPIPE_TLS_KEY must be set together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        if self.topic_min_insync_replicas > self.topic_replication:
            raise ValueError(
                "WAPIPE_TOPIC_MIN_INSYNC_REPLICAS cannot exceed WAPIPE_TOPIC_REPLICATION"
            )
        if self.spool_segment_bytes > self.spool_max_bytes:
            raise ValueError("WAPIPE_SPOOL_SEGMENT_BYTES cannot exceed WAPIPE_SPOOL_MAX_BYTES")
        if self.local_kafka_port == self.local_kafka_controller_port:
            raise ValueError("the local broker's client and controller ports must differ")
        return self

    @property
    def oauth_client_secrets(self) -> dict[str, str]:
        """Configured OAuth clients: client id -> secret."""
        pairs = (value.get_secret_value().partition(":") for value in self.oauth_clients)
        return {client_id: secret for client_id, _, secret in pairs}

    @property
    def bootstrap_is_explicit(self) -> bool:
        """True when WAPIPE_KAFKA_BOOTSTRAP was set, i.e. someone else runs the broker."""
        return "kafka_bootstrap" in self.model_fields_set

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read and validate the environment; raise `SettingsError` with a clear message."""
        try:
            return cls(**overrides)
        except ValidationError as error:
            raise SettingsError(describe_validation_error(error)) from None


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable and what is wrong."""


def describe_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"] if isinstance(part, str))
        # A model validator's message names its variables itself.
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"WAPIPE_{field.upper()}: {message}" if field else message)
    if len(lines) == 1:  # one line for the usual case, one bad variable
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n  " + "\n  ".join(lines)


def environment_variables() -> dict[str, str]:
    """Every setting's environment variable and its description (for docs and tests)."""
    return {
        f"WAPIPE_{name.upper()}": field.description or ""
        for name, field in Settings.model_fields.items()
    }
