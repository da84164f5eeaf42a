"""Any consumer: every alert and dead letter a replay publishes validates against the
JSON Schema churnwatch publishes for it, with a standard validator (jsonschema,
Draft 2020-12, formats checked), read by a standard client (librdkafka)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from retention.timeutil import parse_time
from streams import topics
from streams.generator import GeneratorProfile, generate
from streams.kafka_admin import read_all
from streams.replay import replay
from streams.settings import Settings
from tests.brokers import new_broker
from tests.published_schemas import problems, validator

pytestmark = pytest.mark.integration
END = "2025-07-01T00:00:00Z"

# Bad input beyond the generator's malformed records: the worker must dead-letter
# each, and each dead letter must still validate.
EXTRA_BAD = [
    b'{"type":"purchase","event_id":"x1","customer_id":"c1",'
    b'"occurred_at":"0001-01-01T00:00:00Z","amount":1}',
    b'{"type":"feedback","event_id":"x2","customer_id":"c1",'
    b'"occurred_at":"2025-05-01T00:00:00Z","kind":"nps","score":11}',
    b"[1, 2, 3]",
    b'{"type":"signup","event_id":"x3","customer_id":"c\\u0007","occurred_at":"2025-05-01T00:00:00Z"}',
]


def write_history(path: Path) -> int:
    """About 3,000 lines: 300 customers over 150 days, with 2% malformed records
    (every kind the generator makes) and ``EXTRA_BAD``. Returns the bad lines."""
    profile = GeneratorProfile(malformed_share=0.02)
    lines = list(generate(300, 150, 21, datetime(2025, 7, 1, tzinfo=UTC), profile=profile))
    path.write_bytes(b"\n".join([*lines, *EXTRA_BAD]) + b"\n")
    return len(EXTRA_BAD)


def consume_to_end(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every record of ``topic``, read with librdkafka from the earliest offset to
    the end offsets taken at the start (a fresh group, nothing committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"schema-check-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            positions = consumer.position([TopicPartition(topic, p) for p in partitions])
            if all(tp.offset >= ends[tp.partition] for tp in positions):
                return records
            assert time.monotonic() < deadline, f"{topic} not read to {ends} in {timeout}s"
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            records.append(message)
    finally:
        consumer.close()


def invalid(name: str, values: list[bytes]) -> list[str]:
    check = validator(name)
    found = []
    for value in values:
        errors = problems(check, json.loads(value))
        if errors:
            found.append(f"{value[:200]!r}: {'; '.join(errors)}")
    return found


@pytest.mark.slow
def test_alerts_and_dead_letters_validate_against_their_published_schemas(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    extra = write_history(path)
    with new_broker(tmp_path) as broker:
        result = replay(
            path,
            parse_time(END),
            partitions=2,
            workers=1,
            broker_url=broker,
            base=Settings(),
            workdir=tmp_path,
        )
        alerts = consume_to_end(broker.bootstrap, topics.ALERTS)
        dead = asyncio.run(read_all(broker.bootstrap, topics.DEADLETTER))
    alert_values = [message.value() for message in alerts]
    dead_values = [record.value for record in dead]
    assert len(alert_values) == len(result.alerts) > 0
    # Each rejected input has a dead letter (at-least-once: maybe more than one).
    sources = {(d["topic"], d["partition"], d["offset"]) for d in map(json.loads, dead_values)}
    assert len(sources) == result.events["deadletter"] >= extra + 20
    assert invalid("alert.json", alert_values) == []
    assert invalid("deadletter.json", dead_values) == []


def test_the_check_fails_on_a_record_off_the_schema() -> None:
    # The assertions above can fail: a dead letter without its reason, or with a
    # timestamp that has no offset, is reported.
    letter = {
        "detail": "x",
        "topic": "t",
        "partition": 0,
        "offset": 1,
        "timestamp_ms": None,
        "key_b64": None,
        "value_b64": "",
        "size": 0,
        "received_at": "2025-01-01T00:00:00Z",
    }
    assert invalid("deadletter.json", [json.dumps(letter).encode()])
    assert (
        invalid("deadletter.json", [json.dumps({**letter, "reason": "too_large"}).encode()]) == []
    )
    stamp = {**letter, "reason": "too_large", "received_at": "2025-01-01T00:00:00"}
    assert invalid("deadletter.json", [json.dumps(stamp).encode()])
