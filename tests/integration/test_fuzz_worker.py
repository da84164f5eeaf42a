"""A real worker fed a generated history with fuzzed garbage on every consumed topic.

Garbage goes to the four input topics and the clock topic, interleaved with a valid
generated history: keyless messages, empty values and tombstones, values over 1 MB,
invalid UTF-8, random bytes, damaged copies of valid events, deep nesting, extreme
numbers, control characters in ids, timestamps without offset or out of range,
events from the future and bad ticks. Once the worker has committed everything:

- it is still alive;
- every rejected record is on ``churnwatch.deadletter``, found by its (topic,
  partition, offset), with the expected reason, its original key and bytes; no
  accepted record is there;
- consumed = valid + dead-lettered + duplicates, from the partition records in the
  changelog (ticks, which are not input events, apart), and the worker's rejection
  metric agrees reason by reason;
- the valid customers' state equals the valid records folded alone, offline.

Which records must be rejected, and why, is decided per record by the decoder (fuzzed
on its own in ``tests/unit/test_fuzz_decoder.py``) and the worker's one extra rule:
an event more than a day ahead of the wall clock is ``future_time``. A dedicated
broker is used because the input topic names are fixed: garbage left on the session
broker would reach the next test that consumes them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from retention.state import CustomerState
from retention.timeutil import to_micros
from schemas.deadletter import DEADLETTER_MAX_BYTES
from streams import topics
from streams.generator import write_history
from streams.history import fold_file
from streams.inputs import read_events
from streams.kafka_admin import create_topics, read_all, wait_for_zero_lag
from streams.replay import collect, send_ticks, wait_settled
from streams.settings import Settings
from streams.workers import WorkerProcess, local_settings
from tests import reliability
from tests.brokers import new_broker
from tests.reasons import reason_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 2
SEED = 6
END = datetime(2025, 7, 1, tzinfo=UTC)
BIG = 1_200_000  # bytes: over 1 MB


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None  # None: the producer's partitioner decides
    offset: int = -1


def garbage(rng: random.Random, valid: list[bytes]) -> list[Sent]:
    """Hand-picked bad records, then random ones; on every consumed topic."""

    def event(**fields: object) -> bytes:
        body: dict[str, object] = {"type": "purchase", "event_id": "g", "customer_id": "g1"}
        body |= {"occurred_at": "2025-01-01T00:00:00Z", "amount": 1.5}
        return json.dumps({**body, **fields}).encode()

    def numeric(token: str) -> bytes:
        return event()[:-1] + b', "amount": ' + token.encode() + b"}"

    ahead = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    items = [
        Sent(topics.PURCHASES, None, event()),  # keyless
        Sent(topics.SIGNUPS, None, b""),
        Sent(topics.PURCHASES, b"g1", b""),
        Sent(topics.CANCELLATIONS, b"g1", None),  # a tombstone
        Sent(topics.FEEDBACK, b"\x00partition/1", None),  # (key and value may not both be null)
        Sent(topics.PURCHASES, b"g1", event(pad="x" * BIG)),
        Sent(topics.SIGNUPS, b"g1", b"\xff" * BIG),
        Sent(topics.PURCHASES, b"g1", b"\xc3\x28" + event()),  # invalid UTF-8
        Sent(topics.PURCHASES, b"g1", event(note="\ud800").replace(b"\\ud800", b"\xed\xa0\x80")),
        Sent(topics.PURCHASES, b"g1", b'{"a":' * 3000 + b"1" + b"}" * 3000),
        Sent(topics.PURCHASES, b"g1", b"[" * 60_000),
        Sent(topics.PURCHASES, b"g1", numeric("1e400")),
        Sent(topics.PURCHASES, b"g1", numeric("NaN")),
        Sent(topics.PURCHASES, b"g1", numeric("Infinity")),
        Sent(topics.PURCHASES, b"g1", numeric("-0.0")),  # valid: zero
        Sent(topics.PURCHASES, b"g1", numeric("9" * 5000)),
        Sent(topics.PURCHASES, b"g1", event(amount="12")),
        Sent(topics.PURCHASES, b"g1", event(amount=[1])),
        Sent(topics.PURCHASES, b"g1", event(type="refund")),
        Sent(topics.PURCHASES, b"g1", event(occurred_at="2025-01-01T00:00:00")),
        Sent(topics.PURCHASES, b"g1", event(occurred_at="0001-01-01T00:00:00+05:00")),
        Sent(topics.PURCHASES, b"g1", event(occurred_at=ahead)),
        Sent(topics.PURCHASES, b"g1\x1b[2J", event(customer_id="g1\x1b[2J")),
        Sent(topics.PURCHASES, b"\x00partition/0", event(customer_id="\x00partition/0")),
        Sent(topics.PURCHASES, "\u202eg1".encode(), event(customer_id="\u202eg1")),
        Sent(topics.PURCHASES, b"g" * 129, event(customer_id="g" * 129)),
        Sent(topics.FEEDBACK, b"g1", event(type="feedback", kind="nps", score=11)),
        Sent(topics.FEEDBACK, b"g1", event(type="feedback", kind="nps", score=True)),
        Sent(topics.CLOCK, None, b'{"time": "9999-12-31T00:00:00Z"}', partition=0),
        Sent(topics.CLOCK, None, b'{"time": "0001-01-01T00:00:00Z"}', partition=1),
        Sent(topics.CLOCK, None, b'{"time": "2025-01-01T00:00:00"}', partition=1),
        Sent(topics.CLOCK, None, b"", partition=0),
        Sent(topics.CLOCK, b"t", None, partition=1),
    ]
    inputs = list(topics.INPUT_TOPICS)
    for _ in range(400):
        topic = rng.choice([*inputs, topics.CLOCK])
        key = rng.choice([None, b"g1", rng.randbytes(rng.randint(0, 20))])
        choice = rng.randrange(4)
        if choice == 0:
            value = rng.randbytes(rng.randint(0, 300))
        elif choice == 3:  # a valid record under another key, or none
            value = rng.choice(valid)
        elif choice == 1:  # a valid record, damaged
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            value = bytes(data)
        else:  # a valid record cut short
            line = rng.choice(valid)
            value = line[: rng.randrange(len(line))]
        partition = rng.randrange(PARTITIONS) if topic == topics.CLOCK or key is None else None
        items.append(Sent(topic, key, value, partition))
    return items


def expected_reason(item: Sent, now: datetime) -> str | None:
    """The reason ``item`` must be dead-lettered for, or None if it must be applied."""
    return reason_for(item.topic, item.key, item.value, now)


async def publish(bootstrap: str, items: list[Sent]) -> None:
    """Send in order; each item learns its partition and offset."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024, linger_ms=5, acks="all"
    )
    await producer.start()
    try:
        futures = [
            await producer.send(item.topic, item.value, key=item.key, partition=item.partition)
            for item in items
        ]
        for item, future in zip(items, futures, strict=True):
            metadata = await future
            item.partition, item.offset = metadata.partition, metadata.offset
    finally:
        await producer.stop()


