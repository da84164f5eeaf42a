"""The customer agent's batch logic run in-process: a reference without Kafka.

``CustomerBatch`` on ``processor.testing``'s parts: its real decoder, lifecycle,
period engine and metrics; a dict for the table and lists for the output topics; the
consumer's end offsets from the input itself, as if every record were in the log
before the first read.
Tests use it to read one input in many orders, and as the undisturbed run that
chaos tests compare the alerts of real, disturbed workers with. ``Run.recover`` starts
a run from a changelog's compacted contents instead of an empty table, as a new
owner of the partition does (tests/unit/test_upgrade_changelog.py).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from processor import testing
from processor.batch import CustomerBatch
from processor.partition import decode_partition, resume_offsets
from processor.testing import Message, Received
from processor.testing import Sender as Sent
from retention.state import CustomerState, decode_state
from retention.timeutil import Micros, from_micros
from schemas.events import ClockTick
from streams import topics
from streams.generator import write_history
from streams.inputs import Record, read_events
from streams.partitions import is_customer_key, partition_state_key
from streams.settings import Settings

__all__ = ["Received", "Run", "Sent", "generated_history"]


class Run:
    """One partition's worth of input, read in the order and batches given.

    ``records``: the partition's log, whose end offsets the consumer reports; a run
    that reads only part of it (``read``) has the rest still to come, as a worker
    stopped part way through."""

    def __init__(
        self, records: list[Record], as_of: Micros, config: Settings | None = None
    ) -> None:
        self.as_of = as_of
        config = Settings() if config is None else config
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
        """Read ``records``, then a final clock tick at ``as_of`` plus the lateness."""
        self.read(records, batch_sizes, rng)
        tick = ClockTick(time=from_micros(self.as_of + self.lateness), source="test")
        self.batch.process([self.message(topics.CLOCK, None, msgspec.json.encode(tick))])

    def read(self, records: list[Record], batch_sizes: list[int], rng: random.Random) -> None:
        """Read ``records`` in batches of sizes drawn from ``batch_sizes``, no tick: a
        worker stopped (or killed) after them has read no further."""
        self._process([self.message(r.topic, r.key, r.value) for r in records], batch_sizes, rng)

    def _process(
        self, messages: list[Received], batch_sizes: list[int], rng: random.Random
    ) -> None:
        at = 0
        while at < len(messages):
            size = rng.choice(batch_sizes)
            self.batch.process(messages[at : at + size])
            at += size

    def recover(
        self,
        table: Mapping[bytes, bytes],
        read: list[Record],
        batch_sizes: list[int],
        rng: random.Random,
    ) -> int:
        """Take the partition over as a new owner whose changelog's compacted contents
        are ``table``, written by a worker that read ``read`` (numbered from offset 0
        per topic, as ``read`` and ``feed`` number them) and no further.

        As a recovered worker does: the table is loaded, the outbox sent again
        (``CustomerBatch.take_over``), ``read`` read again from the partition
        record's resume offsets (its last batch is redone), and what ``feed`` or
        ``read`` are given next is numbered on from the end of ``read``, as the log
        goes on. A fresh run only (nothing read yet). Returns how many records the
        outbox sent again.
        """
        if self.offsets:
            raise RuntimeError("recover a fresh run: this one has read input already")
        self.table.clear()  # the same dict as the parts' and the batch's
        self.table.update(table)
        resent = self.batch.take_over([0])
        raw = self.table.get(partition_state_key(0))
        resume = {} if raw is None else resume_offsets(decode_partition(raw))
        messages = [self.message(r.topic, r.key, r.value) for r in read]
        again = [m for m in messages if m.message.offset >= resume.get(m.message.topic, 0)]
        self._process(again, batch_sizes, rng)
        return resent

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
