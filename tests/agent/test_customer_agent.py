"""The customer agent under Faust's test context (no broker)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from faust.types import Message

from processor.partition import PartitionState, decode_partition
from retention.state import CustomerState, decode_state
from streams import topics
from streams.app import ChurnwatchApp, create_app
from streams.partitions import partition_state_key
from streams.settings import Settings


def event(type_: str, event_id: str, customer: str = "c1", **fields: Any) -> bytes:
    body = {
        "type": type_,
        "event_id": event_id,
        "customer_id": customer,
        "occurred_at": fields.pop("occurred_at", "2024-01-01T00:00:00Z"),
        **fields,
    }
    return json.dumps(body).encode()


@dataclass
class Harness:
    app: ChurnwatchApp
    channel: Any
    dead: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    changelog: list[tuple[int | None, bytes]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = b"c1",
        partition: int = 0,
        offset: int | None = None,
    ) -> None:
        if offset is None:
            offset = self.offsets.get((topic, partition), -1) + 1
        self.offsets[topic, partition] = max(offset, self.offsets.get((topic, partition), -1))
        message = Message(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp=time.time(),
            timestamp_type=0,
            headers=None,
            key=key,
            value=value,
            checksum=b"",
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value),
            generation_id=self.app.consumer_generation_id,
        )
        await self.channel.put(await self.channel.decode(message))

    async def settle(self) -> None:
        await asyncio.sleep(0.1)

    def customer(self, customer_id: str) -> CustomerState:
        return decode_state(self.app.customers[customer_id.encode()])

    def partition(self, number: int = 0) -> PartitionState:
        return decode_partition(self.app.customers[partition_state_key(number)])

    def counter(self, name: str, **labels: str) -> float:
        value = self.app.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    app = create_app(Settings(store="memory://", clock="off", batch_within=0.01, batch_max=50))
    app.finalize()
    app.flow_control.resume()
    agent = app.agents["customers"]
    async with agent.test_context() as ctx:
        h = Harness(app=app, channel=ctx.stream().channel)

        def dead_letter(*, key: bytes | None, value: bytes, partition: int) -> None:
            h.dead.append({**msgspec.json.decode(value), "_partition": partition})

        monkeypatch.setattr(app.deadletter_topic, "send_soon", dead_letter)

        def alert(*, key: bytes | None, value: bytes, partition: int) -> None:
            h.alerts.append({**msgspec.json.decode(value), "_partition": partition})

        monkeypatch.setattr(app.alerts_topic, "send_soon", alert)
        original = app.customers.send_changelog

        def spy(partition: int | None, key: Any, value: Any, *args: Any, **kw: Any) -> Any:
            h.changelog.append((partition, key))
            return original(partition, key, value, *args, **kw)

        monkeypatch.setattr(app.customers, "send_changelog", spy)
        yield h


async def test_events_of_every_kind_build_state(harness: Harness) -> None:
    await harness.send(topics.SIGNUPS, event("signup", "s1", segment="smb", monthly_fee=20))
    await harness.send(topics.PURCHASES, event("purchase", "p1", amount=12.5))
    await harness.send(
        topics.PURCHASES, event("purchase", "p2", amount=7.5, occurred_at="2024-01-03T09:00:00Z")
    )
    await harness.send(topics.FEEDBACK, event("feedback", "f1", kind="nps", score=3))
    await harness.send(
        topics.CANCELLATIONS, event("cancellation", "x1", occurred_at="2024-01-05T00:00:00Z")
    )
    await harness.settle()
    state = harness.customer("c1")
    assert state.segment == "smb" and state.purchases == 2 and state.spend == 20_000_000
    assert [d.day for d in state.days] == [19723, 19725]
    assert state.nps is not None and state.nps.value == 3
    assert state.cancellations == 1 and not state.subscribed
    part = harness.partition(0)
    assert (part.consumed, part.valid, part.deadletter, part.customers) == (5, 5, 0, 1)
    assert harness.counter("churnwatch_events_consumed_total", type="purchase") == 2
    assert harness.counter("churnwatch_events_valid_total", type="feedback") == 1


async def test_bad_input_is_dead_lettered_with_reason_and_bytes(harness: Harness) -> None:
    bad = [
        (topics.PURCHASES, b"{not json", b"c1", "malformed_json"),
        (topics.PURCHASES, event("purchase", "p", amount=-5), b"c1", "invalid_field"),
        (topics.PURCHASES, event("purchase", "p", amount="5"), b"c1", "invalid_field"),
        (topics.PURCHASES, event("refund", "p", amount=5), b"c1", "wrong_type"),
        (topics.SIGNUPS, b"\xff\xfe\x00", None, "not_utf8"),
        (topics.FEEDBACK, event("feedback", "f", kind="nps"), b"c1", "invalid_field"),
        (topics.PURCHASES, event("purchase", "p", amount=1), b"other", "key_mismatch"),
        (topics.PURCHASES, b"x" * (70 * 1024), b"c1", "too_large"),
        (
            topics.PURCHASES,
            event("purchase", "p", amount=1, occurred_at="2999-01-01T00:00:00Z"),
            b"c1",
            "future_time",
        ),
        (topics.CLOCK, b'{"time": "tomorrow"}', None, "invalid_field"),
    ]
    for topic, value, key, _ in bad:
        await harness.send(topic, value, key=key)
    await harness.send(topics.PURCHASES, event("purchase", "good", amount=3))
    await harness.settle()
    assert [d["reason"] for d in harness.dead] == [reason for *_, reason in bad]
    for record, (topic, value, _, _) in zip(harness.dead, bad, strict=True):
        assert base64.b64decode(record["value_b64"]) == value
        assert record["topic"] == topic and record["detail"]
    part = harness.partition(0)
    assert part.deadletter == len(bad)
    assert part.consumed == len(bad) - 1 + 1  # the bad tick is not an input event
    assert part.valid == 1 and harness.customer("c1").purchases == 1
    assert harness.counter("churnwatch_events_rejected_total", reason="not_utf8") == 1


async def test_duplicates_are_counted_and_redeliveries_are_not(harness: Harness) -> None:
    value = event("purchase", "p1", amount=10)
    await harness.send(topics.PURCHASES, value, offset=0)
    await harness.send(topics.PURCHASES, value, offset=1)  # a duplicate event
    await harness.settle()
    await harness.send(topics.PURCHASES, value, offset=0)  # a redelivered message
    await harness.send(topics.PURCHASES, value, offset=1)
    await harness.settle()
    part = harness.partition(0)
    assert (part.consumed, part.valid, part.duplicates) == (2, 1, 1)
    assert harness.customer("c1").purchases == 1
    assert harness.counter("churnwatch_events_duplicate_total", type="purchase") == 1


async def test_writes_go_to_the_changelog_partition_of_the_input(harness: Harness) -> None:
    await harness.send(topics.PURCHASES, event("purchase", "a", "c1", amount=1), b"c1", 2)
    await harness.send(topics.PURCHASES, event("purchase", "b", "c9", amount=1), b"c9", 3)
    await harness.settle()
    # Customer states, partition records and due-time buckets (b"\x00due/<p>/<day>")
    # all go to the changelog partition of the input partition they belong to.
    assert {(p, k) for p, k in harness.changelog if not k.startswith(b"\x00due/")} == {
        (2, partition_state_key(2)),
        (2, b"c1"),
        (3, partition_state_key(3)),
        (3, b"c9"),
    }
    buckets = {(p, k) for p, k in harness.changelog if k.startswith(b"\x00due/")}
    assert buckets and all(k.startswith(b"\x00due/%d/" % p) for p, k in buckets)
    # The partition record is written before the customers of its batch.
    order = [key for partition, key in harness.changelog if partition == 2]
    assert order.index(partition_state_key(2)) < order.index(b"c1")


async def test_clock_tick_moves_the_watermark_and_late_events_are_counted(
    harness: Harness,
) -> None:
    await harness.send(topics.CLOCK, b'{"time": "2024-02-01T00:00:00Z"}', key=None)
    await harness.send(topics.PURCHASES, event("purchase", "old", amount=1))  # 2024-01-01
    await harness.settle()
    part = harness.partition(0)
    assert part.watermark is not None and part.ticks == 1 and part.late == 1
    assert harness.customer("c1").purchases == 1  # late events still update the customer
    assert harness.counter("churnwatch_events_late_total", type="purchase") == 1


async def test_many_events_in_one_batch_write_each_customer_once(harness: Harness) -> None:
    for i in range(40):
        customer = f"c{i % 4}"
        await harness.send(
            topics.PURCHASES, event("purchase", f"p{i}", customer, amount=1), customer.encode()
        )
    await harness.settle()
    customer_writes = [key for _, key in harness.changelog if not key.startswith(b"\x00")]
    assert sorted(set(customer_writes)) == [b"c0", b"c1", b"c2", b"c3"]
    assert len(customer_writes) < 40
    assert sum(harness.customer(f"c{i}").purchases for i in range(4)) == 40


def day(n: int) -> str:
    return (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=n)).isoformat()


async def test_a_customer_who_stops_buying_is_alerted_in_event_time(harness: Harness) -> None:
    for n in range(8):  # weekly purchases, then nothing
        await harness.send(
            topics.PURCHASES, event("purchase", f"w{n}", amount=30, occurred_at=day(7 * n))
        )
    await harness.send(topics.CLOCK, b'{"time": "%s"}' % day(50).encode(), key=None)
    await harness.settle()
    assert harness.alerts == []  # a regular buyer, a week after their last purchase
    assert harness.partition().tiers == {"low": 1}
    tick = b'{"time": "%s"}' % day(300).encode()
    await harness.send(topics.CLOCK, tick, key=None)
    await harness.settle()
    statuses = [a["status"] for a in harness.alerts]
    # With the calibrated defaults a steady buyer who stops may lapse before the
    # score reaches the alerting tier: then the one alert is "churned".
    assert statuses[-1] == "churned" and set(statuses[:-1]) <= {"firing", "escalated"}
    assert [a["sequence"] for a in harness.alerts] == list(range(1, len(statuses) + 1))
    assert len({a["dedup_key"] for a in harness.alerts}) == 1
    first = harness.alerts[0]
    # Fired when the risk crossed the cut, in event time, not when the tick came.
    assert day(49) < first["starts_at"] < day(200) and first["source"]["topic"] == topics.CLOCK
    assert {r["code"] for r in first["reasons"]} >= {"overdue"}
    assert all(r["value"] >= r["threshold"] for r in first["reasons"] if r["code"] == "overdue")
    churned = harness.alerts[-1]
    assert churned["at"] == day(49 + 90).replace("+00:00", "Z")  # the 90-day window ends
    assert {"lapsed", "overdue"} <= {r["code"] for r in churned["reasons"]}
    assert harness.counter("churnwatch_alerts_total", status="churned", tier=churned["tier"]) == 1
    assert harness.counter("churnwatch_alert_reasons_total", status="churned", reason="lapsed")
    # A redelivered tick changes nothing.
    count = len(harness.alerts)
    await harness.send(topics.CLOCK, tick, key=None, offset=1)
    await harness.settle()
    assert len(harness.alerts) == count
    # The customer comes back: the episode is resolved.
    await harness.send(topics.PURCHASES, event("purchase", "back", amount=30, occurred_at=day(301)))
    await harness.settle()
    back = harness.alerts[-1]
    assert back["status"] == "resolved" and back["dedup_key"] == first["dedup_key"]
    assert back["source"] == {
        "topic": topics.PURCHASES,
        "partition": 0,
        "offset": 8,
        "event_id": "back",
    }
    assert harness.customer("c1").risk is not None
