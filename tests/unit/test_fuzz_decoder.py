"""Fuzzing the decoder: whatever bytes arrive, it answers an event or a known reason.

Event payloads are untrusted (README, Threat model). The worker hands every input
message to ``EventDecoder``; if the decoder raised, the agent would crash, and if it
let through an event breaking the documented contract (README, Event contracts), the
state, Redis keys or log lines built from it could. So for arbitrary bytes, deep
nesting, extreme numbers, wrong types, unicode edge cases, timestamps without offset
and mutations of valid events, these properties must hold:

- ``decode`` and ``decode_tick`` never raise;
- a rejection carries a reason from the fixed set and a short, printable detail;
- an accepted event meets the contract, checked here independently of the structs
  (Unicode categories, not ``str.isprintable``; explicit bounds, not ``Meta``).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import EVENT_TYPES, ClockTick, Event, Feedback, Purchase, Rejected
from schemas.deadletter import REJECT_REASONS
from schemas.decode import EventDecoder
from schemas.events import EVENT_STRUCTS, EventType
from streams.redis_view import RedisView

DECODER = EventDecoder()  # the worker's default limit (64 KiB)
VIEW = RedisView("redis://localhost:1", prefix="cw")  # builds keys; never connects
#: The agent adds ``future_time`` (it needs the wall clock) and ``amount_overflow`` (it
#: needs the partition's sums); the decoder alone gives these.
DECODER_REASONS = set(REJECT_REASONS) - {"future_time", "amount_overflow"}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: The contract's time ranges: RFC 3339 with an offset, within these bounds (events
#: more than a day ahead of the wall clock are then rejected by the worker).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_EVENT = datetime(3000, 1, 1, tzinfo=UTC)
LATEST_TICK = datetime(2200, 1, 1, tzinfo=UTC)

BASE: dict[str, Any] = {
    "event_id": "e-1",
    "customer_id": "c-1",
    "occurred_at": "2024-03-01T10:00:00+02:00",
}
VALID: dict[EventType, dict[str, Any]] = {
    "signup": {**BASE, "segment": "smb", "plan": "pro", "monthly_fee": 49.0, "channel": "ads"},
    "purchase": {**BASE, "amount": 12.5, "currency": "EUR", "order_id": "o-9"},
    "cancellation": {**BASE, "reason_code": "price", "reason": "too dear", "monthly_fee": 9},
    "feedback": {**BASE, "kind": "csat", "score": 4, "comment": "ok"},
}
#: Which JSON types each field may take (``null`` = optional), from the README table.
STR, NUM, INT, NULL = "string", "number", "integer", "null"
FIELD_TYPES: dict[EventType, dict[str, set[str]]] = {
    "signup": {
        "segment": {STR, NULL},
        "plan": {STR, NULL},
        "monthly_fee": {NUM, INT, NULL},
        "channel": {STR, NULL},
    },
    "purchase": {
        "amount": {NUM, INT},
        "currency": {STR, NULL},
        "order_id": {STR, NULL},
        "cost_to_serve": {NUM, INT, NULL},
    },
    "cancellation": {
        "reason_code": {STR, NULL},
        "reason": {STR, NULL},
        "monthly_fee": {NUM, INT, NULL},
    },
    "feedback": {
        "kind": {STR},
        "score": {INT, NULL},
        "outcome": {STR, NULL},
        "comment": {STR, NULL},
    },
}
COMMON_TYPES = {"event_id": {STR}, "customer_id": {STR}, "occurred_at": {STR}, "type": {STR}}


def encode(body: Any, ascii_only: bool = True) -> bytes:
    # ensure_ascii writes lone surrogates as \\udXXX escapes; raw UTF-8 with
    # surrogatepass writes them as (invalid) UTF-8 bytes: both must be handled.
    return json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def printable(text: str) -> bool:
    """No control, format, surrogate, private, unassigned or separator character
    other than the space: what "no control characters" means for ids and labels."""
    return all(c == " " or unicodedata.category(c)[0] not in "CZ" for c in text)


def json_type(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return NUM
    if isinstance(value, str):
        return STR
    return "array" if isinstance(value, list) else "object"


def check_rejected(result: Rejected) -> None:
    assert result.reason in DECODER_REASONS, result
    assert result.detail and len(result.detail) <= 300, result
    assert result.detail.isprintable() and printable(result.detail), result


def check_money(value: float | None, optional: bool = True) -> None:
    if value is None:
        assert optional
        return
    assert isinstance(value, float) and math.isfinite(value) and 0 <= value <= 1e12, value


def check_text(value: str | None, longest: int, *, plain: bool) -> None:
    if value is None:
        return
    assert len(value) <= longest, value
    if plain:  # ids and labels: not empty, no control characters
        assert value and printable(value), ascii(value)


def check_time(moment: datetime, latest: datetime = LATEST_EVENT) -> None:
    assert moment.utcoffset() is not None, moment
    assert EARLIEST <= moment < latest, moment


def check_event(kind: EventType, key: bytes | None, event: Event) -> None:
    """The documented contract, for an event the decoder accepted."""
    assert type(event) is EVENT_STRUCTS[kind]
    for identifier in (event.event_id, event.customer_id):
        check_text(identifier, 128, plain=True)
    # The customer id is the table key and part of Redis keys: the message key must
    # be exactly its UTF-8 bytes, and it can never name an internal record (b"\x00...").
    assert key == event.customer_id.encode()
    assert not key.startswith(b"\x00")
    check_time(event.occurred_at)
    for label in ("segment", "plan", "channel", "reason_code"):
        check_text(getattr(event, label, None), 64, plain=True)
    for text in ("reason", "comment"):
        check_text(getattr(event, text, None), 4096, plain=False)
    if isinstance(event, Purchase):
        check_money(event.amount, optional=False)
        check_money(event.cost_to_serve)
        check_text(event.order_id, 128, plain=True)
        currency = event.currency
        assert currency is None or (len(currency) == 3 and currency.isascii()), currency
        assert currency is None or (currency.isalpha() and currency.isupper()), currency
    check_money(getattr(event, "monthly_fee", None))
    if isinstance(event, Feedback):
        assert event.kind in ("nps", "csat", "support")
        if event.kind == "nps":
            assert event.score is not None and 0 <= event.score <= 10
        elif event.kind == "csat":
            assert event.score is not None and 1 <= event.score <= 5
        else:
            assert event.outcome in ("resolved", "unresolved", "bad")
    # What was accepted can be written again (state, Redis, alerts) and reads back equal.
    again = DECODER.decode(kind, key, msgspec.json.encode(event))
    assert again == event


def decode(kind: EventType, key: bytes | None, value: bytes | None) -> Event | Rejected:
    """``decode``, with every property checked; a raise fails the test as is."""
    result = DECODER.decode(kind, key, value)
    if isinstance(result, Rejected):
        check_rejected(result)
    else:
        assert key is not None
        check_event(kind, key, result)
    return result


def decode_tick(value: bytes | None) -> ClockTick | Rejected:
    result = DECODER.decode_tick(value)
    if isinstance(result, Rejected):
        check_rejected(result)
    else:
        assert isinstance(result, ClockTick)
        check_time(result.time, LATEST_TICK)
        check_text(result.source, 64, plain=True)
    return result


kinds = st.sampled_from(EVENT_TYPES)
keys = st.one_of(st.none(), st.just(b"c-1"), st.binary(max_size=140))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def test_the_valid_examples_are_valid() -> None:
    # The fuzzers below mutate these: they must start from accepted events.
    for kind, body in VALID.items():
        assert not isinstance(decode(kind, b"c-1", encode(body)), Rejected), kind


@FUZZ
@given(kind=kinds, key=keys, value=st.one_of(st.none(), st.binary(max_size=600)))
@example(kind="purchase", key=None, value=None)  # a tombstone
@example(kind="purchase", key=b"c-1", value=b"")
@example(kind="purchase", key=b"c-1", value=b"\xef\xbb\xbf{}")  # a byte-order mark
@example(kind="signup", key=b"c-1", value=b'{"customer_id":"c-1"\x00}')
def test_arbitrary_bytes_never_raise(kind: EventType, key: bytes | None, value: bytes) -> None:
    decode(kind, key, value)
    decode_tick(value)


@FUZZ
@given(kind=kinds, value=json_values)
def test_arbitrary_json_is_an_event_or_a_reason(kind: EventType, value: Any) -> None:
    result = decode(kind, b"c-1", encode(value))
    if not isinstance(value, dict):
        assert isinstance(result, Rejected) and result.reason == "not_an_object", result
    decode_tick(encode(value))


@pytest.mark.parametrize("depth", [100, 1_000, 10_000, 100_000])
@pytest.mark.parametrize(
    "shape",
    ["array", "object", "unclosed", "in_unknown_field", "in_known_field"],
)
def test_deep_nesting_is_rejected_without_exhausting_the_stack(shape: str, depth: int) -> None:
    nest = b'{"a":' * depth + b"1" + b"}" * depth
    valid = encode(VALID["purchase"])[:-1]
    value = {
        "array": b"[" * depth + b"]" * depth,
        "object": nest,
        "unclosed": b"[" * depth,
        "in_unknown_field": valid + b',"extra":' + nest + b"}",
        "in_known_field": valid + b',"order_id":' + b"[" * depth + b"]" * depth + b"}",
    }[shape]
    roomy = EventDecoder(max_event_bytes=len(value))  # so that nesting, not size, decides
    for decoder in (DECODER, roomy):
        result = decoder.decode("purchase", b"c-1", value)
        if shape == "in_unknown_field" and depth < 500:
            assert not isinstance(result, Rejected)  # unknown fields may nest a little
            continue
        assert isinstance(result, Rejected), (shape, depth)
        check_rejected(result)
        if decoder is DECODER and len(value) > DECODER.max_event_bytes:
            assert result.reason == "too_large"
        tick = decoder.decode_tick(value)
        assert isinstance(tick, Rejected) and tick.reason in DECODER_REASONS


NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
number_tokens = st.one_of(
    st.sampled_from(
        [
            "1e400",
            "-1e400",
            "1e-400",
            "NaN",
            "nan",
            "Infinity",
            "-Infinity",
            "inf",
            "-0.0",
            "-0",
            "0",
            "1e12",
            "1000000000000.0000001",
            "1000000000000.001",
            "1" + "0" * 5000,
            "0." + "0" * 5000 + "1",
            "18446744073709551616",
            "-9223372036854775809",
            "1.",
            ".5",
            "01",
            "+1",
            "0x10",
            "1_000",
        ]
    ),
    st.from_regex(NUMBER, fullmatch=True),
    st.floats().map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)


def is_json_number(token: str) -> bool:
    return re.fullmatch(NUMBER, token) is not None


@FUZZ
@given(token=number_tokens, field=st.sampled_from(["amount", "cost_to_serve"]))
def test_money_is_finite_and_within_bounds(token: str, field: str) -> None:
    body = encode(VALID["purchase"])[:-1] + f',"{field}":{token}}}'.encode()
    result = decode("purchase", b"c-1", body)
    if not is_json_number(token):
        assert isinstance(result, Rejected) and result.reason == "malformed_json", (token, result)
        return
    value = float(token)
    accepted = math.isfinite(value) and 0 <= value <= 1e12
    assert isinstance(result, Purchase) == accepted, (token, result)
    if isinstance(result, Purchase):
        assert getattr(result, field) == value
    else:
        assert isinstance(result, Rejected) and result.reason == "invalid_field", (token, result)


@FUZZ
@given(token=number_tokens)
def test_scores_are_small_integers(token: str) -> None:
    body = encode({**VALID["feedback"], "kind": "nps"})[:-1] + f',"score":{token}}}'.encode()
    result = decode("feedback", b"c-1", body)
    integral = is_json_number(token) and re.fullmatch(r"-?(0|[1-9][0-9]{0,5})", token) is not None
    assert isinstance(result, Feedback) == (integral and 0 <= int(token) <= 10), (token, result)


@FUZZ
@given(kind=kinds, data=st.data(), value=json_values)
def test_wrong_types_per_field_are_rejected(
    kind: EventType, data: st.DataObject, value: Any
) -> None:
    fields = {**COMMON_TYPES, **FIELD_TYPES[kind]}
    field = data.draw(st.sampled_from(sorted(fields)))
    body = {**VALID[kind], field: value}
    result = decode(kind, b"c-1", encode(body))
    if json_type(value) not in fields[field]:
        assert isinstance(result, Rejected), (field, value, result)
        expected = {"wrong_type"} if field == "type" else {"invalid_field", "missing_field"}
        assert result.reason in expected, (field, value, result)


# Unicode edge cases: controls, NUL, bidi marks and overrides, line separators, BOM,
# combining marks, 4-byte characters, lone surrogates, private use.
SPECIAL = "\x00\x01\x1b\x7f\x85\xa0\u200b\u200e\u200f\u202a\u202e\u2028\u2029\u2066\ufeff\ufffd"
SPECIAL += "\u0301\ud800\udfff\ue000\U0001f600\U00010348\U000e0001"
ids = st.one_of(
    st.text(alphabet=st.sampled_from(SPECIAL + "ab-_ .é中"), max_size=12),
    st.text(st.characters(codec=None), max_size=20),
    st.integers(min_value=120, max_value=140).map(lambda n: "x" * n),
    st.integers(min_value=120, max_value=140).map(lambda n: "\U0001f600" * n),
    st.just(""),
)


@FUZZ
@given(
    kind=kinds,
    field=st.sampled_from(["customer_id", "event_id"]),
    identifier=ids,
    ascii_only=st.booleans(),
)
@example(kind="purchase", field="customer_id", identifier="\x00partition/0", ascii_only=True)
@example(kind="purchase", field="customer_id", identifier="\u202egnp.exe", ascii_only=False)
def test_identifiers_are_bounded_and_printable(
    kind: EventType, field: str, identifier: str, ascii_only: bool
) -> None:
    body = {**VALID[kind], field: identifier}
    customer = body["customer_id"]
    key = customer.encode("utf-8", "surrogatepass")
    result = decode(kind, key, encode(body, ascii_only))
    acceptable = 1 <= len(identifier) <= 128 and printable(identifier)
    assert isinstance(result, Rejected) != acceptable, (ascii(identifier), result)


@FUZZ
@given(kind=kinds, identifier=ids)
def test_redis_keys_of_accepted_ids_are_escaped(kind: EventType, identifier: str) -> None:
    result = DECODER.decode(
        kind,
        identifier.encode("utf-8", "surrogatepass"),
        encode({**VALID[kind], "customer_id": identifier}),
    )
    if isinstance(result, Rejected):
        return
    key = VIEW.customer_key(result.customer_id)
    escaped = key.removeprefix("cw:customer:")
    assert escaped and all(c.isascii() and (c.isalnum() or c in "_.-%") for c in escaped), key
    assert unquote(escaped, errors="strict") == result.customer_id


offsets = st.one_of(
    st.none(),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    ),
)


@FUZZ
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    offset=offsets,
    zulu=st.booleans(),
)
@example(moment=datetime(1, 1, 1), offset=timezone(timedelta(hours=5)), zulu=False)
@example(moment=datetime(9999, 12, 31, 23, 59), offset=timezone(-timedelta(hours=23)), zulu=False)
@example(moment=datetime(2024, 1, 1), offset=None, zulu=False)
def test_times_need_an_offset_and_a_sane_year(
    moment: datetime, offset: timezone | None, zulu: bool
) -> None:
    text = moment.replace(tzinfo=offset).isoformat()
    if zulu and offset is not None and offset.utcoffset(None) == timedelta(0):
        text = text.replace("+00:00", "Z")
    event = decode("purchase", b"c-1", encode({**VALID["purchase"], "occurred_at": text}))
    tick = decode_tick(encode({"time": text}))
    aware = moment.replace(tzinfo=offset)
    for result, latest in ((event, LATEST_EVENT), (tick, LATEST_TICK)):
        expected = offset is not None and EARLIEST <= aware < latest
        assert isinstance(result, Rejected) != expected, (text, result)
        if isinstance(result, Rejected):
            assert result.reason == "invalid_field", (text, result)
    if isinstance(event, Purchase):
        assert event.occurred_at == aware


@FUZZ
@given(
    text=st.one_of(
        st.from_regex(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,12})?)?"
            r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?",
            fullmatch=True,
        ),
        st.text(max_size=40),
    )
)
@example(text="2024-01-01T00:00:00")
@example(text="2024-02-30T00:00:00Z")
@example(text="2024-01-01T24:00:00Z")
@example(text="2016-12-31T23:59:60Z")
@example(text="1899-12-31T23:59:59.999999Z")
@example(text="2199-12-31T23:59:59.999999-23:59")
@example(text="2999-12-31T23:59:59.999999-23:59")
def test_timestamp_strings_never_raise(text: str) -> None:
    decode("purchase", b"c-1", encode({**VALID["purchase"], "occurred_at": text}))
    decode_tick(encode({"time": text}))


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]),
        st.integers(min_value=0, max_value=10_000),
        st.integers(min_value=0, max_value=255),
    ),
    min_size=1,
    max_size=6,
)


def mutate(value: bytes, steps: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(value)
    for op, where, byte in steps:
        at = where % (len(data) + 1)
        if op == "flip" and at < len(data):
            data[at] ^= byte or 1
        elif op == "insert":
            data[at:at] = bytes([byte])
        elif op == "delete":
            del data[at : at + 1 + byte % 4]
        elif op == "truncate":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + 1 + byte % 16]
    return bytes(data)


@FUZZ
@given(kind=kinds, steps=mutations)
def test_mutated_valid_events_are_an_event_or_a_reason(
    kind: EventType, steps: list[tuple[str, int, int]]
) -> None:
    value = mutate(encode(VALID[kind]), steps)
    decode(kind, b"c-1", value)
    decode(kind, None, value)
    decode_tick(mutate(b'{"type":"tick","time":"2024-01-01T00:00:00Z"}', steps))


@FUZZ
@given(kind=kinds, key=keys)
def test_the_key_must_be_the_customer_id(kind: EventType, key: bytes | None) -> None:
    result = decode(kind, key, encode(VALID[kind]))
    if key != b"c-1":
        assert isinstance(result, Rejected) and result.reason == "key_mismatch", (key, result)


@given(kind=kinds, extra=st.integers(min_value=1, max_value=4096))
@settings(max_examples=50, deadline=None)
def test_size_is_checked_before_anything_else(kind: EventType, extra: int) -> None:
    decoder = EventDecoder(max_event_bytes=256)
    value = encode(VALID[kind])[:-1] + b',"pad":"' + b"x" * (256 + extra) + b'"}'
    result = decoder.decode(kind, None, value)
    assert isinstance(result, Rejected) and result.reason == "too_large"
    check_rejected(result)
