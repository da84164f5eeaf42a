"""Input on the wrong partitions: forwarded home, and the same state as if it never was.

``CustomerBatch`` driven directly, as tests/agent/test_alignment.py does, but over
four partitions with a log per topic partition standing in for the broker: what the
agent sends on churnwatch.repartition (forwards, progress) is appended to that
topic's log and read in turn, in random chunks, with the rest. The same history is
partitioned once as aiokafka does (murmur2) and once as confluent-kafka's default
partitioner does (CRC32); everything the workers compute must be the same.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from faust.types import TP

from processor import testing
from processor.batch import CustomerBatch
from processor.partition import PartitionState, decode_partition, encode_partition
from processor.routing import Router
from retention.calendar import Calendar
from retention.state import CustomerState, decode_state
from retention.timeutil import Micros, from_micros, parse_time
from schemas.events import ClockTick
from streams import topics
from streams.inputs import Record
from streams.partitions import is_customer_key, partition_state_key
from streams.report import build_report
from streams.routing import Forward, decode_record, home_partition, is_forward_outbox
from streams.settings import Settings
from streams.web import _routing
from tests.inprocess import Received, Sent, generated_history

AS_OF = parse_time("2025-07-01T00:00:00Z")
PARTITIONS = 4
Partitioner = Callable[[bytes], int]


def murmur2(key: bytes) -> int:
    return home_partition(key, PARTITIONS)


def crc32(key: bytes) -> int:  # librdkafka's consistent_random, for keyed records
    return zlib.crc32(key) % PARTITIONS


class Unacked:
    """A send the broker has not acknowledged (yet)."""

    def done(self) -> bool:
        return False


class Log:
    """The broker: records per topic partition, the repartition topic's as sent."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = defaultdict(list)
        self.acks = True

    def send_soon(self, *, key: bytes | None, value: bytes, partition: int) -> Unacked | None:
        self.records[topics.REPARTITION, partition].append((key, value))
        return None if self.acks else Unacked()

    def highwater(self, tp: Any) -> int:
        return len(self.records.get((tp.topic, tp.partition), ()))


class Cluster:
    """One worker owning every partition of a history published by ``partitioner``."""

    def __init__(
        self, records: list[Record], partitioner: Partitioner, seed: int, acks: bool = True
    ) -> None:
        self.rng = random.Random(seed)
        self.log = Log()
        self.log.acks = acks
        self.table: dict[bytes, bytes] = {}
        self.settings = Settings(partitions=PARTITIONS)
        self.alerts = Sent()
        self.parts = testing.parts(self.settings, testing.Offsets(self.log.highwater), self.table)
        self.parts.alerts = self.alerts
        self.batch = self.new_batch()
        self.read: dict[tuple[str, int], int] = defaultdict(int)
        times = [r.occurred_at for r in records if r.occurred_at is not None]
        self.tick(min(times))  # a replay's first tick, before the events
        for record in sorted(records, key=lambda r: r.occurred_at or -1):
            key = record.key
            partition = self.rng.randrange(PARTITIONS) if key is None else partitioner(key)
            self.log.records[record.topic, partition].append((key, record.value))

    def new_batch(self) -> CustomerBatch:
        router = Router(self.settings, self.log, active=True)
        return CustomerBatch(self.parts, router)

    def tick(self, moment: Micros) -> None:
        value = msgspec.json.encode(ClockTick(time=from_micros(moment), source="test"))
        for partition in range(PARTITIONS):
            self.log.records[topics.CLOCK, partition].append((None, value))

    def messages(self, tp: tuple[str, int], count: int) -> list[Received]:
        start = self.read[tp]
        chunk = self.log.records[tp][start : start + count]
        self.read[tp] = start + len(chunk)
        return [
            Received(testing.Message(tp[0], tp[1], start + n, key, value))
            for n, (key, value) in enumerate(chunk)
        ]

    def drain(self, largest: int = 60) -> None:
        """Read every log to its end, a few topic partitions at a time in chunks."""
        while True:
            unread = [tp for tp, log in self.log.records.items() if self.read[tp] < len(log)]
            if not unread:
                return
            picked = self.rng.sample(unread, min(len(unread), self.rng.randint(1, 4)))
            batch = [m for tp in picked for m in self.messages(tp, self.rng.randint(1, largest))]
            self.batch.process(batch)

    def replay(self) -> Cluster:
        self.drain()
        self.tick(AS_OF + self.settings.lateness)
        self.drain()
        return self

    def partitions(self) -> list[PartitionState]:
        return [decode_partition(self.table[partition_state_key(p)]) for p in range(PARTITIONS)]

    def customers(self) -> dict[str, CustomerState]:
        return {k.decode(): decode_state(v) for k, v in self.table.items() if is_customer_key(k)}

    def alert_keys(self) -> list[tuple[Any, ...]]:
        alerts = [json.loads(value) for value in self.alerts.values]
        return sorted((a["dedup_key"], a["sequence"], a["status"], a["tier"]) for a in alerts)

    def events(self) -> dict[str, int]:
        names = ("consumed", "valid", "deadletter", "duplicates", "late", "pending")
        return {name: sum(getattr(p, name) for p in self.partitions()) for name in names}

    def report(self) -> dict[str, Any]:
        parts = self.partitions()
        return build_report(parts, AS_OF, len(self.customers()), {}, Calendar("month"))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    return generated_history(tmp_path_factory.mktemp("routing"), 160, 150, 23, AS_OF)


