"""A message read past a gap in its topic's offsets is not applied before the gap.

The partition record holds the last offset applied per topic. A consumer can hand the
agent a later message without the ones before it: Faust acknowledges what its stream
skips during a rebalance, and a stale fetch can come in ahead of a seek (a scale
chaos run read purchases[3] 8597, then 8599, and lost a purchase for good: read
later, 8598 looked like a redelivery). These tests drive the agent's batch logic
with a consumer that loses a message on the way, and hold the end state to a run
that lost nothing.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from pathlib import Path

import pytest

import agents.customers
from retention.partition import decode_partition
from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.generator import write_history
from streams.inputs import Record, read_events
from streams.partitions import partition_state_key
from tests.agent.test_alignment import read_in_chunks
from tests.inprocess import Received, Run

AS_OF = parse_time("2025-07-01T00:00:00Z")
BATCH = 100
STATE = partition_state_key(0)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    path: Path = tmp_path_factory.mktemp("gaps") / "history.jsonl"
    write_history(path, 150, 150, 29, from_micros(AS_OF))
    records = [
        r for r in read_events(path, "jsonl") if r.occurred_at is None or r.occurred_at < AS_OF
    ]
    return read_in_chunks(records, 60, random.Random(3))


class Consumer:
    """One partition's topics read in the order of ``read_in_chunks``, with a position
    per topic that the agent's seeks move; ``lose`` messages are passed over once, as
    a stream that skips a message would."""

    def __init__(self, messages: list[Received], lose: set[tuple[str, int]]) -> None:
        self.logs: dict[str, list[Received]] = defaultdict(list)
        for m in messages:
            self.logs[m.message.topic].append(m)
        self.order = [m.message.topic for m in messages]
        self.position = dict.fromkeys(self.logs, 0)
        self.lose = set(lose)
        self.sought: list[tuple[str, int]] = []

    def next_batch(self, size: int) -> list[Received]:
        out: list[Received] = []
        while len(out) < size:
            topic = self._next_topic()
            if topic is None:
                break
            log = self.logs[topic]
            message = log[self.position[topic]]
            self.position[topic] += 1
            key = (topic, message.message.offset)
            if key in self.lose:
                self.lose.discard(key)
                continue
            out.append(message)
        return out

    def _next_topic(self) -> str | None:
        while self.order:
            topic = self.order.pop(0)
            if self.position[topic] < len(self.logs[topic]):
                return topic
        # The schedule is used up (seeks move positions back): whatever is left.
        return next((t for t, log in self.logs.items() if self.position[t] < len(log)), None)

    def seek(self, topic: str, offset: int) -> None:
        self.sought.append((topic, offset))
        self.position[topic] = offset


def drive(history: list[Record], lose: set[tuple[str, int]]) -> tuple[Run, Consumer]:
    run = Run(history, AS_OF)
    messages = [run.message(r.topic, r.key, r.value) for r in history]
    consumer = Consumer(messages, lose)
    for _ in range(10 * len(messages)):
        batch = consumer.next_batch(BATCH)
        if not batch:
            break
        run.batch.process(batch)
        seeks, run.batch.seeks = run.batch.seeks, {}
        for tp, offset in seeks.items():
            consumer.seek(tp.topic, offset)
    run.feed([], [1], random.Random(0))  # the final tick
    return run, consumer


def figures(run: Run) -> dict[str, int]:
    state = decode_partition(run.table[STATE])
    return {f: getattr(state, f) for f in ("consumed", "valid", "duplicates", "pending")}


@pytest.fixture(scope="module")
def reference(history: list[Record]) -> Run:
    return drive(history, set())[0]


def _purchase(history: list[Record], nth: int) -> tuple[str, int]:
    """The ``nth`` purchase: its offset in the purchases topic."""
    assert sum(r.topic == topics.PURCHASES for r in history) > nth
    return topics.PURCHASES, nth


@pytest.mark.parametrize("nth", [0, 1, 250, 600])
def test_a_message_lost_on_the_way_is_read_again_before_anything_after_it(
    history: list[Record], reference: Run, nth: int, caplog: pytest.LogCaptureFixture
) -> None:
    lost = _purchase(history, nth)
    with caplog.at_level(logging.WARNING, logger="agents.customers"):
        run, consumer = drive(history, {lost})
    if nth == 0:
        # Nothing applied before it: the topic starts wherever its log does, so the
        # first purchase read is taken as the first (its log may have been trimmed).
        assert consumer.sought == []
        assert figures(run)["consumed"] == figures(reference)["consumed"] - 1
        return
    assert figures(run) == figures(reference)
    assert lost in consumer.sought
    assert not any("records skipped" in r.getMessage() for r in caplog.records)
    assert run.customers() == reference.customers()
    assert run.alerts() == reference.alerts()


def test_a_gap_that_stays_is_taken_for_deleted_records(
    history: list[Record],
    reference: Run,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Records deleted by retention are never read again: once GAP_SECONDS of seeking
    back have not filled the gap, what follows it is applied, with a warning."""
    monkeypatch.setattr(agents.customers, "GAP_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING, logger="agents.customers"):
        run, consumer = drive(history, {_purchase(history, 250)})
    assert consumer.sought == []
    assert any("1 records skipped" in r.getMessage() for r in caplog.records)
    assert figures(run)["consumed"] == figures(reference)["consumed"] - 1
