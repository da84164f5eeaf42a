"""The worker on a real broker: bad input is dead-lettered with a reason while
every valid event reaches the table, and the counts add up."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from pathlib import Path

import pytest

from retention.timeutil import parse_time
from streams import topics
from streams.kafka_admin import read_all
from streams.replay import replay
from streams.settings import Settings
from tests.brokers import new_broker

pytestmark = pytest.mark.integration


def line(type_: str, event_id: str, customer: str, when: str, **fields: object) -> bytes:
    body = {"type": type_, "event_id": event_id, "customer_id": customer, "occurred_at": when}
    return json.dumps({**body, **fields}).encode()


BAD_LINES: list[tuple[bytes, str]] = [
    (
        b'{"type": "purchase", "event_id": "b1", "customer_id": "c1", "occurred_at"',
        "malformed_json",
    ),
    (b"this is not json", "malformed_json"),
    (line("purchase", "b2", "c1", "2024-01-02T00:00:00Z", amount="12.50"), "invalid_field"),
    (line("feedback", "b3", "c1", "2024-01-02T00:00:00Z", kind="nps", score=7.5), "invalid_field"),
    (line("purchase", "b4", "c2", "2024-01-02T00:00:00Z"), "missing_field"),
    (line("purchase", "b5", "c2", "2024-01-02T00:00:00Z", amount=-3), "invalid_field"),
    (line("refund", "b6", "c2", "2024-01-02T00:00:00Z", amount=3), "wrong_type"),
    (line("purchase", "b7", "c3", "2024-01-02T00:00:00", amount=3), "invalid_field"),
    (
        b'{"type":"purchase","event_id":"b8","customer_id":"c3","occurred_at":"2024-01-02T00:00:00Z",'
        b'"amount":1,"comment":"\xff\xfe"}',
        "not_utf8",
    ),
    (b"\xff\xfe\xfd\x00\x01", "not_utf8"),
    (
        line("purchase", "b9", "c3", "2024-01-02T00:00:00Z", amount=1, note="x" * 70_000),
        "too_large",
    ),
]


def good_lines() -> list[bytes]:
    lines = []
    for n in range(60):
        customer = f"c{n % 12}"
        day = 1 + n % 28
        lines.append(
            line("purchase", f"p{n}", customer, f"2024-02-{day:02d}T10:00:00Z", amount=5.25)
        )
    for n in range(12):
        lines.append(line("signup", f"s{n}", f"c{n}", "2024-01-01T00:00:00Z", segment="smb"))
        lines.append(
            line("feedback", f"f{n}", f"c{n}", "2024-03-01T00:00:00Z", kind="csat", score=4)
        )
    lines.append(line("cancellation", "x1", "c5", "2024-03-02T00:00:00Z", monthly_fee=10))
    lines.append(lines[0])  # an exact duplicate
    return lines


def test_bad_records_are_dead_lettered_and_counts_add_up(tmp_path: Path) -> None:
    good = good_lines()
    bad = [value for value, _ in BAD_LINES]
    mixed = []
    for index, value in enumerate(good):
        mixed.append(value)
        if index % 7 == 0 and bad:
            mixed.append(bad.pop())
    mixed.extend(bad)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(mixed) + b"\n")
    with new_broker(tmp_path) as broker:
        result = replay(
            path,
            parse_time("2024-06-01T00:00:00Z"),
            partitions=3,
            broker_url=broker,
            base=Settings(),
            workdir=tmp_path,
        )
        dead = asyncio.run(read_all(broker.bootstrap, topics.DEADLETTER))
    records = [json.loads(record.value) for record in dead]
    by_bytes = {base64.b64decode(r["value_b64"]): r["reason"] for r in records}
    for value, reason in BAD_LINES:
        assert by_bytes.get(value) == reason, (value[:80], by_bytes.get(value))
    assert len(records) == len(BAD_LINES)
    events = result.events
    assert events["consumed"] == len(good) + len(BAD_LINES)
    assert events["deadletter"] == len(BAD_LINES)
    assert events["duplicates"] == 1
    assert events["consumed"] == events["valid"] + events["deadletter"] + events["duplicates"]
    assert set(result.customers) == {f"c{n}" for n in range(12)}
    assert sum(state.purchases for state in result.customers.values()) == 60
    assert Counter(r["reason"] for r in records) == Counter(reason for _, reason in BAD_LINES)
    assert result.customers["c5"].cancellations == 1
    assert all(state.csat_responses == 1 for state in result.customers.values())
