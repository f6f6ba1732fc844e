"""The `wapipe` command a newcomer meets first."""

from __future__ import annotations

import os
import subprocess
import sys

from wapipe.topics import TOPICS


def _wapipe(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wapipe", *args],
        env={**os.environ, **environment},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_help_lists_every_command():
    result = _wapipe("--help")
    assert result.returncode == 0
    for command in ("kafka", "topics", "ingest", "run", "config"):
        assert command in result.stdout


def test_no_command_prints_help_and_fails():
    result = _wapipe()
    assert result.returncode == 2
    assert "usage: wapipe" in result.stdout


def test_topics_list_names_every_topic_with_the_prefix():
    result = _wapipe("topics", "list", WAPIPE_TOPIC_PREFIX="acme")
    assert result.returncode == 0
    for spec in TOPICS:
        assert f"acme.{spec.suffix}" in result.stdout


def test_config_shows_values_and_masks_secrets():
    result = _wapipe("config", WAPIPE_WEBHOOK_SECRET="very-secret-value", WAPIPE_INGEST_PORT="9999")
    assert result.returncode == 0
    assert "WAPIPE_INGEST_PORT = 9999" in result.stdout
    assert "very-secret-value" not in result.stdout
    assert "WAPIPE_WEBHOOK_SECRET = **********" in result.stdout
