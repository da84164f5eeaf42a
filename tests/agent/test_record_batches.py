"""The worker's consumer hands the agent's input over as record batches, one Faust
message per fetched run of a topic partition's records (streams/consumer.py), and
acknowledging one acknowledges every offset up to its last record, exactly as
acknowledging each record would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams import topics
from streams.app import create_app
from streams.consumer import BATCH_RECORDS, InlineConsumer, RecordBatch
from streams.settings import Settings

PURCHASES = TP(topics.PURCHASES, 0)
CHANGELOG = TP("churnwatch-customers-changelog", 0)


@pytest.fixture
async def consumer() -> InlineConsumer:
    app = create_app(
        Settings(store="memory://", clock="off", log_level="warn", record_batches=True)
    )
    made = app.consumer  # built, not started: no broker needed
    assert isinstance(made, InlineConsumer)
    assert PURCHASES.topic in made.batched_topics
    return made


def _record(tp: TP, offset: int) -> Any:
    return SimpleNamespace(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        key=b"c%d" % offset,
        value=b"{}",
        timestamp=1_700_000_000_000 + offset,
        timestamp_type=0,
        headers=[],
        checksum=None,
        serialized_key_size=3,
        serialized_value_size=2,
    )


async def _fetched(consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch, fetch: Any) -> list:
    async def wait_next_records(timeout: float) -> tuple[Any, None]:
        return fetch, None

    monkeypatch.setattr(consumer, "_wait_next_records", wait_next_records)
    monkeypatch.setattr(consumer, "highwater", lambda tp: None)
    return [item async for item in consumer.getmany(timeout=0)]


async def test_input_comes_as_record_batches_and_changelogs_record_by_record(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    purchases = [_record(PURCHASES, o) for o in range(10, 10 + 2 * BATCH_RECORDS + 50)]
    changelog = [_record(CHANGELOG, o) for o in range(3)]
    handed = await _fetched(consumer, monkeypatch, {PURCHASES: purchases, CHANGELOG: changelog})
    batches = [m for tp, m in handed if tp == PURCHASES]
    singles = [m for tp, m in handed if tp == CHANGELOG]
    assert all(isinstance(b, RecordBatch) for b in batches)
    assert [len(b.records) for b in batches] == [BATCH_RECORDS, BATCH_RECORDS, 50]
    assert [r.offset for b in batches for r in b.records] == [r.offset for r in purchases]
    assert [b.offset for b in batches] == [b.records[-1].offset for b in batches]
    first = batches[0].records[0]
    assert (first.topic, first.partition, first.key, first.value) == (
        PURCHASES.topic, 0, b"c10", b"{}",
    )  # fmt: skip
    assert first.timestamp == pytest.approx(1_700_000_000.010)
    assert all(b.generation_id == consumer.app.consumer_generation_id for b in batches)
    assert [(type(m) is RecordBatch, m.offset) for m in singles] == [
        (False, 0), (False, 1), (False, 2),
    ]  # fmt: skip


async def test_a_rebalance_during_the_hand_off_stops_the_batches(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    purchases = [_record(PURCHASES, o) for o in range(3 * BATCH_RECORDS)]

    async def wait_next_records(timeout: float) -> tuple[Any, None]:
        return {PURCHASES: purchases}, None

    monkeypatch.setattr(consumer, "_wait_next_records", wait_next_records)
    monkeypatch.setattr(consumer, "highwater", lambda tp: None)
    handed = []
    async for item in consumer.getmany(timeout=0):
        handed.append(item)
        consumer.app.consumer_generation_id += 1  # a new generation began
    assert len(handed) == 1


class _Fetches:
    """Each ``getmany`` is one fetch: the next list of record batches (topic
    partition, offsets), counted as the consumer's own ``_getmany`` counts them."""

    def __init__(self, consumer: InlineConsumer, fetches: list[list[list[int]]]) -> None:
        self.consumer = consumer
        self.fetches = fetches
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        if not self.fetches:
            self.fetcher._stopped.set()
            return
        fetch = self.fetches.pop(0)
        self.consumer._fetches += 1  # begun
        self.consumer._fetched = self.consumer._fetches  # and done
        generation = self.consumer.app.consumer_generation_id
        for offsets in fetch:
            yield (
                PURCHASES,
                self.consumer._to_batch(
                    PURCHASES, [_record(PURCHASES, o) for o in offsets], generation
                ),
            )


