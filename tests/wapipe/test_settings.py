"""wapipe.settings: defaults, the environment, validation messages, secrets, documentation."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from wapipe.settings import Settings, SettingsError, environment_variables

README = Path(__file__).resolve().parents[2] / "README.md"

# 8x8's published source addresses (8x8's webhook docs, "Delivery behaviour of the sender").
EIGHT_BY_EIGHT = {
    "52.220.117.120",
    "52.220.109.9",
    "18.136.13.204",
    "34.101.157.207",
    "34.101.215.77",
    "34.34.217.244",
    "34.101.109.67",
    "34.142.20.188",
    "34.142.64.178",
    "34.39.69.103",
    "34.39.114.155",
    "50.112.250.190",
    "100.21.170.42",
    "52.10.10.63",
}


def from_env(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def secret_values(values: tuple[object, ...]) -> list[str]:
    return [value.get_secret_value() for value in values]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    settings = Settings.from_env()

    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.topic_prefix == "whatsapp"
    assert settings.ingest_port == 8080
    assert settings.authorization == ()
    assert settings.oauth_clients == ()
    assert settings.oauth_client_secrets == {}
    assert settings.webhook_secret == ()
    assert settings.allowed_networks == ()
    assert settings.trusted_proxies == ()
    assert settings.tls_cert is None
    assert settings.tls_key is None
    assert settings.oauth_signing_key is None
    assert settings.publish_timeout_ms < 5000  # answered well inside the sender's 5 s


# --------------------------------------------------------------------------- the environment


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(
        monkeypatch,
        WAPIPE_KAFKA_BOOTSTRAP="broker-1:9092,broker-2:9092",
        WAPIPE_TOPIC_PREFIX="wa.prod-1",
        WAPIPE_INGEST_PORT="9000",
        WAPIPE_TOPIC_REPLICATION="3",
        WAPIPE_TOPIC_MIN_INSYNC_REPLICAS="2",
        WAPIPE_PUBLISH_TIMEOUT_MS="2500",
        WAPIPE_SPOOL_DIR="/var/lib/wapipe/spool",
        WAPIPE_UVLOOP="false",
        WAPIPE_LOG_LEVEL="debug",
        WAPIPE_OAUTH_TOKEN_TTL_SECONDS="600",
    )

    assert settings.kafka_bootstrap == "broker-1:9092,broker-2:9092"
    assert settings.topic_prefix == "wa.prod-1"
    assert settings.ingest_port == 9000
    assert settings.topic_replication == 3
    assert settings.topic_min_insync_replicas == 2
    assert settings.publish_timeout_ms == 2500
    assert settings.spool_dir == Path("/var/lib/wapipe/spool")
    assert settings.uvloop is False
    assert settings.log_level == "debug"
    assert settings.oauth_token_ttl_seconds == 600


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAPIPE_INGEST_PORT", "9000")

    assert Settings.from_env(ingest_port=9100).ingest_port == 9100


def test_comma_lists_are_split_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(
        monkeypatch,
        WAPIPE_AUTHORIZATION=" Bearer abc , Basic dXNlcjpwdw== ,",
        WAPIPE_WEBHOOK_SECRET="first-secret , second-secret",
        WAPIPE_OAUTH_CLIENTS="alpha:secret-a , beta:secret-b",
        WAPIPE_TRUSTED_PROXIES="10.0.0.0/8 , fd00::/8",
    )

    assert secret_values(settings.authorization) == ["Bearer abc", "Basic dXNlcjpwdw=="]
    assert secret_values(settings.webhook_secret) == ["first-secret", "second-secret"]
    assert settings.oauth_client_secrets == {"alpha": "secret-a", "beta": "secret-b"}
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )


def test_single_values_are_one_element_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(monkeypatch, WAPIPE_AUTHORIZATION="Bearer abc", WAPIPE_WEBHOOK_SECRET="s")

    assert secret_values(settings.authorization) == ["Bearer abc"]
    assert secret_values(settings.webhook_secret) == ["s"]


@pytest.mark.parametrize("preset", ["8x8", "8X8"])
def test_8x8_preset_expands_to_the_published_addresses(
    monkeypatch: pytest.MonkeyPatch, preset: str
) -> None:
    settings = from_env(monkeypatch, WAPIPE_ALLOWED_NETWORKS=f"{preset},10.0.0.0/8")

    assert len(settings.allowed_networks) == 15
    assert set(settings.allowed_networks) == {
        *(ipaddress.ip_network(address) for address in EIGHT_BY_EIGHT),
        ipaddress.ip_network("10.0.0.0/8"),
    }


def test_networks_accept_addresses_ipv6_and_host_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(monkeypatch, WAPIPE_ALLOWED_NETWORKS="203.0.113.5,2001:db8::/32,10.1.2.3/8")

    assert settings.allowed_networks == (
        ipaddress.ip_network("203.0.113.5/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )


def test_oauth_client_secrets_maps_ids_to_secrets() -> None:
    settings = Settings(oauth_clients="alpha:secret-a,beta:with:colons")

    assert settings.oauth_client_secrets == {"alpha": "secret-a", "beta": "with:colons"}


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        pytest.param({"WAPIPE_INGEST_PORT": "abc"}, "WAPIPE_INGEST_PORT", id="port-not-a-number"),
        pytest.param({"WAPIPE_INGEST_PORT": "70000"}, "WAPIPE_INGEST_PORT", id="port-too-big"),
        pytest.param({"WAPIPE_INGEST_PORT": "0"}, "WAPIPE_INGEST_PORT", id="port-zero"),
        pytest.param(
            {"WAPIPE_ALLOWED_NETWORKS": "not-a-network"},
            "WAPIPE_ALLOWED_NETWORKS",
            id="network-garbage",
        ),
        pytest.param(
            {"WAPIPE_ALLOWED_NETWORKS": "8x8,10.0.0.0/33"},
            "WAPIPE_ALLOWED_NETWORKS",
            id="network-bad-prefix",
        ),
        pytest.param(
            {"WAPIPE_TRUSTED_PROXIES": "proxy.local"},
            "WAPIPE_TRUSTED_PROXIES",
            id="proxy-hostname",
        ),
        pytest.param(
            {"WAPIPE_AUTHORIZATION": "justatoken"}, "WAPIPE_AUTHORIZATION", id="auth-no-scheme"
        ),
        pytest.param(
            {"WAPIPE_AUTHORIZATION": "Token abc"}, "WAPIPE_AUTHORIZATION", id="auth-other-scheme"
        ),
        pytest.param(
            {"WAPIPE_AUTHORIZATION": "Bearer abc,Basic"},
            "WAPIPE_AUTHORIZATION",
            id="auth-second-value-bad",
        ),
        pytest.param(
            {"WAPIPE_OAUTH_CLIENTS": "noseparator"}, "WAPIPE_OAUTH_CLIENTS", id="client-no-colon"
        ),
        pytest.param(
            {"WAPIPE_OAUTH_CLIENTS": "id:"}, "WAPIPE_OAUTH_CLIENTS", id="client-empty-secret"
        ),
        pytest.param(
            {"WAPIPE_OAUTH_CLIENTS": ":secret"}, "WAPIPE_OAUTH_CLIENTS", id="client-empty-id"
        ),
        pytest.param(
            {"WAPIPE_WEBHOOK_SECRET": "one,two,three"},
            "WAPIPE_WEBHOOK_SECRET",
            id="three-webhook-secrets",
        ),
        pytest.param(
            {"WAPIPE_TLS_CERT": "{existing}"}, "WAPIPE_TLS_CERT", id="tls-cert-without-key"
        ),
        pytest.param({"WAPIPE_TLS_KEY": "{existing}"}, "WAPIPE_TLS_KEY", id="tls-key-without-cert"),
        pytest.param(
            {"WAPIPE_TLS_CERT": "{missing}", "WAPIPE_TLS_KEY": "{existing}"},
            "{missing}",
            id="tls-cert-file-missing",
        ),
        pytest.param(
            {"WAPIPE_TOPIC_PREFIX": "has space"}, "WAPIPE_TOPIC_PREFIX", id="topic-prefix-space"
        ),
        pytest.param({"WAPIPE_TOPIC_PREFIX": ""}, "WAPIPE_TOPIC_PREFIX", id="topic-prefix-empty"),
        pytest.param(
            {"WAPIPE_PUBLISH_TIMEOUT_MS": "6000"},
            "WAPIPE_PUBLISH_TIMEOUT_MS",
            id="publish-timeout-beyond-sender-timeout",
        ),
        pytest.param(
            {"WAPIPE_TOPIC_REPLICATION": "2", "WAPIPE_TOPIC_MIN_INSYNC_REPLICAS": "3"},
            "WAPIPE_TOPIC_MIN_INSYNC_REPLICAS",
            id="min-isr-above-replication",
        ),
        pytest.param(
            {"WAPIPE_SPOOL_MAX_BYTES": str(1 << 20), "WAPIPE_SPOOL_SEGMENT_BYTES": str(2 << 20)},
            "WAPIPE_SPOOL_SEGMENT_BYTES",
            id="segment-above-spool-max",
        ),
        pytest.param(
            {"WAPIPE_PROCESSOR_MAX_DRIFT_SECONDS": "86400", "WAPIPE_FUNNEL_WINDOW_DAYS": "2"},
            "WAPIPE_PROCESSOR_MAX_DRIFT_SECONDS",
            id="drift-near-the-funnel-grace",
        ),
        pytest.param({"WAPIPE_LOG_LEVEL": "verbose"}, "WAPIPE_LOG_LEVEL", id="log-level"),
        pytest.param({"WAPIPE_UVLOOP": "maybe"}, "WAPIPE_UVLOOP", id="bool-garbage"),
    ],
)
def test_bad_value_raises_settings_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    existing = tmp_path / "server.pem"
    existing.write_text("-----BEGIN CERTIFICATE-----\n")
    paths = {"existing": str(existing), "missing": str(tmp_path / "absent.pem")}
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(**paths))

    with pytest.raises(SettingsError, match=re.escape(named.format(**paths))) as raised:
        Settings.from_env()

    assert str(raised.value).startswith("invalid configuration")
    assert isinstance(raised.value, ValueError)


def test_tls_with_both_files_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")

    settings = from_env(monkeypatch, WAPIPE_TLS_CERT=str(cert), WAPIPE_TLS_KEY=str(key))

    assert (settings.tls_cert, settings.tls_key) == (cert, key)


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAPIPE_INGEST_PORT", "abc")
    monkeypatch.setenv("WAPIPE_TOPIC_PREFIX", "has space")

    with pytest.raises(SettingsError) as raised:
        Settings.from_env()

    assert "WAPIPE_INGEST_PORT" in str(raised.value)
    assert "WAPIPE_TOPIC_PREFIX" in str(raised.value)


# --------------------------------------------------------------------------- explicit bootstrap


def test_bootstrap_is_not_explicit_by_default() -> None:
    assert Settings.from_env().bootstrap_is_explicit is False


@pytest.mark.parametrize(
    "value", ["broker:9092", "localhost:9092"], ids=["other", "same-as-default"]
)
def test_bootstrap_is_explicit_when_set(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    settings = from_env(monkeypatch, WAPIPE_KAFKA_BOOTSTRAP=value)

    assert settings.bootstrap_is_explicit is True
    assert settings.kafka_bootstrap == value


# --------------------------------------------------------------------------- secrets

SECRETS = {
    "WAPIPE_AUTHORIZATION": "Bearer static-t0ken-value,Basic c2VjcmV0LWJhc2lj",
    "WAPIPE_OAUTH_CLIENTS": "sender:oauth-cl1ent-secret",
    "WAPIPE_OAUTH_SIGNING_KEY": "sign1ng-key-value",
    "WAPIPE_WEBHOOK_SECRET": "hm4c-secret-one,hm4c-secret-two",
}
SECRET_STRINGS = [
    "static-t0ken-value",
    "c2VjcmV0LWJhc2lj",
    "oauth-cl1ent-secret",
    "sign1ng-key-value",
    "hm4c-secret-one",
    "hm4c-secret-two",
]


@pytest.mark.parametrize("render", [repr, str], ids=["repr", "str"])
def test_secrets_never_appear_when_settings_are_printed(
    monkeypatch: pytest.MonkeyPatch, render: object
) -> None:
    settings = from_env(monkeypatch, **SECRETS)
    text = render(settings)  # type: ignore[operator]

    assert settings.oauth_client_secrets == {"sender": "oauth-cl1ent-secret"}
    for secret in SECRET_STRINGS:
        assert secret not in text


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        pytest.param("WAPIPE_AUTHORIZATION", "t0ken-without-scheme", "t0ken", id="authorization"),
        pytest.param("WAPIPE_OAUTH_CLIENTS", "cl1ent-secret-no-id", "cl1ent", id="oauth-clients"),
        pytest.param("WAPIPE_WEBHOOK_SECRET", "s3c-a,s3c-b,s3c-c", "s3c", id="webhook-secret"),
    ],
)
def test_secrets_never_appear_in_error_messages(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, secret: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError, match=variable) as raised:
        Settings.from_env()

    assert secret not in str(raised.value)


# --------------------------------------------------------------------------- documentation


def test_environment_variables_cover_every_field_with_a_description() -> None:
    variables = environment_variables()

    assert set(variables) == {f"WAPIPE_{name.upper()}" for name in Settings.model_fields}
    assert {"WAPIPE_KAFKA_BOOTSTRAP", "WAPIPE_TOPIC_PREFIX", "WAPIPE_INGEST_PORT"} <= set(variables)
    assert [name for name, description in variables.items() if not description] == []


def test_readme_documents_every_setting() -> None:
    assert README.is_file(), f"{README} is missing"
    text = README.read_text(encoding="utf-8")

    undocumented = [
        name
        for name in environment_variables()
        if not re.search(rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])", text)
    ]

    assert undocumented == []
