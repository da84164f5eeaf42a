"""The customer agent's batch logic run in-process: a reference without Kafka.

``CustomerBatch`` with its real decoder, lifecycle, period engine and metrics; a
dict for the table and lists for the output topics; the consumer's end offsets
from the input itself, as if every record were in the log before the first read.
Tests use it to read one input in many orders, and as the undisturbed run that
chaos tests compare the alerts of real, disturbed workers with.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

from agents.customers import CustomerBatch
from retention.alerts import Lifecycle
from retention.risk import load_risk_config
from retention.state import CustomerState, decode_state
from retention.timeutil import Micros, from_micros
from schemas.decode import EventDecoder
from schemas.events import ClockTick
from streams import topics
from streams.generator import write_history
from streams.inputs import Record, read_events
from streams.metrics import PipelineMetrics
from streams.partitions import is_customer_key
from streams.settings import Settings


class Sent:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def send_soon(self, key: bytes | None = None, value: bytes = b"", partition: int = 0) -> None:
        self.values.append(value)


class Received:
    """What Faust hands the agent: an event whose ``message`` is the Kafka record."""

    def __init__(self, message: SimpleNamespace) -> None:
        self.message = message


class Run:
    """One partition's worth of input, read in the order and batches given."""

    def __init__(self, records: list[Record], as_of: Micros) -> None:
        self.as_of = as_of
        config = Settings()
        self.table: dict[bytes, bytes] = {}
        ends: dict[str, int] = defaultdict(int)
        for record in records:
            ends[record.topic] += 1
        app = SimpleNamespace(
            settings=config,
            customers=self.table,
            decoder=EventDecoder(config.max_event_bytes),
            metrics=PipelineMetrics(lambda: [], lambda: []),
            deadletter_topic=Sent(),
            alerts_topic=Sent(),
            lifecycle=Lifecycle(load_risk_config(None), None, config.window),
            redis_sink=None,
            # Every record is in the log before the first read, as in a replay.
            consumer=SimpleNamespace(highwater=lambda tp: ends.get(tp.topic, 0)),
        )
        self.app = app
        self.batch = CustomerBatch(app)  # type: ignore[arg-type]
        self.offsets: dict[str, int] = defaultdict(int)
        self.lateness = config.lateness

    def message(self, topic: str, key: bytes | None, value: bytes) -> Received:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        return Received(
            SimpleNamespace(
                topic=topic, partition=0, offset=offset, key=key, value=value, timestamp=None
            )
        )

    def feed(self, records: list[Record], batch_sizes: list[int], rng: random.Random) -> None:
        messages = [self.message(r.topic, r.key, r.value) for r in records]
        at = 0
        while at < len(messages):
            size = rng.choice(batch_sizes)
            self.batch.process(messages[at : at + size])
            at += size
        tick = ClockTick(time=from_micros(self.as_of + self.lateness), source="test")
        self.batch.process([self.message(topics.CLOCK, None, msgspec.json.encode(tick))])

    def alerts(self) -> list[tuple[Any, ...]]:
        found = []
        for value in self.app.alerts_topic.values:
            a = json.loads(value)
            found.append((a["customer_id"], a["sequence"], a["status"], a["tier"], a["at"]))
        return sorted(found)

    def alert_records(self) -> list[dict[str, Any]]:
        return [json.loads(value) for value in self.app.alerts_topic.values]

    def customers(self) -> dict[str, CustomerState]:
        return {
            key.decode(): decode_state(value)
            for key, value in self.table.items()
            if is_customer_key(key)
        }


def generated_history(
    folder: Path, customers: int, days: int, seed: int, as_of: Micros
) -> list[Record]:
    """A generated history's records dated before ``as_of`` (and the undated ones), in
    the order of its file."""
    path = folder / "history.jsonl"
    write_history(path, customers, days, seed, from_micros(as_of))
    return [r for r in read_events(path, "jsonl") if r.occurred_at is None or r.occurred_at < as_of]