def test_a_worker_dead_letters_fuzzed_garbage_and_keeps_going(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    history = tmp_path / "history.jsonl"
    write_history(history, customers=250, days=180, seed=SEED, end=END)
    records = list(read_events(history, "jsonl"))
    valid_lines = [r.value for r in records if r.routable]
    bad = garbage(rng, valid_lines)
    items = [Sent(r.topic, r.key, r.value) for r in records]
    for item in bad:  # interleaved, in a seeded order
        items.insert(rng.randrange(len(items) + 1), item)
    started = datetime.now(UTC)
    reasons = [expected_reason(item, started) for item in items]
    print(f"seed {SEED}: {len(records)} generated records, {len(bad)} garbage records")

    with new_broker(tmp_path) as broker:
        bootstrap = broker.bootstrap
        # Values over 1 MiB exist only on topics that allow them (Kafka's default
        # max.message.bytes is 1 MiB): some producers' topics do, so the worker must
        # cope, and its own dead letters must still fit the default on theirs.
        large = {"max.message.bytes": str(2 * BIG)}
        asyncio.run(
            create_topics(
                bootstrap,
                dict.fromkeys(topics.ALL_TOPICS, PARTITIONS),
                config=dict.fromkeys(topics.CONSUMED_TOPICS, large),
            )
        )
        settings = local_settings(Settings(), broker, PARTITIONS, tmp_path)
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.start()
        try:
            wait_settled([worker], PARTITIONS)
            first = min(r.occurred_at for r in records if r.occurred_at is not None)
            asyncio.run(send_ticks(bootstrap, PARTITIONS, first))
            asyncio.run(publish(bootstrap, items))

            def alive(_: int) -> None:
                assert worker.alive(), worker.log_tail()
                # A crashed agent leaves the process up but idle: fail now, not at timeout.
                log = worker.log_path.read_text(errors="replace")
                assert "Crashed reason" not in log, worker.log_tail(60)

            asyncio.run(
                wait_for_zero_lag(
                    bootstrap,
                    settings.app_id,
                    list(topics.CONSUMED_TOPICS),
                    timeout=90,
                    on_progress=alive,
                )
            )
            assert worker.alive(), worker.log_tail()
            rejected_metric = {
                reason: worker.metric("churnwatch_events_rejected_total", reason=reason)
                for reason in {r for r in reasons if r is not None}
            }
            customers, partitions = asyncio.run(collect(bootstrap, settings.app_id))
            dead = asyncio.run(read_all(bootstrap, topics.DEADLETTER))
        finally:
            worker.stop()
    assert worker.process is not None and worker.process.returncode == 0, worker.log_tail()

    # Every rejected record, and only those, is on the dead-letter topic. Records are
    # re-sent after a redelivery: they are told apart by their source coordinates.
    letters = {}
    record_bytes = {}
    for record in dead:
        letter = msgspec.json.decode(record.value)
        where = letter["topic"], letter["partition"], letter["offset"]
        letters[where] = (record.key, letter)
        record_bytes[where] = record.value
    expected = {
        (item.topic, item.partition, item.offset): (item, reason)
        for item, reason in zip(items, reasons, strict=True)
        if reason is not None
    }
    assert set(letters) == set(expected)
    for where, (item, reason) in expected.items():
        key, letter = letters[where]
        assert letter["reason"] == reason, (where, letter["detail"])
        assert letter["detail"].isprintable(), letter["detail"]
        value = item.value or b""
        assert letter["size"] == len(value)
        if len(value) > DEADLETTER_MAX_BYTES:  # a prefix, and the hash of the whole
            assert letter["truncated"] is True
            assert base64.b64decode(letter["value_b64"]) == value[:DEADLETTER_MAX_BYTES]
            assert letter["sha256"] == hashlib.sha256(value).hexdigest()
        else:
            assert letter["truncated"] is False and letter["sha256"] is None
            assert base64.b64decode(letter["value_b64"]) == value
        assert letter["key_b64"] == (
            None if item.key is None else base64.b64encode(item.key).decode()
        )
        assert key == item.key
        assert len(record_bytes[where]) < 1024 * 1024  # fits Kafka's default max.message.bytes
    rejected = Counter(reason for reason in reasons if reason is not None)
    print("dead letters by reason:", dict(sorted(rejected.items())))
    assert rejected["too_large"] >= 2 and rejected["future_time"] >= 1
    assert rejected_metric == {reason: float(n) for reason, n in rejected.items()}

    # The counters add up.
    ticks_sent = sum(1 for item in items if item.topic == topics.CLOCK) + PARTITIONS
    dead_ticks = sum(1 for item, reason in expected.values() if item.topic == topics.CLOCK)
    inputs = sum(1 for item in items if item.topic != topics.CLOCK)
    consumed = sum(p.consumed for p in partitions)
    valid = sum(p.valid for p in partitions)
    duplicates = sum(p.duplicates for p in partitions)
    deadletter = sum(p.deadletter for p in partitions)
    print(f"consumed {consumed} = valid {valid} + dead-lettered {deadletter - dead_ticks}"
          f" + duplicates {duplicates} (and {dead_ticks} dead-lettered ticks)")  # fmt: skip
    reliability.append(
        {
            "test": "fuzz: a live worker fed garbage on every topic",
            "records": len(items),
            "garbage": len(bad),
            "consumed": consumed,
            "valid": valid,
            "duplicates": duplicates,
            "deadletter": deadletter,
            "deadletter_by_reason": dict(sorted(rejected.items())),
            "worker_alive": True,
        }
    )
    assert consumed == inputs
    assert deadletter == sum(rejected.values())
    assert consumed == valid + (deadletter - dead_ticks) + duplicates
    assert sum(p.ticks for p in partitions) + dead_ticks == ticks_sent
    assert duplicates > 0

    # Garbage changed no customer: the state equals the valid records folded alone.
    accepted = tmp_path / "accepted.jsonl"
    accepted.write_bytes(
        b"".join(
            (item.value or b"") + b"\n"
            for item, reason in zip(items, reasons, strict=True)
            if reason is None and item.topic != topics.CLOCK
        )
    )
    alone = fold_file(accepted, "jsonl", to_micros(datetime(2200, 1, 1, tzinfo=UTC)))
    assert alone.rejected == 0 and alone.after_as_of == 0
    assert alone.events == valid and alone.duplicates == duplicates

    def strip(states: dict[str, CustomerState]) -> dict[str, CustomerState]:
        # Risk follows read order across topics (tests/integration/test_generated_history.py).
        return {k: msgspec.structs.replace(v, risk=None) for k, v in states.items()}

    assert strip(customers) == strip(alone.states)
