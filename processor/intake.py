"""Intake: a partition's messages decoded, validated and counted as read; the bad
ones dead-lettered (``churnwatch.deadletter``) with a reason.

A dead letter counted for the first time goes out through the batch's outbox
(processor/outbox.py), stored before the partition record that counts it, as alerts
do; one for a message read again is sent at once (at least once).

What is valid becomes an ``Arrival`` (processor/arrival.py), ordered by event time
for the alignment. Clock ticks move the partition's clock. Records of the repartition
topic, and input events whose key belongs to another partition, go through
processor/routing.py.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from processor import routing as routes
from processor.arrival import Arrival, forwarded
from processor.partition import PartitionState, processed
from processor.ports import Sender
from processor.routing import Router
from retention.apply import id_hash, money
from retention.partition import MONEY_BUDGET
from retention.periods import PeriodEngine
from retention.segments import Segments, last_open
from retention.timeutil import DAY, SECOND, Micros, to_micros
from schemas.deadletter import DEADLETTER_MAX_BYTES, DeadLetter
from schemas.decode import EventDecoder, Rejected
from schemas.events import Cancellation, ClockTick, Event, EventType, Purchase, Signup
from streams import routing, topics

log = logging.getLogger(__name__)

_JSON = msgspec.json.Encoder()
#: Events dated further ahead of the wall clock than this are rejected: one such
#: event would move the partition's watermark into the future and make every
#: later event look late.
MAX_FUTURE = DAY
INPUTS = len(topics.INPUT_TOPICS)

#: Per (family, label), how many: counted per batch, exported once at its end.
Counts = dict[tuple[str, str], int]

#: A dead letter to send: the dead-letter topic's partition (the message's own), the
#: message's topic and offset, and the record's key and value.
Letter = tuple[int, str, int, bytes | None, bytes]


@dataclass
class Read:
    """What a partition's batch brought in."""

    arrivals: list[Arrival] = field(default_factory=list)
    #: Input events to forward to their key's partition: (key, repartition value).
    forwards: list[tuple[bytes, bytes]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    #: Dead letters counted by this batch, for its outbox (``Intake.reject``).
    deadletters: list[Letter] = field(default_factory=list)


class Intake:
    """Decodes, validates and dead-letters the input of a worker's partitions."""

    def __init__(
        self,
        decoder: EventDecoder,
        deadletters: Sender,
        periods: PeriodEngine,
        dimensions: tuple[Segments, ...] = (),
    ) -> None:
        self.decoder = decoder
        self.deadletters = deadletters
        self.periods = periods
        self.dimensions = dimensions
        #: The dead letters of the batch being read (``read``'s ``Read.deadletters``).
        self.letters: list[Letter] = []

    def read(
        self, pstate: PartitionState, group: list[Any], router: Router | None, counts: Counts
    ) -> Read:
        """Every message of ``group`` counted as read (once), in order; ``router``:
        forward what belongs to another partition (None: routing off)."""
        partition = pstate.partition
        wall = time.time()
        future_limit = round(wall * SECOND) + MAX_FUTURE
        read = Read()
        self.letters = read.deadletters
        offsets = pstate.offsets
        for message in group:
            topic = message.topic
            offset = message.offset
            last = offsets.get(topic, -1)
            redelivered = offset <= last
            if offset > last + 1 and last >= 0:
                # Records between were deleted (retention), or, were they read later,
                # they would pass for redeliveries and never be counted.
                log.warning(
                    "%s[%d]: read offset %d after %d: %d records skipped",
                    topic, partition, offset, last, offset - last - 1,
                )  # fmt: skip
            processed(pstate, topic, offset)
            if topic == topics.CLOCK:
                self._tick(pstate, message, redelivered, counts)
                continue
            source: Any = message  # the event as read at its source
            watermark = pstate.watermark
            if topic == topics.REPARTITION:
                received = routes.receive(pstate, message, redelivered, counts, self.reject)
                if received is None:
                    continue  # another partition's progress, a repeat, or not a record
                source, watermark = received
            elif routes.home(router, message) is not None:
                routes.forward(pstate, message, redelivered, counts, read.forwards)
                continue
            elif not redelivered:
                pstate.consumed += 1
                counts["consumed", topics.INPUT_TOPICS[topic]] += 1
            arrival = self.arrival(
                pstate, source, (topic, offset), watermark, redelivered, counts, future_limit
            )
            if arrival is None:
                continue
            if source.timestamp:
                read.latencies.append(wall - source.timestamp)
            read.arrivals.append(arrival)
            if topic == topics.REPARTITION:
                pstate.received_at(arrival.order[0])
            else:
                pstate.observe(topic, arrival.order[0], INPUTS)
        return read

    def _tick(
        self, pstate: PartitionState, message: Any, redelivered: bool, counts: Counts
    ) -> None:
        tick = self.decoder.decode_tick(message.value)
        if not isinstance(tick, ClockTick):
            self.reject(message, tick, pstate, redelivered, counts)
            return
        moment = to_micros(tick.time)
        pstate.tick(moment)
        last = last_open(pstate.periods)
        self.periods.extend(pstate.periods, moment)
        opened = last_open(pstate.periods) != last  # segment books open periods with it
        for engine in self.dimensions if opened else ():
            kept = engine.book_of(pstate)
            if kept is not None:
                engine.extend(kept, moment)
        if not redelivered:
            pstate.ticks += 1
            counts["consumed", "tick"] += 1

    def arrival(
        self,
        pstate: PartitionState,
        message: Any,
        read: tuple[str, int],
        watermark: Micros | None,
        redelivered: bool,
        counts: Counts,
        future_limit: Micros,
    ) -> Arrival | None:
        """An input event validated, or None once dead-lettered. ``message`` is the
        event as read at its source, ``read`` the topic and offset this partition
        read it at (the repartition topic's, for a forwarded event), ``watermark`` the
        one to judge its lateness by."""
        kind: EventType = topics.INPUT_TOPICS[message.topic]
        decoded = self.decoder.decode(kind, message.key, message.value)
        if isinstance(decoded, Rejected):
            self.reject(message, decoded, pstate, redelivered, counts)
            return None
        at = to_micros(decoded.occurred_at)
        if at > future_limit:
            rejected = Rejected("future_time", "occurred_at is more than a day ahead")
            self.reject(message, rejected, pstate, redelivered, counts)
            return None
        if not redelivered:
            cost = money_of(decoded)
            if pstate.money + cost > MONEY_BUDGET:
                rejected = Rejected(
                    "amount_overflow",
                    "the partition's money sums would leave 64-bit integers",
                )
                self.reject(message, rejected, pstate, redelivered, counts)
                return None
            pstate.money += cost
        order = (at, id_hash(decoded.event_id), *read)
        return Arrival(order, decoded, message, watermark, redelivered)

    def reject(
        self,
        message: Any,
        rejected: Rejected,
        pstate: PartitionState,
        redelivered: bool,
        counts: Counts,
    ) -> None:
        # Re-sent on redelivery (at-least-once); consumers de-duplicate on
        # (topic, partition, offset). Counted only once, and then kept in the outbox
        # until the broker has it: sent straight away, it could be lost with the
        # worker after the state counting it was stored and the input committed
        # (3 of 496 lost in a SIGKILL chaos run, "producer buffer full" before).
        if redelivered:
            self.send_dead_letter(message, rejected)
            return
        pstate.deadletter += 1
        counts["rejected", rejected.reason] += 1
        key, value = dead_letter(message, rejected)
        self.letters.append((message.partition, message.topic, message.offset, key, value))

    def redeliver_dead_letter(self, message: Any, home: Callable[[Any], int | None]) -> None:
        """A message of a batch whose effects are stored: its dead letter, if it had
        one the decoder gave, may still have been lost with the worker. ``home``: the
        partition an input message is forwarded to, if any."""
        rejected: Event | ClockTick | Rejected
        if message.topic == topics.CLOCK:
            rejected = self.decoder.decode_tick(message.value)
        elif message.topic == topics.REPARTITION:
            record = routing.decode_record(message.value)
            if isinstance(record, routing.Progress):
                return
            if record is None:
                rejected = routing.NOT_ROUTED
            else:
                message = forwarded(message, record)
                rejected = self.decoder.decode(
                    topics.INPUT_TOPICS[message.topic], message.key, message.value
                )
        elif home(message) is not None:
            return  # forwarded, and dead-lettered (if at all) at its home
        else:
            rejected = self.decoder.decode(
                topics.INPUT_TOPICS[message.topic], message.key, message.value
            )
        if isinstance(rejected, Rejected):
            self.send_dead_letter(message, rejected)

    def send_dead_letter(self, message: Any, rejected: Rejected) -> None:
        key, value = dead_letter(message, rejected)
        self.deadletters.send_soon(key=key, value=value, partition=message.partition)


def dead_letter(message: Any, rejected: Rejected) -> tuple[bytes | None, bytes]:
    """The key and value of ``message``'s record on the dead-letter topic: a value (or
    key) over DEADLETTER_MAX_BYTES is carried as a prefix, flagged truncated, with its
    full size and SHA-256, so that the record fits the broker."""
    value = message.value or b""
    key = message.key
    truncated = len(value) > DEADLETTER_MAX_BYTES or len(key or b"") > DEADLETTER_MAX_BYTES
    record = DeadLetter(
        reason=rejected.reason,
        detail=rejected.detail,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=None if message.timestamp is None else round(message.timestamp * 1000),
        key_b64=None if key is None else _b64(key[:DEADLETTER_MAX_BYTES]),
        value_b64=_b64(value[:DEADLETTER_MAX_BYTES]),
        size=len(value),
        truncated=truncated,
        sha256=hashlib.sha256(value).hexdigest() if truncated else None,
        received_at=datetime.now(UTC),
    )
    if key is not None and len(key) > DEADLETTER_MAX_BYTES:
        key = key[:DEADLETTER_MAX_BYTES]
    return key, _JSON.encode(record)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def money_of(event: Event) -> int:
    """The money an event adds to sums kept in state (micro-units)."""
    if isinstance(event, Purchase):
        return money(event.amount) + money(event.cost_to_serve or 0.0)
    if isinstance(event, Signup | Cancellation):
        return money(event.monthly_fee or 0.0)
    return 0