@pytest.fixture(scope="module")
def reference(history: list[Record]) -> Cluster:
    run = Cluster(history, murmur2, seed=1).replay()
    assert sum(p.forwarded + p.received for p in run.partitions()) == 0
    assert len(run.alert_keys()) > 20
    return run


@pytest.mark.parametrize("seed", [2, 3])
def test_crc32_partitioned_input_ends_in_the_same_state(
    history: list[Record], reference: Cluster, seed: int
) -> None:
    run = Cluster(history, crc32, seed).replay()
    parts = run.partitions()
    forwarded = sum(p.forwarded for p in parts)
    assert forwarded > len(history) / 2
    assert sum(p.received for p in parts) == forwarded
    # Each customer's state in its home partition, whatever partition its events had.
    for customer, state in run.customers().items():
        assert state == reference.customers()[customer], customer
    assert run.customers().keys() == reference.customers().keys()
    assert run.alert_keys() == reference.alert_keys()
    events = run.events()
    assert events == reference.events()
    assert events["pending"] == 0 and events["late"] == 0
    assert events["consumed"] == events["valid"] + events["deadletter"] + events["duplicates"]
    for part in parts:  # per partition, forwarded events are accounted for
        assert part.consumed + part.received == (
            part.valid + part.deadletter + part.duplicates + part.pending + part.forwarded
        )
    assert run.report() == reference.report()
    misrouted = run.parts.metrics.registry.get_sample_value
    by_topic = {
        t: misrouted("churnwatch_events_misrouted_total", {"topic": t}) for t in topics.INPUT_TOPICS
    }
    assert sum(v or 0 for v in by_topic.values()) == forwarded


def test_forwards_sent_again_change_nothing(history: list[Record]) -> None:
    """A new owner of a source partition sends its outbox again: every forward the
    partition record does not know delivered (here: none was acknowledged). They are
    recognised and dropped."""
    run = Cluster(history, crc32, seed=4, acks=False).replay()
    before = (run.customers(), run.events(), [p.received for p in run.partitions()])
    assert before[1] == Cluster(history, crc32, seed=4).replay().events()
    forwarded = sum(p.forwarded for p in run.partitions())
    successor = run.new_batch()
    assert successor.take_over(range(PARTITIONS)) >= forwarded  # alerts too
    assert any(is_forward_outbox(key) for key in run.table)
    run.batch = successor
    # And every forward again, as a crash between the forwards and the partition
    # record that counted them would have the source's batch redone.
    for partition in range(PARTITIONS):
        log = run.log.records[topics.REPARTITION, partition]
        log.extend([r for r in list(log) if isinstance(decode_record(r[1]), Forward)])
    run.drain()
    assert (run.customers(), run.events(), [p.received for p in run.partitions()]) == before


def test_health_reports_misrouted_events_of_the_partitions_owned() -> None:
    table = {
        partition_state_key(p): encode_partition(
            PartitionState(partition=p, forwarded=10 * p, received=p)
        )
        for p in range(PARTITIONS)
    }
    owned = {TP(topics.CLOCK, 1), TP(topics.CLOCK, 3), TP(topics.PURCHASES, 2)}
    app = SimpleNamespace(assignor=SimpleNamespace(assigned_actives=lambda: owned), customers=table)
    assert _routing(app) == {"misrouted": 40, "received": 4}  # type: ignore[arg-type]
