"""What the customer processor runs on, as plain interfaces.

Faust provides them in a worker (agents/delivery.py), ``processor.testing`` in
memory. Nothing here knows Faust: a topic partition is a plain named tuple, equal
to Faust's and aiokafka's (tuples compare by value).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from retention.alerts import Lifecycle
from schemas.decode import EventDecoder
from streams.metrics import PipelineMetrics
from streams.settings import Settings


class TP(NamedTuple):
    """A topic partition."""

    topic: str
    partition: int


class Record:
    """One Kafka record as the processor reads it: what a record batch carries
    (streams/consumer.py hands the agent one message per fetched batch of a topic
    partition, its ``records`` these). ``timestamp`` in seconds, as Faust's."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        timestamp: float | None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return f"Record({self.topic}[{self.partition}]@{self.offset})"


def records_of(message: Any) -> list[Any]:
    """The records a message handed to the agent carries: a record batch's
    ``records``, or the message itself (one record, as Faust hands it)."""
    records = getattr(message, "records", None)
    return [message] if records is None else records


class Sender(Protocol):
    """A topic to send records to (Faust's ``send_soon``): returns a future, or None
    for a record known delivered at once."""

    def send_soon(self, *, key: bytes | None, value: bytes, partition: int) -> Any: ...


class Offsets(Protocol):
    """The consumer as the processor sees it."""

    def writable(self) -> tuple[Collection[Any], int] | None:
        """The topic partitions assigned and the consumer generation, or None when
        there is no running consumer (nothing to check)."""

    def active(self) -> bool:
        """Whether a consumer runs (routing is on from then)."""

    def highwater(self, tp: TP) -> int | None:
        """The end offset of ``tp`` as last fetched (None: not known yet); raises
        when there is no consumer thread."""

    def landed(self, tp: TP) -> tuple[int, int] | None:
        """The last seek on ``tp`` that took effect: (offset sought, offset of the
        first record fetched after it)."""

    def forget_landing(self, tp: TP) -> None:
        """Drop ``landed(tp)``: shown stale, until the next seek lands."""

    def committed(self, tp: TP) -> int | None:
        """The group's committed offset of ``tp``, as the consumer knows it."""

    def assigned(self) -> list[int]:
        """The input partitions this worker actively owns."""

    def rebalances(self) -> int:
        """How many rebalances have begun in this worker: counted by the consumer's
        own thread the moment a revocation starts, before the agent hears of it."""


@dataclass
class Parts:
    """Everything a ``CustomerBatch`` reads and writes."""

    settings: Settings
    table: MutableMapping[bytes, bytes]
    decoder: EventDecoder
    metrics: PipelineMetrics
    lifecycle: Lifecycle
    alerts: Sender
    deadletters: Sender
    offsets: Offsets
    sink: Any = None  # the serving view's sink (streams/redis_sink.py), if any
    #: The context a partition's writes are made in, given one of its events: Faust
    #: picks a table record's changelog partition from its current event.
    handling: Callable[[Any], AbstractContextManager[Any]] = nullcontext
