"""What the ingester reads of a body (ingest.envelope): record key, event-type label, shape."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from example_bodies import expected_raw_key

from ingest.envelope import event_type_label, is_recognised, record_key

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
EXAMPLE_PATHS = sorted(EXAMPLES_DIR.rglob("*.json"))
EXAMPLE_IDS = [path.relative_to(EXAMPLES_DIR).as_posix() for path in EXAMPLE_PATHS]


def sha256_key(raw: bytes) -> bytes:
    return b"sha256:" + hashlib.sha256(raw).hexdigest().encode()


def key_of(body: dict[str, Any]) -> bytes:
    return record_key(body, json.dumps(body).encode())


def test_there_are_examples_of_both_envelopes() -> None:
    bodies = [orjson.loads(path.read_bytes()) for path in EXAMPLE_PATHS]
    assert any(body.get("namespace") == "ChatApps" for body in bodies)
    assert any("eventId" in body for body in bodies)
    assert any(path.parent != EXAMPLES_DIR for path in EXAMPLE_PATHS)  # recursive


# --------------------------------------------------------------------------- record_key


@pytest.mark.parametrize("path", EXAMPLE_PATHS, ids=EXAMPLE_IDS)
def test_record_key_of_each_example(path: Path) -> None:
    raw = path.read_bytes()
    body = orjson.loads(raw)

    assert record_key(body, raw) == expected_raw_key(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {
                "namespace": "ChatApps",
                "eventType": "inbound_message_received",
                "inboundMessage": {"umid": "L1"},
            },
            b"L1",
            id="line-like-inboundMessage.umid",
        ),
        pytest.param({"payload": {"umid": "U1"}, "eventId": "E1"}, b"U1", id="umid-before-eventId"),
        pytest.param({"eventId": "E1", "id": "I1"}, b"E1", id="eventId-before-other-ids"),
        pytest.param(
            {"eventId": "E5", "eventDetails": {"templateId": "T1"}}, b"T1", id="templateId"
        ),
        pytest.param(
            {"eventId": "E6", "eventDetails": {"templateId": 951847263015}},
            b"951847263015",
            id="integer-templateId",
        ),
        pytest.param(
            {"eventId": "E7", "eventDetails": {"displayPhoneNumber": "4930901820"}},
            b"4930901820",
            id="displayPhoneNumber",
        ),
        pytest.param(
            {"eventId": "E8", "eventDetails": {"templateId": ""}}, b"E8", id="empty-templateId"
        ),
        pytest.param(
            {"eventId": "E9", "eventDetails": ["templateId"]}, b"E9", id="non-object-details"
        ),
        pytest.param({"umid": "U2"}, b"U2", id="bare-umid"),
        pytest.param({"payload": {"messageId": "M1"}}, b"M1", id="payload.messageId"),
        pytest.param({"messageId": "M2"}, b"M2", id="messageId"),
        pytest.param({"payload": {"id": "P1"}}, b"P1", id="payload.id"),
        pytest.param({"id": "I2"}, b"I2", id="bare-id"),
        pytest.param({"id": 12345}, b"12345", id="integer-id"),
        pytest.param({"eventId": -7}, b"-7", id="negative-integer-eventId"),
        pytest.param({"payload": {"umid": 2**70}}, str(2**70).encode(), id="huge-integer-umid"),
        pytest.param({"payload": {"umid": True}, "eventId": "E2"}, b"E2", id="bool-umid-ignored"),
        pytest.param({"payload": {"umid": ""}, "eventId": "E3"}, b"E3", id="empty-umid-ignored"),
        pytest.param({"payload": "text", "eventId": "E4"}, b"E4", id="non-object-payload"),
        pytest.param({"payload": {"umid": None}, "id": "I3"}, b"I3", id="null-umid-ignored"),
    ],
)
def test_record_key_picks_the_first_usable_id(body: dict[str, Any], expected: bytes) -> None:
    assert key_of(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="empty-object"),
        pytest.param({"eventType": "something_new", "data": {"x": 1}}, id="no-id-fields"),
        pytest.param({"id": True}, id="bool-id"),
        pytest.param({"id": False, "eventId": False}, id="false-ids"),
        pytest.param({"id": 1.5}, id="float-id"),
        pytest.param({"id": ["a"], "eventId": {"v": "b"}}, id="container-ids"),
        pytest.param({"payload": ["umid"]}, id="list-payload"),
    ],
)
def test_record_key_without_an_id_is_the_sha256_of_the_raw_body(body: dict[str, Any]) -> None:
    raw = orjson.dumps(body)
    assert record_key(body, raw) == sha256_key(raw)


def test_hash_key_is_identical_for_identical_bytes_and_differs_otherwise() -> None:
    raw = b'{"eventType": "something_new", "n": 1}'
    same = bytes(bytearray(raw))
    other = b'{"eventType": "something_new", "n": 2}'
    respaced = b'{"eventType":"something_new","n":1}'

    key = record_key(orjson.loads(raw), raw)

    assert key.startswith(b"sha256:")
    assert len(key) == len(b"sha256:") + 64
    assert record_key(orjson.loads(same), same) == key
    assert record_key(orjson.loads(other), other) != key
    # The hash is over the bytes the sender posted, not over the parsed object.
    assert record_key(orjson.loads(respaced), respaced) != key


# --------------------------------------------------------------------------- event_type_label

KNOWN = [
    "inbound_message_received",
    "outbound_message_status_changed",
    "external_app_message",
    "template_status_update",
    "template_quality_update",
    "template_category_update",
    "template_correct_category_detection",
    "phone_number_quality_update",
    "account_update",
    "whatsapp_user_id_update",
    "whatsapp_contact",
    "whatsapp_preference",
]


@pytest.mark.parametrize("event_type", KNOWN)
def test_event_type_label_of_a_known_type_is_the_type(event_type: str) -> None:
    assert event_type_label({"eventType": event_type}) == event_type


@pytest.mark.parametrize("path", EXAMPLE_PATHS, ids=EXAMPLE_IDS)
def test_event_type_label_of_each_example_is_its_type(path: Path) -> None:
    body = orjson.loads(path.read_bytes())
    assert event_type_label(body) == body["eventType"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"eventType": "something_new"}, id="something_new"),
        pytest.param({"eventType": "Inbound_Message_Received"}, id="other-case"),
        pytest.param({"eventType": ""}, id="empty-string"),
        pytest.param({}, id="missing"),
        pytest.param({"eventType": None}, id="null"),
        pytest.param({"eventType": 5}, id="integer"),
        pytest.param({"eventType": True}, id="bool"),
    ],
)
def test_event_type_label_of_anything_else_is_unknown(body: dict[str, Any]) -> None:
    assert event_type_label(body) == "unknown"


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param(["inbound_message_received"], id="array"),
        pytest.param({"name": "account_update"}, id="object"),
    ],
)
def test_event_type_label_of_a_container_is_unknown(event_type: Any) -> None:
    assert event_type_label({"eventType": event_type}) == "unknown"


# --------------------------------------------------------------------------- is_recognised


@pytest.mark.parametrize("path", EXAMPLE_PATHS, ids=EXAMPLE_IDS)
def test_every_example_is_recognised(path: Path) -> None:
    assert is_recognised(orjson.loads(path.read_bytes())) is True


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"eventType": "something_new"}, id="something_new"),
        pytest.param({}, id="empty-object"),
    ],
)
def test_unknown_shapes_are_not_recognised(body: dict[str, Any]) -> None:
    assert is_recognised(body) is False
