"""The record of each input partition, as the processor keeps it: loaded from the
table, its offsets moved as messages are read, stored by the commit plan.

The record itself (``retention.partition.PartitionState``) also holds the
partition's event-time clock and exact counters, which are domain figures. Here is
the bookkeeping that makes them exact under at-least-once delivery: the highest
offset processed per topic (a message at or below it is a redelivery, applied
again, idempotently, but not counted again), the offsets before the last batch
(``previous``: where a new owner resumes), and which records this worker wrote
itself.

The worker writes this record before the customer records of the same batch into
the same changelog partition, so after a crash the record is never older than the
customer states it describes (processor/commit.py).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from retention.partition import PartitionState, decode_partition, encode_partition
from streams.partitions import partition_state_key


def processed(pstate: PartitionState, topic: str, offset: int) -> None:
    """``offset`` of ``topic`` was read: the highest processed moves up to it."""
    if offset > pstate.offsets.get(topic, -1):
        pstate.offsets[topic] = offset


def resume_offsets(pstate: PartitionState) -> dict[str, int]:
    """Per source topic, the first offset whose effects may be missing from the
    state recovered with this record."""
    return {topic: offset + 1 for topic, offset in pstate.previous.items()}


def begin_batch(pstate: PartitionState, group: Iterable[Any]) -> None:
    """Where a new owner resumes if this batch's customers are cut off: before its
    first message (a redone batch keeps the start of the batch it redoes)."""
    previous = dict(pstate.offsets)
    for message in group:
        if message.offset <= previous.get(message.topic, -1):
            previous[message.topic] = message.offset - 1
    pstate.previous = previous


class Partitions:
    """The partition records in ``table``, and the offsets of the last record this
    worker wrote for each partition (``written``)."""

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table
        self.written: dict[int, dict[str, int]] = {}

    def load(self, partition: int) -> PartitionState:
        raw = self.table.get(partition_state_key(partition))
        return PartitionState(partition=partition) if raw is None else decode_partition(raw)

    def store(self, pstate: PartitionState) -> None:
        """Write the record (the commit plan says when)."""
        self.table[partition_state_key(pstate.partition)] = encode_partition(pstate)
        self.written[pstate.partition] = dict(pstate.offsets)

    def forget(self, partition: int) -> None:
        """Owned anew: its record now comes from the changelog."""
        self.written.pop(partition, None)
