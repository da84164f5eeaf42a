"""The customer agent's batch logic gives the same alerts whatever the read order.

A consumer reads its input topics at different paces; these tests drive
``CustomerBatch`` directly (real decoder, lifecycle, period engine and metrics; a
dict for the table and lists for the output topics) with one generated history
read in many ways: per-topic chunks of random sizes, random batch sizes, the
file's own disorder. Every way must give the same alerts and the same state.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention.partition import decode_partition
from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.generator import write_history
from streams.inputs import Record, read_events
from streams.partitions import partition_state_key
from tests.inprocess import Run

AS_OF = parse_time("2025-07-01T00:00:00Z")


def read_in_chunks(records: list[Record], largest: int, rng: random.Random) -> list[Record]:
    """Topics interleaved at random, each read in order in chunks of 1..largest."""
    by_topic: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_topic[record.topic].append(record)
    position = dict.fromkeys(by_topic, 0)
    out: list[Record] = []
    while True:
        open_topics = [t for t in by_topic if position[t] < len(by_topic[t])]
        if not open_topics:
            return out
        topic = rng.choice(open_topics)
        count = rng.randint(1, largest)
        out += by_topic[topic][position[topic] : position[topic] + count]
        position[topic] += count


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    path: Path = tmp_path_factory.mktemp("alignment") / "history.jsonl"
    write_history(path, 250, 150, 17, from_micros(AS_OF))
    records = [
        r for r in read_events(path, "jsonl") if r.occurred_at is None or r.occurred_at < AS_OF
    ]
    return records


@pytest.fixture(scope="module")
def reference(history: list[Record]) -> Run:
    ordered = sorted(history, key=lambda r: -1 if r.occurred_at is None else r.occurred_at)
    run = Run(history, AS_OF)
    run.feed(ordered, [1], random.Random(0))
    assert len(run.alerts()) > 20
    return run


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**32),
    largest=st.sampled_from([1, 5, 50, 400]),
    batch_sizes=st.sampled_from([[1], [7, 100], [500]]),
    file_order=st.booleans(),
)
def test_read_order_and_batching_change_nothing(
    history: list[Record],
    reference: Run,
    seed: int,
    largest: int,
    batch_sizes: list[int],
    file_order: bool,
) -> None:
    rng = random.Random(seed)
    base = history if file_order else sorted(history, key=lambda r: r.occurred_at or -1)
    run = Run(history, AS_OF)
    run.feed(read_in_chunks(base, largest, rng), batch_sizes, rng)
    assert run.alerts() == reference.alerts()
    assert run.customers() == reference.customers()


def test_events_wait_while_a_topic_has_unread_input(history: list[Record]) -> None:
    """Read the feedback topic to its end first: none of it may be applied (or
    alerted on) while the other topics still have input to read, even after a tick."""
    run = Run(history, AS_OF)
    feedback = [r for r in history if r.topic == topics.FEEDBACK]
    run.feed(feedback, [100], random.Random(1))
    state = decode_partition(run.table[partition_state_key(0)])
    assert state.consumed == len(feedback)
    assert state.pending == state.consumed - state.deadletter > 0
    assert state.valid == 0 and not run.customers()
    assert not run.app.alerts_topic.values
