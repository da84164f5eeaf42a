"""Every access the customer agent makes to Faust's and aiokafka's internals, in one
place. Written against faust-streaming 0.15.3 and aiokafka 0.14 (pyproject.toml pins
both below their next minor version): re-read each of these against a new version.

- ``handling``: Faust's current event (``faust.streams._current_event``), which picks
  a table record's changelog partition;
- ``FaustOffsets``: the processor's view of the consumer (processor/ports.py): its
  assignment and generation, end offsets, the committed offsets Faust keeps
  (``Consumer._committed_offset``), and where a seek landed
  (``InlineConsumer.landed``);
- ``resume_from_state`` and ``seek_after_faust``: the seek to the recovered state's
  offsets, wrapped around Faust's own ``Consumer.perform_seek``;
- ``commit``: Faust's own commit (``Consumer._commit_offsets``);
- ``flush_writes``: the producer's buffer flushed and acknowledged.

The consumer itself (streams/consumer.py, ``InlineConsumer``: the inline hand-off,
seeks that take effect at once, the refused-commit fix) is a Faust consumer subclass
and stays there, marked the same way; this module only reads what it records.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import faust.topics
from faust.streams import _current_event
from faust.types import TP, EventT

from processor import ports
from processor.batch import CustomerBatch
from processor.partition import decode_partition, resume_offsets
from streams import topics
from streams.app import ChurnwatchApp
from streams.consumer import batches_per_take
from streams.partitions import assigned_partitions, partition_state_key

log = logging.getLogger(__name__)

#: How long a revocation waits for this worker's writes to reach the broker: well
#: under any rebalance timeout, and far more than a healthy broker needs.
REVOKE_FLUSH_SECONDS = 10.0


@contextmanager
def handling(event: EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event while writing tables.

    Faust picks a table record's changelog partition (and RocksDB shard) from the
    current event, which is unset while handling a batch from ``take_events``. All
    events of a group share a partition, so any of them is the right context.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class FaustOffsets:
    """The processor's view of a Faust app's consumer (``processor.ports.Offsets``)."""

    def __init__(self, app: ChurnwatchApp) -> None:
        self.app = app

    def writable(self) -> tuple[Collection[Any], int] | None:
        app = self.app
        try:
            assignment = cast(set[Any], app.consumer.assignment())
        except Exception:  # no running consumer: Faust's test context
            return None
        return assignment, app.consumer_generation_id

    def active(self) -> bool:
        try:
            self.app.consumer.assignment()
        except Exception:  # no consumer thread: Faust's test context
            return False
        return True

    def highwater(self, tp: ports.TP) -> int | None:
        return cast(int | None, self.app.consumer.highwater(TP(*tp)))

    def landed(self, tp: ports.TP) -> tuple[int, int] | None:
        landed = getattr(self.app.consumer, "landed", {})
        return cast(tuple[int, int] | None, landed.get(TP(*tp)))

    def forget_landing(self, tp: ports.TP) -> None:
        getattr(self.app.consumer, "landed", {}).pop(TP(*tp), None)

    def committed(self, tp: ports.TP) -> int | None:
        return cast(int | None, cast(Any, self.app.consumer)._committed_offset.get(TP(*tp)))

    def assigned(self) -> list[int]:
        return assigned_partitions(self.app)

    def rebalances(self) -> int:
        # Faust's ``on_rebalance_start`` counts it in the consumer thread's revocation
        # callback, synchronously, before the revocation reaches the main loop.
        return int(getattr(self.app, "rebalancing_count", 0))


def take_count(app: ChurnwatchApp, stream: Any) -> int:
    """How many of Faust's events make a batch of at most ``batch_max`` records: from
    Kafka each is a record batch of up to BATCH_RECORDS records (streams/consumer.py);
    on Faust's in-memory transport, or a test context's channel, one record."""
    batch_max = app.settings.batch_max
    batched = app.on_kafka() and bool(app.batched_topics)
    if not (batched and isinstance(stream.channel, faust.topics.Topic)):
        return batch_max
    return batches_per_take(batch_max)


def parts(app: ChurnwatchApp) -> ports.Parts:
    """A worker's processor parts, on its Faust app."""
    return ports.Parts(
        settings=app.settings,
        table=cast(Any, app.customers),
        decoder=app.decoder,
        metrics=app.metrics,
        lifecycle=app.lifecycle,
        alerts=cast(Any, app.alerts_topic),
        deadletters=cast(Any, app.deadletter_topic),
        offsets=FaustOffsets(app),
        sink=app.redis_sink,
        handling=handling,
    )


async def seek_back(app: ChurnwatchApp, batch: CustomerBatch) -> None:
    """Seek the topic partitions the processor asked to read again."""
    seeks, batch.positions.seeks = batch.positions.seeks, {}
    for tp, offset in seeks.items():
        try:
            await app.consumer.seek(TP(*tp), offset)
        except Exception as exc:  # revoked meanwhile: its new owner reads it
            log.warning("could not seek %s[%d] to %d: %r", tp.topic, tp.partition, offset, exc)


