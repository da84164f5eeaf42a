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
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.batch import CustomerBatch
from processor.partition import decode_partition, encode_partition
from retention.timeutil import parse_time
from streams import topics
from streams.inputs import Record
from streams.partitions import OUTBOX, partition_state_key
from tests.inprocess import Run, Sent, generated_history

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
    return generated_history(tmp_path_factory.mktemp("alignment"), 250, 150, 17, AS_OF)


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
    assert not run.alerts_sent.values


def test_a_waiting_event_redelivered_as_it_is_released_counts_once(
    history: list[Record], reference: Run
) -> None:
    """After a rebalance or a restart the consumer reads again from the committed
    offset, so a message that waited when first read can come again in the very
    batch that releases it: applied and counted once, not once valid and once as a
    duplicate of itself (tests/integration/test_chaos.py saw ~50 such per run)."""
    ordered = sorted(history, key=lambda r: r.occurred_at or -1)
    run = Run(history, AS_OF)
    purchases = [
        run.message(r.topic, r.key, r.value) for r in ordered if r.topic == topics.PURCHASES
    ]
    others = [run.message(r.topic, r.key, r.value) for r in ordered if r.topic != topics.PURCHASES]
    run.batch.process(purchases[:60])  # other topics unread: these wait
    assert decode_partition(run.table[partition_state_key(0)]).pending > 0
    run.batch.process(purchases[:60] + purchases[60:] + others)  # redelivered, then the rest
    run.feed([], [1], random.Random(0))  # the final tick
    state = decode_partition(run.table[partition_state_key(0)])
    expected = decode_partition(reference.table[partition_state_key(0)])
    assert (state.consumed, state.valid, state.duplicates, state.pending) == (
        expected.consumed,
        expected.valid,
        expected.duplicates,
        0,
    )
    assert run.customers() == reference.customers()
    assert run.alerts() == reference.alerts()


class _NoScan(dict[bytes, bytes]):
    def items(self) -> Any:
        raise AssertionError("read every key of the table")


class _Unacknowledged:
    """A send future the broker never completes (a worker killed before delivery)."""

    def done(self) -> bool:
        return False


def test_alerts_not_acknowledged_are_sent_again_by_the_next_owner(
    history: list[Record], reference: Run
) -> None:
    """Alerts and the changelog are different topics: a worker killed after a
    customer's state was stored may not have delivered the alert it raised, and the
    redelivered event raises nothing (its state has it). Every alert stays in the
    table's outbox until acknowledged; the next owner of the partition sends them."""
    ordered = sorted(history, key=lambda r: r.occurred_at or -1)
    run = Run(history, AS_OF)
    sent = run.alerts_sent.values
    run.alerts_sent.send_soon = lambda key, value, partition: (  # type: ignore[method-assign]
        sent.append(value) or _Unacknowledged()
    )
    run.feed(ordered, [100], random.Random(0))
    assert run.alerts() == reference.alerts()
    outbox = [key for key in run.table if key.startswith(OUTBOX)]
    assert 1 < len(outbox) < len(sent)  # a record per batch with alerts, none acknowledged

    again = Sent()
    successor = CustomerBatch(run.parts)
    successor.outbox.alerts = again
    assert successor.take_over([0]) == len(sent)
    assert sorted(again.values) == sorted(sent)
    assert successor.take_over([0]) == 0  # still owned after another rebalance: not again

    # The partition record lists the outbox, so a new owner reads those keys alone;
    # a record written before that list existed makes it look at every key.
    record = decode_partition(run.table[partition_state_key(0)])
    assert record.outbox is not None and sorted(record.outbox) == sorted(outbox)
    count = len(sent)
    run.parts.table = _NoScan(run.table)
    assert CustomerBatch(run.parts).take_over([0]) == count  # type: ignore[arg-type]
    record.outbox = None
    run.parts.table = dict(run.table) | {partition_state_key(0): encode_partition(record)}
    assert CustomerBatch(run.parts).take_over([0]) == count  # type: ignore[arg-type]

    acknowledged = Run(history, AS_OF)  # send_soon returns None: delivered at once
    acknowledged.feed(ordered, [100], random.Random(0))
    outbox = [key for key in acknowledged.table if key.startswith(OUTBOX)]
    assert len(outbox) <= 1  # the last batch's alerts only, if it raised any
