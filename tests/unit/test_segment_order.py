"""Per-segment figures do not depend on how a partition's input arrives: the topics
interleaved any way (each topic in its own order, as Kafka keeps it), any batch
sizes, and duplicates re-sent by a producer give the same segment books as the
input read in event-time order."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.partition import decode_partition
from retention.segment_book import SegmentBook
from retention.timeutil import to_micros
from streams.generator import GeneratorProfile, write_history
from streams.inputs import Record, read_events
from streams.partitions import partition_state_key
from streams.settings import Settings
from tests.inprocess import Run

END = datetime(2025, 7, 1, tzinfo=UTC)
AS_OF = to_micros(END)
CONFIG = Settings(segment_cap=3)


def _history() -> list[Record]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        profile = GeneratorProfile(sub_segments=2, resignup_share=0.3)
        write_history(path, 60, 120, 21, END, defects=False, profile=profile)
        records = [r for r in read_events(path, "jsonl") if r.occurred_at is not None]
    records = [r for r in records if r.occurred_at is not None and r.occurred_at < AS_OF]
    return sorted(records, key=lambda r: r.occurred_at or 0)


HISTORY = _history()


def segments_of(records: list[Record], batches: list[int], seed: int) -> SegmentBook:
    run = Run(records, AS_OF, CONFIG)
    run.feed(records, batches, random.Random(seed))
    book = decode_partition(run.table[partition_state_key(0)]).segments
    assert book is not None
    return book


BASELINE = msgspec.to_builtins(segments_of(HISTORY, [500], 0))


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_segment_books_ignore_interleaving_batches_and_duplicates(data: st.DataObject) -> None:
    by_topic: dict[str, list[Record]] = {}
    for record in HISTORY:
        by_topic.setdefault(record.topic, []).append(record)
    resent = data.draw(st.sets(st.integers(0, len(HISTORY) - 1), max_size=30))
    queues = {topic: list(items) for topic, items in by_topic.items()}
    for index in sorted(resent):  # a producer's retry: the record again, later in its topic
        record = HISTORY[index]
        queue = queues[record.topic]
        queue.insert(min(len(queue), queue.index(record) + 1 + index % 7), record)
    order: list[Record] = []
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    while any(queues.values()):
        topic = rng.choice([t for t, q in queues.items() if q])
        take = rng.randint(1, 40)
        order.extend(queues[topic][:take])
        del queues[topic][:take]
    batches = data.draw(st.lists(st.integers(1, 300), min_size=1, max_size=4))
    got = segments_of(order, batches, data.draw(st.integers(0, 1000)))
    assert msgspec.to_builtins(got) == BASELINE
    assert len(got.tracked) == 3 and "other" in got.books
