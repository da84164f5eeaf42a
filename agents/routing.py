"""The customer agent's routing: which input events it forwards, where, and what it
tells the other partitions about its progress (records: streams/routing.py).

Forwards are sent like alerts: kept in outbox records of the source partition's
state, written before the partition record that counts their events, and sent
after it; deleted once acknowledged, sent again by a new owner of the partition
(agents/customers.py). Progress announcements are not kept: each partition's
progress is announced again from its state whenever it changes, and by a new owner.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any, Final

from retention.partition import PartitionState, PeerProgress
from streams import topics
from streams.routing import home_partition, progress_value

#: Seconds between two announcements of a partition that only move its frontiers
#: (a topic read to its end, or no longer, is announced at once). Frontiers
#: announced late hold other partitions back a little longer, never less.
PROGRESS_EVERY: Final = 0.5
INPUT_NAMES: Final = tuple(topics.INPUT_TOPICS)


class Router:
    """Routing for one worker: forwards to a key's home partition, progress to all.

    Off until the app's consumer runs (``activate``): under Faust's test context,
    with no consumer thread, events are applied where they are read, as the tests
    that put any customer on any partition expect.
    """

    def __init__(self, app: Any, topic: Any, *, active: bool = False) -> None:
        self.app = app
        self.topic = topic  # churnwatch.repartition; anything with Faust's send_soon
        self.partitions: int = app.settings.partitions
        self.max_event_bytes: int = app.settings.max_event_bytes
        self.active = active
        #: Per source partition, its last announcement and when it was sent.
        self.announced: dict[int, tuple[PeerProgress, float]] = {}
        self._peers: dict[int, tuple[int, ...]] = {}

    def activate(self) -> bool:
        """Whether routing is on: from the first time the consumer answers."""
        if not self.active:
            try:
                self.app.consumer.assignment()
            except Exception:  # no consumer thread: Faust's test context
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