def _drive(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch, fetches: list[list[list[int]]]
) -> tuple[_Fetches, list[RecordBatch]]:
    delivered: list[RecordBatch] = []
    fetcher = _Fetches(consumer, fetches)

    async def callback(message: Any) -> None:
        delivered.append(message)

    async def _seek(partition: TP, offset: int) -> None:
        pass

    monkeypatch.setattr(consumer, "getmany", fetcher.getmany)
    monkeypatch.setattr(consumer, "callback", callback)
    monkeypatch.setattr(consumer, "_seek", _seek)
    return fetcher, delivered


async def test_acknowledging_a_record_batch_commits_up_to_its_last_record(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets 7 and 8 are absent from the log (a transaction marker, say): inside a
    batch they are acknowledged with it. A batch not acknowledged yet holds the
    commit back at the end of the one before it."""
    monkeypatch.setattr(consumer.app.topics, "acks_enabled_for", lambda topic: True)
    fetcher, delivered = _drive(
        consumer, monkeypatch, [[[0, 1, 2, 3, 4]], [[5, 6, 9, 10], [11, 12]]]
    )
    await consumer._drain_messages(fetcher.fetcher)
    assert [[r.offset for r in b.records] for b in delivered] == [
        [0, 1, 2, 3, 4], [5, 6, 9, 10], [11, 12],
    ]  # fmt: skip
    first, second, third = delivered
    assert consumer._read_offset[PURCHASES] == 12
    for batch in (first, third):
        assert consumer.ack(batch)
    assert consumer._new_offset(PURCHASES) == 5  # the second is not done yet
    assert consumer.ack(second)
    assert consumer._new_offset(PURCHASES) == 13
    assert not consumer.ack(second)  # once


async def test_a_batch_read_again_acknowledges_only_what_was_not_before(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read again after a seek back, a batch overlapping one acknowledged before adds
    each offset once: a repeated offset would break the run Faust commits."""
    monkeypatch.setattr(consumer.app.topics, "acks_enabled_for", lambda topic: True)
    fetcher, delivered = _drive(consumer, monkeypatch, [[[0, 1, 2]], [[1, 2, 3, 4]]])
    await consumer._drain_messages(fetcher.fetcher)
    for batch in delivered:
        consumer.ack(batch)
    assert sorted(consumer._acked[PURCHASES]) == [0, 1, 2, 3, 4]
    assert consumer._new_offset(PURCHASES) == 5


async def test_records_below_the_read_offset_are_dropped_from_a_batch(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Faust drops single messages below its read offset, so a record batch loses
    those records; one with none left is not handed over at all."""
    fetcher, delivered = _drive(consumer, monkeypatch, [[[3, 4, 5, 6, 7]], [[2, 3]]])
    consumer._read_offset[PURCHASES] = 5
    await consumer._drain_messages(fetcher.fetcher)
    assert [[r.offset for r in b.records] for b in delivered] == [[5, 6, 7]]


async def test_a_batch_fetched_before_a_seek_is_not_handed_over(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent seeks back to 1 on reading the batch 0..2: the rest of that fetch
    (3, 4) is not handed over, and the first record of the next fetch tells where the
    log resumes (``landed``)."""
    fetcher, delivered = _drive(consumer, monkeypatch, [[[0, 1, 2], [3, 4]], [[1, 2, 3]]])

    async def seek_back(message: Any) -> None:
        delivered.append(message)
        if message.offset == 2 and not consumer.landed:
            await consumer.seek(PURCHASES, 1)

    monkeypatch.setattr(consumer, "callback", seek_back)
    await consumer._drain_messages(fetcher.fetcher)
    assert [[r.offset for r in b.records] for b in delivered] == [[0, 1, 2], [1, 2, 3]]
    assert consumer.landed == {PURCHASES: (1, 1)}
    assert consumer._read_offset[PURCHASES] == 3
