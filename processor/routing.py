"""The processor's routing: which input events it forwards, where, and what it
tells the other partitions about its progress (records: streams/routing.py).

An input event read on a partition other than the one its key hashes to (a producer
with another partitioner) is counted there as consumed and forwarded (``forward``),
and sent home on ``churnwatch.repartition`` the same way alerts are sent: kept in
outbox records of the source partition's state, written before the partition record
that counts their events, and sent after it; deleted once acknowledged, sent again
by a new owner of the partition (processor/outbox.py). Its home recognises a forward
sent again by its source offset (``receive``). Progress announcements are not kept:
each partition's progress is announced again from its state whenever it changes, and
by a new owner; the other partitions align on it as on their own topics
(``PartitionState.align``).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from typing import Any, Final

from processor.arrival import Source, forwarded
from processor.partition import PartitionState
from processor.ports import Offsets, Sender
from retention.partition import PeerProgress
from retention.timeutil import Micros
from schemas.decode import Rejected
from streams import routing, topics
from streams.routing import home_partition, progress_value
from streams.settings import Settings

#: Seconds between two announcements of a partition that only move its frontiers
#: (a topic read to its end, or no longer, is announced at once). Frontiers
#: announced late hold other partitions back a little longer, never less.
PROGRESS_EVERY: Final = 0.5
INPUT_NAMES: Final = tuple(topics.INPUT_TOPICS)


class Router:
    """Routing for one worker: forwards to a key's home partition, progress to all.

    Off until the consumer runs (``activate``): under Faust's test context, with no
    consumer thread, events are applied where they are read, as the tests that put
    any customer on any partition expect.
    """

    def __init__(
        self,
        settings: Settings,
        topic: Sender,
        offsets: Offsets | None = None,
        *,
        active: bool = False,
    ) -> None:
        self.offsets = offsets
        self.topic = topic  # churnwatch.repartition
        self.partitions = settings.partitions
        self.max_event_bytes = settings.max_event_bytes
        self.active = active
        #: Per source partition, its last announcement and when it was sent.
        self.announced: dict[int, tuple[PeerProgress, float]] = {}
        self._peers: dict[int, tuple[int, ...]] = {}

    def activate(self) -> bool:
        """Whether routing is on: from the first time the consumer answers."""
        if not self.active:
            if self.offsets is None or not self.offsets.active():
                return False
            self.active = True
        return True

    def home(self, message: Any) -> int | None:
        """The partition an input message read elsewhere belongs to; None if it
        belongs where it was read, or cannot be forwarded: keyless (no home; the
        decoder rejects it), a tombstone, or over the event size limit (rejected
        where it was read, and which might not fit the repartition topic wrapped)."""
        key = message.key
        value = message.value
        if key is None or value is None or len(value) > self.max_event_bytes:
            return None
        home = home_partition(key, self.partitions)
        return None if home == message.partition else home

    def peers(self, partition: int) -> tuple[int, ...]:
        """The partitions that may forward events to ``partition``."""
        peers = self._peers.get(partition)
        if peers is None:
            peers = tuple(p for p in range(self.partitions) if p != partition)
            self._peers[partition] = peers
        return peers

    def send(self, key: bytes, value: bytes) -> Any:
        """Send a forward (a repartition record's value) to its key's home."""
        partition = home_partition(key, self.partitions)
        return self.topic.send_soon(key=key, value=value, partition=partition)

    def announce(
        self, partition: int, pstate: PartitionState, idle: Container[str], now: float
    ) -> bool:
        """Tell every other partition how far ``partition`` has read, if that changed
        (frontiers alone: at most every PROGRESS_EVERY seconds). Call after sending
        the forwards of everything read. Returns whether it was sent."""
        read = PeerProgress(
            frontiers={t: pstate.frontiers[t] for t in INPUT_NAMES if t in pstate.frontiers},
            idle=tuple(t for t in INPUT_NAMES if t in idle),
        )
        last = self.announced.get(partition)
        if last is not None:
            said, when = last
            if said == read or (said.idle == read.idle and now - when < PROGRESS_EVERY):
                return False
        value = progress_value(partition, read)
        for peer in self.peers(partition):
            self.topic.send_soon(key=None, value=value, partition=peer)
        self.announced[partition] = (read, now)
        return True

    def forget(self, partitions: Iterable[int]) -> None:
        """Announce these partitions again from scratch (owned anew, or given up)."""
        for partition in partitions:
            self.announced.pop(partition, None)


Reject = Callable[[Any, Rejected, PartitionState, bool, dict[tuple[str, str], int]], None]


def home(router: Router | None, message: Any) -> int | None:
    """The partition an input message belongs to, if routing is on (``router``) and
    that is not the one it was read on."""
    if router is None or message.topic not in topics.INPUT_TOPICS:
        return None
    return router.home(message)


def forward(
    pstate: PartitionState,
    message: Any,
    redelivered: bool,
    counts: dict[tuple[str, str], int],
    forwards: list[tuple[bytes, bytes]],
) -> None:
    """An input event whose key belongs to another partition: counted here as
    consumed and forwarded, sent there with the batch's outbox (and counted there).
    A redelivered one was in the outbox of the batch that first read it."""
    if redelivered:
        return
    pstate.consumed += 1
    pstate.forwarded += 1
    counts["consumed", topics.INPUT_TOPICS[message.topic]] += 1
    counts["misrouted", message.topic] += 1
    forwards.append((message.key, routing.forward_value(message, pstate.watermark)))


def receive(
    pstate: PartitionState,
    message: Any,
    redelivered: bool,
    counts: dict[tuple[str, str], int],
    reject: Reject,
) -> tuple[Source, Micros | None] | None:
    """A record of the repartition topic: a forwarded event, as read at its source,
    and the watermark to judge its lateness by (the lesser of this partition's and
    its source's when it was read there, None if either is: forwarding takes time,
    it does not make an event late); None once handled: another partition's
    progress, a forward sent again, or a record of neither kind (dead-lettered,
    counted as consumed)."""
    record = routing.decode_record(message.value)
    if isinstance(record, routing.Progress):
        if not redelivered:  # else stored with the partition record already
            pstate.peers[record.partition] = record.read
        return None
    if record is None:
        if not redelivered:
            pstate.consumed += 1
        reject(message, routing.NOT_ROUTED, pstate, redelivered, counts)
        return None
    if not redelivered:
        source = f"{record.topic}/{record.partition}"
        if record.offset <= pstate.routed.get(source, -1):
            return None  # sent again by a new owner of the source: counted once
        pstate.routed[source] = record.offset
        pstate.received += 1
    watermark = pstate.watermark
    if watermark is None or record.watermark is None:
        return forwarded(message, record), None  # as its source judged it: on time
    return forwarded(message, record), min(watermark, record.watermark)
