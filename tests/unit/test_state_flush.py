"""The state is written once per batch: a customer touched by many events between
two flushes is written once, and the partition record advances with it
(processor/commit.py), whatever the number of events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from processor.testing import Message, Received
from retention.timeutil import parse_time
from schemas.events import Purchase, Signup
from streams import topics
from streams.inputs import Record
from tests.inprocess import Run

START = datetime(2025, 1, 1, tzinfo=UTC)


def _events() -> list[Received]:
    signup = Signup(event_id="s1", customer_id="c1", occurred_at=START, plan="basic")
    messages = [Received(Message(topics.SIGNUPS, 0, 0, b"c1", msgspec.json.encode(signup)))]
    for n in range(10):
        purchase = Purchase(
            event_id=f"p{n}", customer_id="c1", occurred_at=START + timedelta(days=n), amount=5.0
        )
        value = msgspec.json.encode(purchase)
        messages.append(Received(Message(topics.PURCHASES, 0, n, b"c1", value)))
    return messages


def _run() -> Run:
    return Run(list[Record](), parse_time("2025-02-01T00:00:00Z"))


def _written(run: Run) -> tuple[float, float]:
    metrics = run.parts.metrics
    return metrics.state_updates._value.get(), metrics.state_writes._value.get()


def test_a_customer_touched_many_times_in_one_batch_is_written_once() -> None:
    run = _run()
    run.batch.process(_events())
    assert _written(run) == (11, 1)
    state = run.customers()["c1"]
    assert state.purchases == 10
    assert run.batch.partitions.load(0).offsets == {topics.SIGNUPS: 0, topics.PURCHASES: 9}


def test_one_event_a_batch_writes_the_customer_each_time() -> None:
    run = _run()
    for event in _events():
        run.batch.process([event])
    assert _written(run) == (11, 11)
    assert run.customers()["c1"].purchases == 10
