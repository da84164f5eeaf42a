"""The record of each input partition, as the processor keeps it: loaded from the
table, its offsets moved as messages are read, stored by the commit plan.

The record (``PartitionState``) is the partition's retention figures
(``retention.partition.PartitionFigures``: its event-time clock, exact counters and
sums) and the bookkeeping that keeps them exact under at-least-once delivery,
declared here: the highest offset processed per topic (a message at or below it is
a redelivery, applied again, idempotently, but not counted again), the offsets
before the last batch (``previous``: where a new owner resumes), the last event
released from waiting, the outbox's keys and the sources of forwarded events.
``Partitions`` also knows which records this worker wrote itself.

The worker writes this record before the customer records of the same batch into
the same changelog partition, so after a crash the record is never older than the
customer states it describes (processor/commit.py).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

import msgspec

from retention.partition import PartitionFigures
from retention.segment_book import SegmentBook
from streams.partitions import partition_state_key


class PartitionState(PartitionFigures, kw_only=True):
    """The stored record of one input partition: its figures and its delivery
    bookkeeping (one msgpack map by field name, in ``_WIRE_ORDER``)."""

    offsets: dict[str, int] = msgspec.field(default_factory=dict)
    #: ``offsets`` as they were before the batch that last wrote this record: that
    #: batch's customer records follow this record in the changelog and a crash may
    #: have cut them off, so a new owner resumes reading from here
    #: (``resume_offsets``) and redoes the batch, uncounted.
    previous: dict[str, int] = msgspec.field(default_factory=dict)
    #: Sort key (at, tie, topic, offset) of the last event released from waiting:
    #: after a crash, a waiting event at or below it was released (and counted) by
    #: a batch whose partition record was stored, so it is applied again uncounted
    #: (processor/alignment.py).
    released: tuple[int, int, str, int] | None = None
    #: Keys of the records holding alerts not yet known to be delivered (the agent's
    #: outbox), so that a new owner finds them without reading every key of the
    #: table. None: written before this index existed.
    outbox: list[bytes] | None = None
    #: Per source ("topic/partition"), the highest source offset of a forwarded event
    #: read here: a forward sent again (by a new owner of the source partition, from
    #: its outbox) is recognised by it and neither applied nor counted again.
    routed: dict[str, int] = msgspec.field(default_factory=dict)


#: The record's fields in the order records have always been written (from when
#: figures and bookkeeping were one struct): a subclass's fields would otherwise
#: come after its base's, and the same record would be other bytes on the
#: changelog. Decoding is by name and does not depend on it. A new field goes last.
_WIRE_ORDER = (
    "partition", "watermark", "clock", "frontiers", "customers", "consumed", "valid",
    "deadletter", "duplicates", "late", "ticks", "offsets", "previous", "periods",
    "due_days", "tiers", "value_at_risk", "clv", "aligned", "pending_days", "pending",
    "released", "outbox", "money", "forwarded", "received", "routed",
    "routed_frontier", "peers", "segments", "plans",
)  # fmt: skip
if sorted(_WIRE_ORDER) != sorted(PartitionState.__struct_fields__):
    raise RuntimeError("_WIRE_ORDER must name every field of PartitionState once")

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(PartitionState)


def encode_partition(state: PartitionState) -> bytes:
    # A dict keeps insertion order and encodes as the struct's own map would (every
    # field, defaults included): byte for byte the record of a single struct.
    # ``segments`` and ``plans`` None (a record of a release before them) are left
    # out, which decodes as None again.
    fields = {name: getattr(state, name) for name in _WIRE_ORDER}
    for name in ("segments", "plans"):
        if fields[name] is None:
            del fields[name]
    return _ENCODER.encode(fields)


def decode_partition(data: bytes) -> PartitionState:
    return _DECODER.decode(data)


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
        if raw is None:  # a new partition: it keeps figures per segment from its start
            return PartitionState(partition=partition, segments=SegmentBook(), plans=SegmentBook())
        return decode_partition(raw)

    def store(self, pstate: PartitionState) -> None:
        """Write the record (the commit plan says when)."""
        self.table[partition_state_key(pstate.partition)] = encode_partition(pstate)
        self.written[pstate.partition] = dict(pstate.offsets)

    def forget(self, partition: int) -> None:
        """Owned anew: its record now comes from the changelog."""
        self.written.pop(partition, None)
