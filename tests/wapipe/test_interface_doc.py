"""docs/interface.md's topics and record fields are generated from the topics' specs and
JSON Schemas: a change to either without the document fails here."""

from __future__ import annotations

import re
from pathlib import Path

from wapipe import interface_doc, topics

ROOT = Path(__file__).resolve().parents[2]


def test_the_interface_document_is_what_the_topics_and_schemas_say() -> None:
    assert interface_doc.main(["--check"]) == 0, (
        "docs/interface.md is stale: run `python -m wapipe.interface_doc --write`"
    )


def test_every_topic_and_every_field_of_its_schema_is_documented() -> None:
    document = interface_doc.DOCUMENT.read_text(encoding="utf-8")
    for spec in topics.TOPICS:
        assert f"`{spec.name('whatsapp')}`" in document, spec.suffix
    message_state = document.split("### whatsapp.message_state", 1)[1].split("### ", 1)[0]
    assert "| `readAt` | timestampMs or null | yes |" in message_state


def test_a_stale_document_is_told_apart() -> None:
    fresh = interface_doc.rewritten(interface_doc.DOCUMENT.read_text(encoding="utf-8"))
    stale = fresh.replace("| `readAt` |", "| `readAtt` |")
    assert interface_doc.rewritten(stale) == fresh


def test_nothing_in_the_project_links_outside_it() -> None:
    outside = []
    for path in ROOT.rglob("*"):
        if any(part in {".git", ".venv", ".wapipe", "node_modules"} or part.endswith(
                ".egg-info") for part in path.relative_to(ROOT).parts):  # fmt: skip
            continue
        if path.is_file() and path.suffix in {".md", ".py", ".toml", ".yml", ".yaml", ".json"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            if re.search(r"\.\./shared\b", text):
                outside.append(str(path.relative_to(ROOT)))
    assert outside == [], f"links outside the repository: {outside}"
