"""A valid input event on its way to customer state, and where it was read."""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

from retention.timeutil import Micros
from schemas.events import Event
from streams import routing

#: (event time, id hash, topic, offset): the order events are applied in.
Order = tuple[int, int, str, int]

ORDER = operator.itemgetter(0)


class Arrival(NamedTuple):
    """A valid input event read in this batch or released from waiting."""

    order: Order
    event: Event
    message: Any  # the Kafka message, or a Source for a released event
    watermark: Micros | None  # the partition's watermark when it was read
    redelivered: bool


class Source(NamedTuple):
    """What alert records and the fold read of a message, for released and
    forwarded events."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: float | None


def forwarded(message: Any, record: routing.Forward) -> Source:
    """A forwarded event as it was read at its source: its topic (hence its type),
    partition, offset, timestamp and value; keyed as the repartition record is."""
    return Source(
        record.topic, record.partition, record.offset, message.key, record.value, record.timestamp
    )
