"""The customer agent's batch logic run in-process: a reference without Kafka.

``CustomerBatch`` on ``processor.testing``'s parts: its real decoder, lifecycle,
period engine and metrics; a dict for the table and lists for the output topics; the
consumer's end offsets from the input itself, as if every record were in the log
before the first read.
Tests use it to read one input in many orders, and as the undisturbed run that
chaos tests compare the alerts of real, disturbed workers with.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec

from processor import testing
from processor.batch import CustomerBatch
from processor.testing import Message, Received
from processor.testing import Sender as Sent
from retention.state import CustomerState, decode_state
from retention.timeutil import Micros, from_micros
from schemas.events import ClockTick
from streams import topics
from streams.generator import write_history
from streams.inputs import Record, read_events
from streams.partitions import is_customer_key
from streams.settings import Settings

__all__ = ["Received", "Run", "Sent", "generated_history"]


class Run:
    """One partition's worth of input, read in the order and batches given."""

    def __init__(self, records: list[Record], as_of: Micros) -> None:
        self.as_of = as_of
        config = Settings()
        self.table: dict[bytes, bytes] = {}
        ends: dict[str, int] = defaultdict(int)
        for record in records:
            ends[record.topic] += 1
        # Every record is in the log before the first read, as in a replay.
        self.consumer = testing.Offsets(lambda tp: ends.get(tp.topic, 0))
        self.parts = testing.parts(config, self.consumer, self.table)
        self.batch = CustomerBatch(self.parts)
        self.offsets: dict[str, int] = defaultdict(int)
        self.lateness = config.lateness

    def message(self, topic: str, key: bytes | None, value: bytes) -> Received:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        return Received(Message(topic, 0, offset, key, value))

    def feed(self, records: list[Record], batch_sizes: list[int], rng: random.Random) -> None:
        messages = [self.message(r.topic, r.key, r.value) for r in records]
        at = 0
        while at < len(messages):
            size = rng.choice(batch_sizes)
            self.batch.process(messages[at : at + size])
            at += size
        tick = ClockTick(time=from_micros(self.as_of + self.lateness), source="test")
        self.batch.process([self.message(topics.CLOCK, None, msgspec.json.encode(tick))])

    @property
    def alerts_sent(self) -> Sent:
        return self.parts.alerts  # type: ignore[return-value]

    @property
    def deadletters_sent(self) -> Sent:
        return self.parts.deadletters  # type: ignore[return-value]

    def alerts(self) -> list[tuple[Any, ...]]:
        found = []
        for value in self.alerts_sent.values:
            a = json.loads(value)
            found.append((a["customer_id"], a["sequence"], a["status"], a["tier"], a["at"]))
        return sorted(found)

    def alert_records(self) -> list[dict[str, Any]]:
        return [json.loads(value) for value in self.alerts_sent.values]

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
