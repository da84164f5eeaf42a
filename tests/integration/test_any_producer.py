"""Any producer: input published by confluent-kafka, with its default partitioner
(CRC32, ``consistent_random``), ends in the same customer state as the same input
published by aiokafka (murmur2), and the events it put on the wrong partitions are
counted; with ``murmur2_random`` none are.

Each run replays one generated history through a real worker on a fresh Apache
Kafka broker (the topic names are fixed), with only the publisher changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest

from retention.timeutil import Micros, from_micros, parse_time
from streams.generator import write_history
from streams.inputs import Record
from streams.produce import PublishStats
from streams.replay import ReplayResult, replay
from streams.routing import home_partition
from streams.settings import Settings
from tests.brokers import KIND

pytestmark = pytest.mark.integration
END = parse_time("2025-05-01T00:00:00Z")
PARTITIONS = 4
Publisher = Callable[..., Coroutine[Any, Any, PublishStats]]
MAX_EVENT_BYTES = Settings().max_event_bytes


class Delivered:
    """Where a confluent-kafka producer put each record, from its delivery reports."""

    def __init__(self) -> None:
        self.misrouted = 0
        self.errors: list[str] = []

    def report(self, error: Any, message: Any) -> None:
        if error is not None:
            self.errors.append(str(error))
            return
        key, value = message.key(), message.value()
        if key is None or value is None or len(value) > MAX_EVENT_BYTES:
            return  # not forwarded: rejected where it is read
        if message.partition() != home_partition(key, PARTITIONS):
            self.misrouted += 1


def confluent_publisher(partitioner: str | None, delivered: Delivered) -> Publisher:
    """``streams.produce.publish`` done with confluent-kafka (librdkafka)."""

    async def publish(
        bootstrap: str,
        records: Iterable[Record],
        *,
        before: Micros | None = None,
        progress: Any = None,
        security: Any = None,
    ) -> PublishStats:
        config: dict[str, Any] = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 10}
        if partitioner is not None:
            config["partitioner"] = partitioner
        producer = confluent_kafka.Producer(config)
        stats = PublishStats()
        started = time.perf_counter()
        for record in records:
            if (
                before is not None
                and record.occurred_at is not None
                and record.occurred_at >= before
            ):
                stats.skipped_as_of += 1
                continue
            while True:
                try:
                    producer.produce(
                        record.topic, record.value, record.key, on_delivery=delivered.report
                    )
                    break
                except BufferError:  # the local queue is full: let it drain
                    producer.poll(0.1)
            producer.poll(0)
            stats.published += 1
            stats.by_topic[record.topic] += 1
        assert producer.flush(60) == 0, "records still unsent after 60 s"
        assert not delivered.errors, delivered.errors[:5]
        stats.seconds = time.perf_counter() - started
        return stats

    return publish


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    write_history(path, 300, 150, 31, from_micros(END))
    return path


def run(history: Path, workdir: Path, publisher: Publisher | None = None) -> ReplayResult:
    extra = {} if publisher is None else {"publisher": publisher}
    return replay(
        history, END, partitions=PARTITIONS, workers=1, embedded=KIND, base=Settings(),
        workdir=workdir, **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def by_aiokafka(history: Path, tmp_path_factory: pytest.TempPathFactory) -> ReplayResult:
    result = run(history, tmp_path_factory.mktemp("aiokafka"))
    assert result.events["forwarded"] == 0
    assert len(result.customers) == 300
    return result


def alert_keys(result: ReplayResult) -> set[tuple[str, int, str, str]]:
    return {(a["dedup_key"], a["sequence"], a["status"], a["tier"]) for a in result.alerts}


def same_outcome(result: ReplayResult, reference: ReplayResult) -> None:
    # Field for field, risk marks included: the forwarded events were applied in
    # event-time order with the rest, as if they had been on the right partition.
    assert result.customers == reference.customers
    assert alert_keys(result) == alert_keys(reference)
    events = dict(result.events)
    assert events.pop("forwarded") == sum(p.received for p in result.partitions)
    assert events == {k: v for k, v in reference.events.items() if k != "forwarded"}
    assert events["consumed"] == events["valid"] + events["deadletter"] + events["duplicates"]
    assert sum(p.pending for p in result.partitions) == 0


def test_confluent_default_partitioner_gives_the_same_state(
    history: Path, by_aiokafka: ReplayResult, tmp_path: Path
) -> None:
    delivered = Delivered()
    result = run(history, tmp_path, confluent_publisher(None, delivered))
    assert delivered.misrouted > result.published.published / 2  # CRC32: most keys
    assert result.events["forwarded"] == delivered.misrouted
    same_outcome(result, by_aiokafka)


def test_confluent_murmur2_random_needs_no_forwarding(
    history: Path, by_aiokafka: ReplayResult, tmp_path: Path
) -> None:
    delivered = Delivered()
    result = run(history, tmp_path, confluent_publisher("murmur2_random", delivered))
    assert delivered.misrouted == 0
    assert result.events["forwarded"] == 0
    same_outcome(result, by_aiokafka)
