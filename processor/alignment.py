"""Alignment: event time across topics, and the events waiting for it.

A consumer reads its topics at different paces (in a backlog, one fetch of the
sparse feedback topic can span weeks of purchases still unread), so events later
than the partition's *aligned* time, up to which every topic with input left has
been read (``PartitionState.align``), wait in the table; every aligned event,
waiting or new, is then applied in (event time, id hash) order. State was already
order-free; alignment makes risk assessments and alerts independent of read order
too, so a replay, a restart or a rebalance gives the same alerts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from processor.arrival import ORDER, Arrival, Source, forwarded
from processor.days import DayBuckets
from processor.partition import PartitionState
from processor.ports import TP
from retention.timeutil import DAY, Micros
from schemas.decode import EventDecoder
from streams import routing, topics
from streams.partitions import pending_bucket_key

INPUT_NAMES = tuple(topics.INPUT_TOPICS)
_PENDING_ENCODER = msgspec.msgpack.Encoder()
_PENDING_DECODER = msgspec.msgpack.Decoder(
    list[tuple[str, int, int, int, bytes, bytes, int | None, float | None]]
)

#: A waiting event as stored: topic, offset, at, tie, key, value, watermark, timestamp.
Entry = tuple[Any, ...]
Pending = dict[tuple[str, int], Entry]


def _decode(raw: bytes | None) -> Pending:
    entries = [] if raw is None else _PENDING_DECODER.decode(raw)
    return {(e[0], e[1]): e for e in entries}


def _encode(bucket: Pending) -> bytes:
    return _PENDING_ENCODER.encode(list(bucket.values()))


def idle(highwater: Callable[[TP], int | None], pstate: PartitionState) -> set[str]:
    """Input topics read to their end on the partition: they hold nothing back.

    A partition whose end offset the consumer does not know yet (nothing fetched
    since it was assigned) holds back: taken for read to its end, right after a
    rebalance, it let the events of the topics fetched first be applied ahead of
    its own, and a batch redone after a crash raised an alert with other reasons
    than the first time (tests/integration/test_chaos.py). With no consumer
    thread at all, as under Faust's test context, every topic counts as read.
    """
    found = set()
    for topic in INPUT_NAMES:
        try:
            high = highwater(TP(topic, pstate.partition))
        except Exception:  # no consumer thread (test context)
            found.add(topic)
            continue
        if high is not None and pstate.offsets.get(topic, -1) + 1 >= high:
            found.add(topic)
    return found


def ready(
    pstate: PartitionState,
    arrivals: Iterable[Arrival],
    aligned: Micros | None,
    waiting: PendingBuckets,
    decoder: EventDecoder,
) -> list[Arrival]:
    """The events to apply now, in order: those read at or before ``aligned`` and
    those it releases from waiting; later ones are added to ``waiting``."""
    out: list[Arrival] = []
    for arrival in arrivals:
        if aligned is not None and arrival.order[0] <= aligned:
            out.append(arrival)
        elif not arrival.redelivered:
            waiting.add(arrival)
        # else: a redelivered event later than ``aligned`` is waiting already
        # (the bucket is written before the partition record that knows its offset)
    if aligned is not None:
        released = waiting.release(aligned, decoder)
        if released:
            out = _merge(pstate, out, released)
    out.sort(key=ORDER)
    return out


def _merge(
    pstate: PartitionState, read: list[Arrival], released: Sequence[Arrival]
) -> list[Arrival]:
    """A redelivered message that waited when first read may be released in this
    very batch: apply the waiting copy alone, which knows whether it was counted
    (applied twice, the second copy would count as a duplicate of the first)."""
    waited = {arrival.order[2:]: arrival for arrival in released}
    for arrival in read:
        copy = waited.get(arrival.order[2:])
        if copy is not None and not arrival.redelivered and not copy.redelivered:
            # New to the partition record yet waiting already: stored by a batch cut
            # off before its partition record, and never counted as waiting, though
            # its release just uncounted it.
            pstate.pending += 1
    out = [a for a in read if a.order[2:] not in waited]
    out.extend(released)
    return out


class PendingBuckets(DayBuckets[Pending]):
    """Events waiting for the partition's aligned time, per UTC day of event time.

    Stored in the customers table (same changelog partition as the partition
    record), keyed by (topic, offset) so that writing one again is harmless. Write
    order makes a crash safe: new waiting events are stored before the partition
    record that marks their offsets processed; emptied buckets are written after
    the customers their events were applied to, and the partition record's
    ``released`` key tells a later batch which stored events it already counted.
    """

    def __init__(self, table: Any, partition: int, pstate: PartitionState) -> None:
        super().__init__(
            table, partition, pstate.pending_days, pending_bucket_key, _decode, _encode
        )
        self.pstate = pstate
        self.added: set[int] = set()
        self.removed: dict[int, set[tuple[str, int]]] = {}

    def add(self, arrival: Arrival) -> None:
        at, tie, topic, offset = arrival.order
        message = arrival.message
        day = at // DAY
        bucket = self.get(day)
        # Counted whether or not the bucket holds it already: it may, written by a
        # batch that crashed before its partition record, which therefore never
        # counted it (and ``add`` only sees events new to the partition record).
        self.pstate.pending += 1
        value = message.value
        if topic == topics.REPARTITION:  # forwarded: stored as read, wrapped
            value = routing.forward_value(message, arrival.watermark)
        bucket[topic, offset] = (
            topic, offset, at, tie, message.key, value, arrival.watermark, message.timestamp,
        )  # fmt: skip
        self.added.add(day)
        self.note(day)

    def release(self, aligned: Micros, decoder: Any) -> list[Arrival]:
        """Every waiting event at or before ``aligned``, decoded again (the bytes
        passed validation when they were read; the decoder is deterministic)."""
        done = self.pstate.released  # as the partition record was stored
        out: list[Arrival] = []
        for day, bucket in self.walk(aligned, self._emptied):
            gone = self.removed.setdefault(day, set())
            for ident, entry in bucket.items():
                if entry[2] > aligned or ident in gone:
                    continue
                gone.add(ident)
                out.append(self._released(entry, done, decoder))
        return out

    def _emptied(self, day: int, bucket: Pending) -> bool:
        """Whether every event of the day's bucket is released (else the rest of the
        day is still waiting)."""
        return len(self.removed[day]) >= len(bucket)

    def _released(
        self, entry: Entry, done: tuple[int, int, str, int] | None, decoder: Any
    ) -> Arrival:
        """A waiting event released: counted now, unless the stored record's
        ``released`` (``done``) says an earlier batch counted it."""
        pstate = self.pstate
        topic, offset, at, tie, key, value, watermark, timestamp = entry
        order = (at, tie, topic, offset)
        counted = done is not None and order <= done
        if not counted:
            pstate.pending -= 1
            if pstate.released is None or order > pstate.released:
                pstate.released = order
        source = Source(topic, self.partition, offset, key, value, timestamp)
        if topic == topics.REPARTITION:
            record = routing.decode_record(value)
            assert isinstance(record, routing.Forward)  # as it was when stored
            source = forwarded(source, record)
        event = decoder.decode(topics.INPUT_TOPICS[source.topic], key, source.value)
        return Arrival(order, event, source, watermark, counted)

    def write_added(self) -> None:
        """Buckets that gained events, as they were before this batch released any."""
        for day in sorted(self.added):
            self.write(day, self.loaded[day])

    def write_released(self) -> None:
        for day in sorted(self.removed):
            gone = self.removed[day]
            if gone:
                bucket = self.loaded[day]
                self.write(day, {k: v for k, v in bucket.items() if k not in gone})
