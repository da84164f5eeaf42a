"""Validation of the wire contracts: what is accepted, and the reason for what is not."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import msgspec
import pytest

from schemas import EventDecoder, Feedback, Purchase, Rejected, Signup
from schemas.alert import AlertReason, AlertRecord, AlertSource
from schemas.deadletter import REJECT_REASONS, DeadLetter
from schemas.events import Timestamp
from schemas.jsonschema import DIALECT, JSON_DIR, _schema, generate, refs, render
from tests.published_schemas import load, problems, registry, validator

BASE = {"event_id": "e-1", "customer_id": "c-1", "occurred_at": "2024-03-01T10:00:00+02:00"}
VALID: list[tuple[str, dict[str, Any]]] = [
    ("signup", {**BASE, "segment": "smb", "plan": "pro", "monthly_fee": 49.0, "channel": "paid"}),
    ("signup", dict(BASE)),
    ("purchase", {**BASE, "amount": 12.5, "currency": "USD", "order_id": "o-9"}),
    ("purchase", {**BASE, "type": "purchase", "amount": 0, "extra": {"nested": [1, 2]}}),
    ("cancellation", {**BASE, "reason_code": "price", "reason": "too dear", "monthly_fee": 49}),
    ("feedback", {**BASE, "kind": "nps", "score": 0}),
    ("feedback", {**BASE, "kind": "nps", "score": 10, "comment": "great"}),
    ("feedback", {**BASE, "kind": "csat", "score": 5}),
    ("feedback", {**BASE, "kind": "support", "outcome": "bad"}),
]


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def decoder() -> EventDecoder:
    return EventDecoder(max_event_bytes=4096)


@pytest.mark.parametrize(("kind", "body"), VALID)
def test_valid_events_decode(decoder: EventDecoder, kind: str, body: dict[str, Any]) -> None:
    event = decoder.decode(kind, b"c-1", encode(body))  # type: ignore[arg-type]
    assert not isinstance(event, Rejected), event
    assert event.customer_id == "c-1"
    assert event.occurred_at.utcoffset() is not None


def test_offset_is_honoured(decoder: EventDecoder) -> None:
    event = decoder.decode("purchase", b"c-1", encode({**BASE, "amount": 1}))
    assert isinstance(event, Purchase)
    assert event.occurred_at.hour - event.occurred_at.utcoffset().total_seconds() / 3600 == 8  # type: ignore[union-attr]


INVALID: list[tuple[str, bytes, bytes | None, str]] = [
    ("purchase", encode({**BASE, "amount": -1}), b"c-1", "invalid_field"),
    ("purchase", encode({**BASE, "amount": "12.5"}), b"c-1", "invalid_field"),
    (
        "purchase",
        b'{"event_id":"e","customer_id":"c-1","occurred_at":"2024-01-01T00:00:00Z","amount":1e400}',
        b"c-1",
        "invalid_field",
    ),
    (
        "purchase",
        b'{"event_id":"e","customer_id":"c-1","occurred_at":"2024-01-01T00:00:00Z","amount":NaN}',
        b"c-1",
        "malformed_json",
    ),
    ("purchase", encode({**BASE}), b"c-1", "missing_field"),
    (
        "purchase",
        encode({"customer_id": "c-1", "occurred_at": BASE["occurred_at"], "amount": 1}),
        b"c-1",
        "missing_field",
    ),
    (
        "purchase",
        encode({**BASE, "occurred_at": "2024-03-01T10:00:00", "amount": 1}),
        b"c-1",
        "invalid_field",
    ),
    (
        "purchase",
        encode({**BASE, "occurred_at": "yesterday", "amount": 1}),
        b"c-1",
        "invalid_field",
    ),
    ("purchase", encode({**BASE, "event_id": "", "amount": 1}), b"c-1", "invalid_field"),
    ("purchase", encode({**BASE, "customer_id": "c\n1", "amount": 1}), b"c\n1", "invalid_field"),
    ("purchase", encode({**BASE, "type": "refund", "amount": 1}), b"c-1", "wrong_type"),
    ("signup", encode({**BASE, "type": "purchase", "amount": 1}), b"c-1", "wrong_type"),
    ("purchase", encode({**BASE, "amount": 1}), b"c-2", "key_mismatch"),
    ("purchase", encode({**BASE, "amount": 1}), None, "key_mismatch"),
    ("purchase", b'{"event_id": "e", "amount": 1', b"c-1", "malformed_json"),
    ("purchase", b"not json at all", b"c-1", "malformed_json"),
    ("purchase", b"", b"c-1", "malformed_json"),
    ("purchase", b"[1, 2]", b"c-1", "not_an_object"),
    ("purchase", b"\xff\xfe{}", b"c-1", "not_utf8"),
    ("purchase", b'{"event_id": "\xc3\x28"}', b"c-1", "not_utf8"),
    ("purchase", b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"c-1", "too_large"),
    ("feedback", encode({**BASE, "kind": "nps", "score": 11}), b"c-1", "invalid_field"),
    ("feedback", encode({**BASE, "kind": "nps", "score": 7.5}), b"c-1", "invalid_field"),
    ("feedback", encode({**BASE, "kind": "nps"}), b"c-1", "invalid_field"),
    ("feedback", encode({**BASE, "kind": "csat", "score": 0}), b"c-1", "invalid_field"),
    ("feedback", encode({**BASE, "kind": "support", "outcome": "meh"}), b"c-1", "invalid_field"),
    ("feedback", encode({**BASE, "kind": "support"}), b"c-1", "invalid_field"),
    ("feedback", encode({**BASE, "kind": "survey", "score": 3}), b"c-1", "invalid_field"),
]


@pytest.mark.parametrize(("kind", "value", "key", "reason"), INVALID)
def test_invalid_events_are_rejected_with_reason(
    decoder: EventDecoder, kind: str, value: bytes, key: bytes | None, reason: str
) -> None:
    result = decoder.decode(kind, key, value)  # type: ignore[arg-type]
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result
    assert result.detail


def test_deep_nesting_within_size_is_rejected_not_crashing() -> None:
    decoder = EventDecoder(max_event_bytes=1 << 20)
    value = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    result = decoder.decode("purchase", b"c-1", value)
    assert isinstance(result, Rejected)
    assert result.reason in {"too_deep", "malformed_json", "missing_field"}


def test_tick_decodes_and_rejects(decoder: EventDecoder) -> None:
    assert not isinstance(decoder.decode_tick(b'{"time":"2024-01-01T00:00:00Z"}'), Rejected)
    rejected = decoder.decode_tick(b'{"time":"2024-01-01T00:00:00"}')
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "invalid_field"


def test_feedback_fields_by_kind(decoder: EventDecoder) -> None:
    event = decoder.decode("feedback", b"c-1", encode({**BASE, "kind": "csat", "score": 2}))
    assert isinstance(event, Feedback)
    assert (event.kind, event.score) == ("csat", 2)


def test_signup_optional_fields_default_to_none(decoder: EventDecoder) -> None:
    event = decoder.decode("signup", b"c-1", encode(BASE))
    assert isinstance(event, Signup)
    assert event.segment is None and event.monthly_fee is None


def test_json_schema_files_match_the_structs() -> None:
    """Fails when a struct changed without `make schemas`."""
    generated = generate()
    on_disk = {path.name for path in JSON_DIR.glob("*.json")}
    assert on_disk == set(generated), "schemas/json/ has missing or extra files"
    for name, schema in generated.items():
        assert (JSON_DIR / name).read_text() == render(schema), f"{name} drifted"


@pytest.mark.parametrize(("kind", "body"), VALID)
def test_json_schema_accepts_what_the_decoder_accepts(kind: str, body: dict[str, Any]) -> None:
    schema = json.loads((JSON_DIR / f"{kind}.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(body)


@pytest.mark.parametrize(
    ("kind", "value", "key", "reason"),
    [
        case
        for case in INVALID
        if case[3] in {"invalid_field", "missing_field", "wrong_type"}
        and b"\\n" not in case[1]
        and b"1e400" not in case[1]
        and b"yesterday" not in case[1]
        and b'10:00:00"' not in case[1]
    ],
)
def test_json_schema_rejects_what_the_decoder_rejects(
    kind: str, value: bytes, key: bytes | None, reason: str
) -> None:
    schema = json.loads((JSON_DIR / f"{kind}.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(json.loads(value))


PUBLISHED = sorted(path.name for path in JSON_DIR.glob("*.json"))


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_schema_is_a_valid_2020_12_schema(name: str) -> None:
    schema = load(name)
    assert schema["$schema"] == DIALECT
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", PUBLISHED)
def test_every_ref_resolves_inside_its_file(name: str) -> None:
    # The registry holds this file alone and retrieves nothing: a $ref into another
    # file, onto the network or to a missing $defs entry raises Unresolvable.
    schema = load(name)
    resolver = registry(schema).resolver(base_uri=schema["$id"])
    for ref in refs(schema):
        resolver.lookup(ref)


def test_the_alert_schema_has_refs_to_resolve() -> None:
    # Keeps the test above from passing vacuously should the generator inline them.
    assert {"#/$defs/AlertReason", "#/$defs/AlertSource"} <= set(refs(load("alert.json")))


class Leaf(msgspec.Struct, kw_only=True):
    at: Timestamp


class Node(msgspec.Struct, kw_only=True):
    leaf: Leaf
    children: list[Node] = []


def test_the_generator_lifts_a_recursive_root_and_keeps_what_it_refers_to() -> None:
    schema = _schema(Node, "node", "a tree")
    assert set(schema["$defs"]) == {"Leaf"}
    assert set(refs(schema)) == {"#", "#/$defs/Leaf"}
    check = jsonschema.Draft202012Validator(schema, registry=registry(schema))
    leaf = {"at": "2024-01-01T00:00:00Z"}
    check.validate({"leaf": leaf, "children": [{"leaf": leaf, "children": []}]})
    with pytest.raises(jsonschema.ValidationError):
        check.validate({"leaf": leaf, "children": [{"children": []}]})


def _alert() -> AlertRecord:
    at = datetime(2024, 3, 1, tzinfo=UTC)
    return AlertRecord(
        alert_id="c-1:0-1",
        dedup_key="c-1:0",
        sequence=1,
        status="firing",
        customer_id="c-1",
        tier="high",
        risk_score=0.8,
        reasons=[AlertReason(code="recency", value=40.0, threshold=30.0)],
        value_at_risk=120.0,
        clv=300.0,
        segment=None,
        starts_at=at,
        at=at,
        observed_at=datetime.now(UTC),
        source=AlertSource(topic="churnwatch.clock", partition=0, offset=3, event_id=None),
    )


def _dead_letter() -> DeadLetter:
    return DeadLetter(
        reason="malformed_json",
        detail="JSON is malformed",
        topic="customer.purchases",
        partition=2,
        offset=17,
        timestamp_ms=None,
        key_b64=None,
        value_b64=base64.b64encode(b"\xff{").decode(),
        size=2,
        received_at=datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("name", "record"), [("alert.json", _alert()), ("deadletter.json", _dead_letter())]
)
def test_records_as_the_worker_encodes_them_validate(name: str, record: msgspec.Struct) -> None:
    body = json.loads(msgspec.json.encode(record))
    assert problems(validator(name), body) == []
    # The format checker does check timestamps: one without an offset fails.
    stamp = "at" if name == "alert.json" else "received_at"
    naive = {**body, stamp: body[stamp][:19]}
    assert any("date-time" in problem for problem in problems(validator(name), naive))


def test_the_dead_letter_schema_names_every_reject_reason() -> None:
    reasons = load("deadletter.json")["properties"]["reason"]["enum"]
    assert sorted(reasons) == sorted(REJECT_REASONS)