async def commit(app: ChurnwatchApp, offsets: Mapping[Any, int]) -> None:
    """Faust's own commit: flushes the producer first, and records the offsets as
    committed so that its next commit only moves them forward."""
    await cast(Any, app.consumer)._commit_offsets({TP(*tp): o for tp, o in offsets.items()})


async def resume_from_state(app: ChurnwatchApp) -> list[tuple[TP, int, int]]:
    """Seek each input partition this worker now owns back to where its recovered
    state says effects may be missing, when that is before the committed offset or
    nothing is committed.

    Faust commits an offset once the producer's buffer is flushed, but its flush
    gives up after 0.1 s without a message leaving the buffer; and a batch's
    customer records follow its partition record in the changelog. A worker killed
    at the wrong moment therefore leaves committed offsets ahead of the state a new
    owner recovers, and those events would never be read again: counts and state
    lost for good (tests/integration/test_chaos.py showed it). Re-reading from the
    state's own offsets redoes them; the partition record recognises them as
    redeliveries, so nothing is counted twice. The same holds for input a worker
    acknowledged without the state ever showing it (seen in the chaos test: the
    first thousand records of a partition committed by a worker that never wrote
    that partition's record). Where nothing is committed, the state's offset is also
    committed, so a partition with no newer input does not show a lag for ever.
    Returns what was moved.
    """
    consumer = app.consumer
    moved: list[tuple[TP, int, int]] = []
    unsettled: dict[TP, int] = {}
    for partition in assigned_partitions(app):
        raw = app.customers.get(partition_state_key(partition))
        known = {} if raw is None else resume_offsets(decode_partition(raw))
        for topic in topics.CONSUMED_TOPICS:
            # A topic the state has never seen: from the start of its log (an offset
            # below the log start is moved up to it by auto_offset_reset=earliest).
            offset = known.get(topic, 0)
            tp = TP(topic, partition)
            # Set by Faust's seek to the committed offsets on assignment.
            committed = cast(Any, consumer)._committed_offset.get(tp)
            if committed is None:
                # Nothing committed: Faust leaves the offset it last read there in
                # place and drops every message below it, so a first fetch whose
                # messages never reached the agent (the stream drops those of an
                # earlier generation) was lost for good (the first 1,000 feedback
                # records of a partition, in a chaos run). Read from the state's.
                await consumer.seek(tp, offset)
                if offset > 0:
                    # And say so: everything before it is stored. Otherwise, with no
                    # newer input, nothing is ever acknowledged on this partition and
                    # the group's lag stays at what a killed owner read but never
                    # committed (67 cancellations in a chaos run, lag never zero).
                    unsettled[tp] = offset
            elif offset < committed:
                await consumer.seek(tp, offset)
                moved.append((tp, committed, offset))
    if unsettled:
        await commit(app, unsettled)
    return moved


def seek_after_faust(app: ChurnwatchApp, on_sought: Callable[[], None]) -> None:
    """Run ``resume_from_state`` each time Faust has sought to the committed offsets.

    Faust signals ``on_rebalance_complete`` and only then seeks every assigned
    partition to its committed offset (``Consumer.perform_seek``, also called when a
    fetch comes while the flow is stopped); it also drops any message below the
    offset it last sought to. A seek made from the signal is therefore undone, so the
    consumer's ``perform_seek`` is wrapped, once, to seek back to the state's offsets
    after Faust's own seek, before the flow resumes.
    """
    consumer = cast(Any, app.consumer)
    if getattr(consumer, "_churnwatch_resumes", False):
        return
    faust_seek = consumer.perform_seek

    async def perform_seek() -> None:
        await faust_seek()
        moved = await resume_from_state(app)
        on_sought()
        for tp, committed, offset in moved:
            log.warning(
                "%s[%d]: committed offset %d is ahead of the recovered state; "
                "reading again from %d",
                tp.topic, tp.partition, committed, offset,
            )  # fmt: skip

    consumer.perform_seek = perform_seek
    consumer._churnwatch_resumes = True


async def flush_writes(app: ChurnwatchApp, timeout: float = REVOKE_FLUSH_SECONDS) -> bool:
    """Send everything in Faust's producer buffer and wait for the broker to have it.

    Faust flushes at revocation too, but its buffer flush returns as soon as 0.1 s
    pass without a message leaving the buffer, so changelog records can still be on
    their way when the partition is handed over, and land after its new owner read
    the changelog. Returns False if ``timeout`` ran out first.
    """
    producer = app.producer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while producer.buffer.size:
        if loop.time() > deadline:
            return False
        await producer.buffer.flush()
    try:
        await asyncio.wait_for(producer.flush(), max(0.1, deadline - loop.time()))
    except TimeoutError:
        return False
    return True
