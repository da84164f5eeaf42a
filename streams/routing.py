"""Which partition a customer's events belong to, and the records of the
repartition topic.

Faust, aiokafka and the Java client put a keyed record on partition
``(murmur2(key) & 0x7fffffff) % partitions``; librdkafka-based clients
(confluent-kafka) hash with CRC32 by default, and any producer may choose a
partition itself. A customer's state lives in the partition its key hashes to with
murmur2, its *home* (where Faust's table routing and the web views look for it).
An input event read on another partition is counted there as consumed and
forwarded, and sent home on ``churnwatch.repartition`` (processor/routing.py,
processor/outbox.py), so the state does not depend on the producers' partitioner.

Two kinds of record travel on the repartition topic, msgpack-encoded, tagged:

- ``Forward``: an input event, keyed by its original key, its original value byte
  for byte, with where it was read (topic, hence its event type; partition; offset;
  Kafka timestamp) and the watermark of that partition when it was read, which its
  home judges its lateness by (forwarding takes time; it does not make an event late).
- ``Progress``: how far a partition has read its part of the input topics, sent to
  every other partition after the forwards of what it describes. A partition applies
  nothing past what every other one has read (``PartitionFigures.align``), as it does
  for its own topics, so forwarded events are applied in event-time order with the
  rest, as if their producer had put them on the right partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Final

import msgspec
from aiokafka.partitioner import murmur2

from retention.partition import PeerProgress
from schemas.decode import Rejected
from streams import topics

#: Forwards per outbox record, and their bytes at most (a changelog record must stay
#: well under the broker's message size limit; an event is at most 64 KiB by default).
OUTBOX_CHUNK: Final = 1000
OUTBOX_BYTES: Final = 512 * 1024
#: Key prefix of the outbox records holding forwards not yet known to be delivered.
FORWARDS: Final = b"\x00forwards/"
#: The reason a record on the repartition topic that is neither kind is dead-lettered.
NOT_ROUTED: Final = Rejected(
    "wrong_type", "not a forwarded event or read progress (churnwatch.repartition)"
)


@lru_cache(maxsize=1 << 16)
def home_partition(key: bytes, partitions: int) -> int:
    """The partition Faust's and aiokafka's default partitioner (murmur2, as the Java
    client's) puts ``key`` on, of ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Forward(msgspec.Struct, tag="forward", array_like=True, frozen=True):
    """An input event sent to its home partition from the one it was read on."""

    topic: str
    partition: int
    offset: int
    timestamp: float | None  # of the original record, Unix seconds
    watermark: int | None  # of the partition it was read on, when it was read
    value: bytes


class Progress(msgspec.Struct, tag="progress", array_like=True, frozen=True):
    """``partition`` has read its input topics this far (sent to every other one)."""

    partition: int
    read: PeerProgress


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Forward | Progress)


def forward_value(message: Any, watermark: int | None) -> bytes:
    """The repartition record's value for ``message`` (anything with a Kafka
    message's ``topic``, ``partition``, ``offset``, ``timestamp`` and ``value``)."""
    return _ENCODER.encode(
        Forward(
            message.topic,
            message.partition,
            message.offset,
            message.timestamp,
            watermark,
            message.value or b"",
        )
    )


def progress_value(partition: int, read: PeerProgress) -> bytes:
    return _ENCODER.encode(Progress(partition, read))


def decode_record(value: bytes | None) -> Forward | Progress | None:
    """A repartition record, or None if ``value`` is not one churnwatch writes."""
    if value is None:
        return None
    try:
        record = _DECODER.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if isinstance(record, Forward) and record.topic not in topics.INPUT_TOPICS:
        return None
    return record


def forward_outbox_key(partition: int, first: int) -> bytes:
    """The outbox record of ``partition`` holding forwards from its ``first``-th on
    (zero-padded: a new owner sends the records again in key order, which is the
    order they were first sent in)."""
    return FORWARDS + b"%d/%020d" % (partition, first)


def is_forward_outbox(key: bytes) -> bool:
    return key.startswith(FORWARDS)


def forward_outboxes(
    partition: int, first: int, forwards: list[tuple[bytes, bytes]]
) -> Iterator[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """``forwards`` (key, value), the ``first``-th on, in outbox records: at most
    ``OUTBOX_CHUNK`` of them and about ``OUTBOX_BYTES`` per record."""
    chunk: list[tuple[bytes, bytes]] = []
    size = 0
    start = first
    for index, (key, value) in enumerate(forwards, first):
        if chunk and (len(chunk) >= OUTBOX_CHUNK or size + len(value) > OUTBOX_BYTES):
            yield forward_outbox_key(partition, start), chunk
            chunk, size, start = [], 0, index
        chunk.append((key, value))
        size += len(key) + len(value)
    if chunk:
        yield forward_outbox_key(partition, start), chunk
