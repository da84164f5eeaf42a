"""The customer agent: raw input bytes in, customer state and dead letters out.

It consumes the four input topics and the clock topic as one stream of raw bytes,
in batches (``take_events``) so that a customer touched by many events in a batch
is decoded and written once. Per batch and input partition it:

1. validates each message (bad ones go to ``churnwatch.deadletter`` with a reason);
2. aligns event time across topics: a consumer reads its topics at different
   paces (in a backlog, one fetch of the sparse feedback topic can span weeks of
   purchases still unread), so events later than the partition's *aligned* time,
   up to which every topic with input left has been read, wait in the table;
3. folds every aligned event, waiting or new, into customer state with
   ``retention.apply`` (idempotent) in (event time, id hash) order, assessing
   risk as it goes; ticks and the due-time index re-assess customers who went
   quiet. State was already order-free; alignment makes risk assessments and
   alerts independent of read order too, so a replay, a restart or a rebalance
   gives the same alerts;
4. writes the outbox and newly waiting events, then the partition's own record,
   then new due-time entries, then each touched customer, then what the batch took
   out of due and waiting buckets, to the ``customers`` table, within the context
   of an event of that partition so the changelog record lands in the partition
   the state belongs to.

Writing the partition record before the customers matters for at-least-once
processing: records of one changelog partition are stored in send order, so after
a crash the stored partition record (with its processed offsets and counters) is
never behind the customer states. Redelivered messages are then recognised by
offset and not counted twice, while their effect on state is deduplicated by
event id. Waiting events are stored before the record that marks their offsets
processed, and removed only after the customers they were applied to; a day
leaves the record's index of waiting or due days only in a batch after the one
that emptied its bucket, so a crash between the record and the customers leaves
the day's work findable. A crash may cut a batch's writes anywhere:
tests/agent/test_crash_points.py cuts them at random and right after the record.

Alerts go to another topic, so nothing orders them with the changelog: a worker
killed after a customer's new state was stored but before the alert it raised was
would lose the alert for good (the redelivered event is a duplicate for that state
and raises nothing). So a batch's alerts are also stored in the table, in outbox
records of the partition written before the partition record, and each deleted by a
later batch once the broker has acknowledged all of its alerts. A worker that takes a partition
over sends the partition's outbox again (at least once; a repeat is byte for byte the
same record, which consumers de-duplicate on ``(dedup_key, sequence)``).

An input event read on a partition other than the one its key hashes to (a producer
with another partitioner) is counted there as consumed and forwarded, and sent home
on ``churnwatch.repartition`` the same way: in outbox records written before the
partition record, sent after it, sent again by a new owner; its home recognises a
forward sent again by its source offset. Each partition also announces how far it
has read to the others, which align on it as on their own topics (streams/routing.py,
agents/routing.py, ``PartitionState.align``).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import logging
import operator
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import msgspec
from faust.streams import Stream, _current_event
from faust.types import TP, EventT, StreamT
from prometheus_client import Counter

from agents.routing import Router
from retention.alerts import Alert
from retention.apply import apply, id_hash, money
from retention.calendar import Calendar
from retention.partition import (
    MONEY_BUDGET,
    PartitionState,
    RiskSummary,
    decode_partition,
    encode_partition,
)
from retention.periods import PeriodEngine
from retention.state import CustomerState, decode_state, encode_state
from retention.timeutil import DAY, SECOND, Micros, from_micros, to_micros
from schemas.alert import AlertReason, AlertRecord, AlertSource
from schemas.deadletter import DEADLETTER_MAX_BYTES, DeadLetter
from schemas.decode import Rejected
from schemas.events import Cancellation, ClockTick, Event, EventType, Feedback, Purchase, Signup
from streams import routing, topics
from streams.app import ChurnwatchApp
from streams.partitions import (
    OUTBOX,
    assigned_partitions,
    due_bucket_key,
    outbox_key,
    outbox_prefix,
    partition_state_key,
    pending_bucket_key,
)

_JSON = msgspec.json.Encoder()
_BUCKET_ENCODER = msgspec.msgpack.Encoder()
_BUCKET_DECODER = msgspec.msgpack.Decoder(dict[bytes, int])
_OUTBOX = msgspec.msgpack.Decoder(list[tuple[bytes, bytes]])
_OUTBOX_ENCODER = msgspec.msgpack.Encoder()
#: Alerts per outbox record: about 0.5 MB, well under the producer's request size.
OUTBOX_CHUNK = 1000
#: Events dated further ahead of the wall clock than this are rejected: one such
#: event would move the partition's watermark into the future and make every
#: later event look late.
MAX_FUTURE = DAY
INPUTS = len(topics.INPUT_TOPICS)
log = logging.getLogger(__name__)
INPUT_NAMES = tuple(topics.INPUT_TOPICS)
_PENDING_ENCODER = msgspec.msgpack.Encoder()
_PENDING_DECODER = msgspec.msgpack.Decoder(
    list[tuple[str, int, int, int, bytes, bytes, int | None, float | None]]
)


class Gap(NamedTuple):
    """Offsets of a topic partition read past without being applied."""

    missing: int  # the next offset to apply
    seen: int  # the furthest offset read since
    first: float  # when it was first read past (monotonic seconds)
    asked: float | None  # when reading again from ``missing`` was last asked

    def past(self, offset: int) -> Gap:
        return self._replace(seen=max(self.seen, offset))


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


class CustomerBatch:
    """Processes one batch of input for the customer agent."""

    def __init__(self, app: ChurnwatchApp, router: Router | None = None) -> None:
        self.app = app
        #: Forwards input events read on a partition other than their key's home
        #: (agents/routing.py); None, or not active: every event stays where it is read.
        self.router = router
        self.routing = False
        self.table = app.customers
        self.decoder = app.decoder
        self.policy = app.settings.policy
        self.metrics = app.metrics
        self.deadletter = app.deadletter_topic
        settings = app.settings
        self.periods = PeriodEngine(Calendar(settings.period), settings.window, settings.lateness)
        self.lifecycle = app.lifecycle
        self.sink = app.redis_sink
        self.lateness = settings.lateness
        self.alerts_topic = app.alerts_topic
        #: Per partition, outbox records whose alerts were sent: (their send futures,
        #: the record's key). A batch of the partition deletes those acknowledged.
        self.unacked: dict[int, list[tuple[list[Any], bytes]]] = {}
        self.owned: set[int] = set()  # input partitions owned, as of the last rebalance
        #: Partitions revoked and the rebalance not complete yet: apply nothing.
        self.fenced = False
        #: Per partition, the offsets of the last partition record this worker wrote.
        self.written: dict[int, dict[str, int]] = {}
        #: Per partition, messages of a batch being redone, until all are read again.
        self.held: dict[int, list[EventT]] = {}
        #: When the last rebalance completed and the consumer was last sought to the
        #: state's offsets (monotonic seconds): diagnostics for a redo not read again.
        self.unfenced_at: float | None = None
        self.sought_at: float | None = None
        #: Topic partitions to read again from an offset (``seek_back``), and per
        #: partition when that was first asked since the last rebalance.
        self.seeks: dict[TP, int] = {}
        self.sought_back: dict[int, float] = {}
        #: Per topic partition, an offset missing before what was read (``_contiguous``).
        self.gaps: dict[TP, Gap] = {}
        #: Most messages held for a redo (``_bounded``).
        self.hold_max = HOLD_BATCHES * settings.batch_max

    def process(self, events: Sequence[EventT]) -> None:
        started = time.perf_counter()
        self.routing = self.router is not None and self.router.activate()
        by_partition: dict[int, list[EventT]] = defaultdict(list)
        writable = self._writable()
        stale = 0
        for event in events:
            message = event.message
            if writable is not None and (
                message.generation_id != writable[1] or message.tp not in writable[0]
            ):
                stale += 1
                continue
            by_partition[message.partition].append(event)
        if stale:
            # Read again by whoever owns the partition once the rebalance is over:
            # from the committed offset, or from the recovered state's offsets.
            log.warning("left %d events read before a rebalance to be read again", stale)
            self.metrics.stale.inc(stale)
        for partition, group in by_partition.items():
            with handling(group[-1]):
                self._process_partition(partition, group)
        self.metrics.batch_size.observe(len(events))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _writable(self) -> tuple[frozenset[Any] | set[Any], int] | None:
        """The topic partitions this worker may write state for now, and the consumer
        generation their messages must have been fetched in (None: no checks).

        Nothing fences a Kafka consumer that lost a partition from writing its table
        (no transactions), and a batch taken from the stream before a rebalance can
        reach the agent after it. Its changelog records would land after the new
        owner had recovered the partition: the new owner never reads them, but a later
        recovery does, and a customer's record older than the events the new owner
        applied would win. A partition kept through the rebalance is read again from
        the committed offset (or the state's, ``resume_from_state``), so an old
        message applied after the rebalance would be ahead of the ones read again,
        which would then look like redeliveries and never be counted. So no state is
        written between a revocation and the end of the rebalance (``fence`` and
        ``unfence``), from a message fetched in an earlier generation, nor for a
        partition this worker does not hold;
        ``flush_writes`` makes sure what was written before has landed when the
        partition is handed over.

        Faust's ``rebalancing`` flag is no fence: it stays set until recovery is done,
        after the consumer has been sought to where it must read again, so messages
        dropped under it would never be read again.
        """
        app = self.app
        try:
            assignment = cast(set[Any], app.consumer.assignment())
        except Exception:  # no running consumer: Faust's test context
            return None
        if self.fenced:
            return frozenset(), -1
        return assignment, app.consumer_generation_id

    def fence(self) -> None:
        """Apply nothing more until the rebalance is complete (``unfence``)."""
        self.fenced = True

    def unfence(self) -> None:
        """Called once the rebalance is complete, before Faust seeks and resumes the
        flow: what comes next is read in the new generation, from where it must be."""
        self.fenced = False
        self.unfenced_at = time.monotonic()

    def sought(self) -> None:
        """Called once the consumer has been sought to the recovered state's offsets."""
        self.sought_at = time.monotonic()

    def settled(self) -> dict[TP, int]:
        """Input partitions whose every record is applied and stored while the
        group's committed offset is behind: what may be committed for them.

        Faust commits what the agent acknowledged. A partition whose state already
        covers the whole log, with the consumer at its end, gets nothing more to
        acknowledge, so its committed offset can stay behind for good: a scale chaos
        run ended with feedback[0] applied to its end (7272) and committed at 4889,
        and its lag never reached zero. The state proves those records applied, so
        their offsets may be committed, as Faust would have.
        """
        if self.fenced:
            return {}
        consumer = cast(Any, self.app.consumer)
        settled: dict[TP, int] = {}
        for partition in assigned_partitions(self.app):
            if partition in self.held:
                continue  # a redo under way: its records are not all applied yet
            for topic, last in self._load_partition(partition).offsets.items():
                tp = TP(topic, partition)
                try:
                    high = consumer.highwater(tp)
                except Exception:  # no consumer thread, or not assigned any more
                    continue
                committed = consumer._committed_offset.get(tp)
                if high is not None and last + 1 == high and (committed or 0) < high:
                    settled[tp] = high
        return settled

    def announce(self) -> None:
        """Announce the read progress of every partition owned, where it changed: a
        partition that gets no batch (no input, no ticks) must not hold the others
        back for good. Its forwards were all sent with the batches that read them."""
        if self.router is None or self.fenced or not self.router.activate():
            return
        self.routing = True
        now = time.monotonic()
        for partition in assigned_partitions(self.app):
            pstate = self._load_partition(partition)
            self.router.announce(partition, pstate, self._idle(partition, pstate), now)

    async def seek_back(self) -> None:
        """Seek the topic partitions ``_redo`` asked to read again."""
        seeks, self.seeks = self.seeks, {}
        for tp, offset in seeks.items():
            try:
                await self.app.consumer.seek(tp, offset)
            except Exception as exc:  # revoked meanwhile: its new owner reads it
                log.warning("could not seek %s[%d] to %d: %r", tp.topic, tp.partition, offset, exc)

    def _load_partition(self, partition: int) -> PartitionState:
        raw = self.table.get(partition_state_key(partition))
        return PartitionState(partition=partition) if raw is None else decode_partition(raw)

    def _redo(self, pstate: PartitionState, group: list[EventT]) -> list[EventT] | None:
        """The messages to process now, or None (nothing to do yet).

        Messages at or before the partition record's ``previous`` offsets belong to
        batches whose effects are all stored (their customers precede this record
        in the changelog): nothing to do but send their dead letters again. Those
        between ``previous`` and ``offsets`` are the last batch, whose customers a
        crash may have cut off: redone, they must be applied together, as they were,
        with the waiting events that batch released, or a customer could meet its
        events in another order than the first time. So they are held until every
        one of them has been read again.
        """
        partition = pstate.partition
        held = self.held.pop(partition, None)
        if held:
            group = held + group
        offsets = pstate.offsets
        previous = pstate.previous
        out: list[EventT] = []
        read: dict[str, int] = {}
        beyond: set[str] = set()  # topics read past the last batch
        for event in group:
            message = event.message
            topic = message.topic
            offset = message.offset
            if offset <= offsets.get(topic, -1):
                if offset <= previous.get(topic, -1):
                    self._redeliver_dead_letter(message)
                    continue
                if offset > read.get(topic, -1):
                    read[topic] = offset
            else:
                beyond.add(topic)
            out.append(event)
        # A record this worker wrote itself had its customers written too (its table
        # holds them); one recovered from the changelog may not have: redo its batch
        # before anything else, even if what comes first is new input of other topics.
        if self.written.get(partition) != offsets:
            missing = [
                topic
                for topic, last in offsets.items()
                if last > previous.get(topic, -1) and read.get(topic, -1) < last
            ]
            if missing and not beyond.intersection(missing):
                self.held[partition] = self._bounded(partition, offsets, out)
                return None
            passed = sorted(beyond.intersection(missing))
            now = time.monotonic()
            if passed and now - self.sought_back.setdefault(partition, now) < SEEK_BACK_SECONDS:
                # Read past the batch without reading it again: right after a
                # rebalance, input Faust fetched while recovering tables, from where
                # this worker's consumer last stood on the partition, can reach the
                # agent before Faust's seek (85 purchases lost in a scale chaos run
                # when this was applied). Apply none of it: read those topics again
                # from the batch's start, and keep holding the rest. What Faust had
                # queued already comes first, so this may repeat a few times.
                for topic in passed:
                    self.seeks[TP(topic, partition)] = previous.get(topic, -1) + 1
                self.held[partition] = [e for e in out if e.message.topic not in passed]
                log.warning(
                    "partition %d: %s read past the last batch (%s) before it was read "
                    "again (read %s); reading again from its start",
                    partition, ", ".join(passed),
                    {t: (previous.get(t, -1), offsets[t]) for t in passed}, _ranges(group),
                )  # fmt: skip
                return None
            if missing:
                # Sought back for SEEK_BACK_SECONDS and still read past: holding on
                # would stall the partition for good; go on with what was read.
                log.warning(
                    "partition %d: the last batch of %s was not read again before newer "
                    "input; processing without redoing it (batch %s; read %s; written "
                    "by this worker %s; %s s after the rebalance, %s s after the seek)",
                    partition, ", ".join(sorted(missing)),
                    {t: (previous.get(t, -1), offsets[t]) for t in missing},
                    _ranges(group), self.written.get(partition),
                    _since(self.unfenced_at, now), _since(self.sought_at, now),
                )  # fmt: skip
        return self._contiguous(pstate, out) or None

    def _bounded(self, partition: int, offsets: dict[str, int], held: list[EventT]) -> list[EventT]:
        """``held`` cut down to ``hold_max`` messages, the rest read again later.

        While a redo waits for its batch to be read again, other input keeps coming;
        held without bound it became one batch of 18,600 messages in a scale chaos
        run, whose processing kept the worker from the rebalance under way: it was
        expelled from the group and its writes landed after the partition's new owner
        had recovered it, so the state lost 4,308 waiting events. The redo's own
        messages (at or before the record's offsets) are all kept; of newer input,
        each topic keeps what came first, up to the bound, and is sought back to the
        first message it dropped.
        """
        if len(held) <= self.hold_max:
            return held
        kept: list[EventT] = []
        dropped: dict[str, int] = {}
        for event in held:
            message = event.message
            topic = message.topic
            redone = message.offset <= offsets.get(topic, -1)
            if redone or (topic not in dropped and len(kept) < self.hold_max):
                kept.append(event)
            elif topic not in dropped:
                dropped[topic] = message.offset
        for topic, offset in dropped.items():
            self.seeks[TP(topic, partition)] = offset
        log.info(
            "partition %d: holding %d messages for a redo, %d dropped to be read again",
            partition, len(kept), len(held) - len(kept),
        )  # fmt: skip
        return kept

    def _contiguous(self, pstate: PartitionState, group: list[EventT]) -> list[EventT]:
        """``group`` without, per topic, anything after a gap in its offsets; the
        topic is read again from the first missing offset (``seek_back``).

        The partition record holds the last offset applied per topic, so a message
        further on than the next one means records that never reached the agent:
        Faust counts as read what its stream skips during a rebalance and any jump
        in a fetch, and what a stale fetch brought in can come ahead of a seek.
        Applied, the gap's records would later look like redeliveries and never be
        counted (one purchase lost in a scale chaos run: purchases[3] read 8597,
        then 8599). A topic the state has never seen starts at offset 0, as
        ``resume_from_state`` seeks it: taking its first message read for its start
        lost the first 47 signups of a partition in a SIGKILL chaos run.

        Offsets the log does not hold (transaction markers, records deleted by
        retention) are read past once the consumer shows it: the first record it
        fetched after seeking to the gap lies beyond it (``InlineConsumer.landed``).
        Reading past on weaker evidence lost records in chaos runs: once the agent
        came back past the gap without the missing record (1,629 purchases; a seek
        had not taken effect, or another had moved the consumer), and once after a
        fixed 30 s. A gap nothing closes is still read past after GAP_SECONDS, with
        an error: a seek that never takes effect must not stall the partition for
        good.
        """
        partition = pstate.partition
        offsets = pstate.offsets
        following: dict[str, int] = {}
        cut: set[str] = set()
        out: list[EventT] = []
        now = time.monotonic()
        for event in group:
            message = event.message
            topic = message.topic
            offset = message.offset
            if topic in cut:
                tp = TP(topic, partition)
                self.gaps[tp] = self.gaps[tp].past(offset)
                continue
            expected = following.get(topic)
            if expected is None:
                expected = offsets.get(topic, -1) + 1
            if offset > expected:
                tp = TP(topic, partition)
                resumes = self._log_resumes(tp, expected)
                if resumes is not None:
                    log.warning(
                        "%s[%d]: offsets %d..%d are not in the log; going on from %d",
                        topic, partition, expected, resumes - 1, resumes,
                    )  # fmt: skip
                    self.gaps.pop(tp, None)
                    expected = resumes
            if offset > expected:
                tp = TP(topic, partition)
                gap = self.gaps.get(tp)
                if gap is None or gap.missing != expected:
                    self.gaps[tp] = Gap(expected, offset, now, None)
                    cut.add(topic)
                    continue
                if now - gap.first >= GAP_SECONDS:
                    del self.gaps[tp]
                    log.error(
                        "%s[%d]: offset %d not read again in %.0f s of seeking back; "
                        "going on from %d",
                        topic, partition, expected, GAP_SECONDS, offset,
                    )  # fmt: skip
                else:
                    self.gaps[tp] = gap.past(offset)
                    cut.add(topic)
                    continue
            following[topic] = max(expected, offset + 1)
            out.append(event)
        for topic in cut:
            tp = TP(topic, partition)
            gap = self.gaps[tp]
            if gap.asked is None or now - gap.asked >= GAP_SEEK_EVERY:
                if gap.asked is None:
                    log.warning(
                        "%s[%d]: read offset %d while %d is the next to apply; "
                        "reading again from %d",
                        topic, partition, gap.seen, gap.missing, gap.missing,
                    )  # fmt: skip
                self.seeks[tp] = gap.missing
                self.gaps[tp] = gap._replace(asked=now)
        for topic in following.keys() - cut:
            self.gaps.pop(TP(topic, partition), None)
        return out

    def _log_resumes(self, tp: TP, missing: int) -> int | None:
        """Where the log resumes after ``missing``, if the consumer sought ``tp`` to
        ``missing`` and fetched a later record first; None if it has not shown that."""
        landed = getattr(self.app.consumer, "landed", {}).get(tp)
        if landed is None or landed[0] != missing or landed[1] <= missing:
            return None
        return int(landed[1])

    def _redeliver_dead_letter(self, message: Any) -> None:
        """A message of a batch whose effects are stored: its dead letter, if it had
        one the decoder gave, may still have been lost with the worker."""
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
                message = _forwarded(message, record)
                rejected = self.decoder.decode(
                    topics.INPUT_TOPICS[message.topic], message.key, message.value
                )
        elif self._home(message) is not None:
            return  # forwarded, and dead-lettered (if at all) at its home
        else:
            rejected = self.decoder.decode(
                topics.INPUT_TOPICS[message.topic], message.key, message.value
            )
        if isinstance(rejected, Rejected):
            self._send_dead_letter(message, rejected)

    def _idle(self, partition: int, pstate: PartitionState) -> set[str]:
        """Input topics read to their end on ``partition``: they hold nothing back.

        A partition whose end offset the consumer does not know yet (nothing fetched
        since it was assigned) holds back: taken for read to its end, right after a
        rebalance, it let the events of the topics fetched first be applied ahead of
        its own, and a batch redone after a crash raised an alert with other reasons
        than the first time (tests/integration/test_chaos.py). With no consumer
        thread at all, as under Faust's test context, every topic counts as read.
        """
        idle = set()
        consumer = self.app.consumer
        for topic in INPUT_NAMES:
            try:
                high = consumer.highwater(TP(topic, partition))
            except Exception:  # no consumer thread (test context)
                idle.add(topic)
                continue
            if high is not None and pstate.offsets.get(topic, -1) + 1 >= high:
                idle.add(topic)
        return idle

    def _process_partition(self, partition: int, group: list[EventT]) -> None:
        """Read the batch, then apply what is aligned in event-time order.

        Events are first validated and counted as consumed; those later than the
        partition's aligned time (``PartitionState.align``) wait in the table; then
        every aligned event, waiting or new, is applied in (event time, id hash)
        order. A customer's events therefore meet the state in the order they
        happened, whichever input topic the consumer read further ahead, and so do
        risk assessments and alerts.
        """
        table = self.table
        metrics = self.metrics
        pstate = self._load_partition(partition)
        redo = self._redo(pstate, group)
        if redo is None:
            return  # nothing new, or the redo of the last batch is not complete: held
        group = redo
        # Where a new owner resumes if this batch's customers are cut off: before
        # its first message (a redone batch keeps the start of the batch it redoes).
        previous = dict(pstate.offsets)
        for event in group:
            message = event.message
            if message.offset <= previous.get(message.topic, -1):
                previous[message.topic] = message.offset - 1
        pstate.previous = previous
        periods = self.periods
        book = pstate.periods
        wall = time.time()
        future_limit = round(wall * SECOND) + MAX_FUTURE
        counts: dict[tuple[str, str], int] = defaultdict(int)
        latencies: list[float] = []
        arrivals: list[Arrival] = []
        forwards: list[tuple[bytes, bytes]] = []
        offsets = pstate.offsets
        for event in group:
            message = event.message
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
            pstate.processed(topic, offset)
            if topic == topics.CLOCK:
                tick = self.decoder.decode_tick(message.value)
                if isinstance(tick, ClockTick):
                    moment = to_micros(tick.time)
                    pstate.tick(moment)
                    periods.extend(book, moment)
                    if not redelivered:
                        pstate.ticks += 1
                        counts["consumed", "tick"] += 1
                else:
                    self._reject(message, tick, pstate, redelivered, counts)
                continue
            source: Any = message  # the event as read at its source
            watermark = pstate.watermark
            if topic == topics.REPARTITION:
                routed = self._routed(pstate, message, redelivered, counts)
                if routed is None:
                    continue  # another partition's progress, a repeat, or not a record
                source, watermark = routed
            elif self._home(message) is not None:
                self._forward(pstate, message, redelivered, counts, forwards)
                continue
            elif not redelivered:
                pstate.consumed += 1
                counts["consumed", topics.INPUT_TOPICS[topic]] += 1
            arrival = self._arrival(
                pstate, source, (topic, offset), watermark, redelivered, counts, future_limit
            )
            if arrival is None:
                continue
            if source.timestamp:
                latencies.append(wall - source.timestamp)
            arrivals.append(arrival)
            if topic == topics.REPARTITION:
                pstate.received_at(arrival.order[0])
            else:
                pstate.observe(topic, arrival.order[0], INPUTS)
        idle = self._idle(partition, pstate)
        router = self.router if self.routing else None
        peers = () if router is None else router.peers(partition)
        aligned = pstate.align(INPUT_NAMES, idle, self.lateness, peers)
        waiting = PendingBuckets(table, partition, pstate)
        ready: list[Arrival] = []
        for arrival in arrivals:
            if aligned is not None and arrival.order[0] <= aligned:
                ready.append(arrival)
            elif not arrival.redelivered:
                waiting.add(arrival)
            # else: a redelivered event later than ``aligned`` is waiting already
            # (the bucket is written before the partition record that knows its offset)
        if aligned is not None:
            released = waiting.release(aligned, self.decoder)
            if released:
                # A redelivered message that waited when first read may be released
                # in this very batch: apply the waiting copy alone, which knows
                # whether it was counted (applied twice, the second copy would count
                # as a duplicate of the first).
                waited = {arrival.order[2:]: arrival for arrival in released}
                for arrival in ready:
                    copy = waited.get(arrival.order[2:])
                    if copy is not None and not arrival.redelivered and not copy.redelivered:
                        # New to the partition record yet waiting already: stored by
                        # a batch cut off before its partition record, and never
                        # counted as waiting, though its release just uncounted it.
                        pstate.pending += 1
                ready = [a for a in ready if a.order[2:] not in waited]
                ready.extend(released)
        ready.sort(key=_ORDER)
        self._apply_ready(pstate, ready, counts, waiting, group[-1].message, forwards)
        if router is not None:
            # After this batch's forwards: what it announces was all sent before.
            router.announce(partition, pstate, idle, time.monotonic())
        families: dict[str, dict[str, Counter]] = {
            "consumed": metrics.consumed,
            "valid": metrics.valid,
            "duplicate": metrics.duplicates,
            "late": metrics.late,
            "rejected": metrics.rejected,
            "misrouted": metrics.misrouted,
        }
        for (family, label), n in counts.items():
            families[family][label].inc(n)
        observe = metrics.latency.observe
        for latency in latencies:
            observe(latency)

    def _arrival(
        self,
        pstate: PartitionState,
        message: Any,
        read: tuple[str, int],
        watermark: Micros | None,
        redelivered: bool,
        counts: dict[tuple[str, str], int],
        future_limit: Micros,
    ) -> Arrival | None:
        """An input event validated, or None once dead-lettered. ``message`` is the
        event as read at its source, ``read`` the topic and offset this partition
        read it at (the repartition topic's, for a forwarded event), ``watermark`` the
        one to judge its lateness by."""
        kind: EventType = topics.INPUT_TOPICS[message.topic]
        decoded = self.decoder.decode(kind, message.key, message.value)
        if isinstance(decoded, Rejected):
            self._reject(message, decoded, pstate, redelivered, counts)
            return None
        at = to_micros(decoded.occurred_at)
        if at > future_limit:
            rejected = Rejected("future_time", "occurred_at is more than a day ahead")
            self._reject(message, rejected, pstate, redelivered, counts)
            return None
        if not redelivered:
            cost = _money_of(decoded)
            if pstate.money + cost > MONEY_BUDGET:
                rejected = Rejected(
                    "amount_overflow",
                    "the partition's money sums would leave 64-bit integers",
                )
                self._reject(message, rejected, pstate, redelivered, counts)
                return None
            pstate.money += cost
        order = (at, id_hash(decoded.event_id), *read)
        return Arrival(order, decoded, message, watermark, redelivered)

    def _home(self, message: Any) -> int | None:
        """The partition an input message belongs to, if routing is on and that is
        not the one it was read on."""
        if not self.routing or self.router is None or message.topic not in topics.INPUT_TOPICS:
            return None
        return self.router.home(message)

    def _forward(
        self,
        pstate: PartitionState,
        message: Any,
        redelivered: bool,
        counts: dict[tuple[str, str], int],
        forwards: list[tuple[bytes, bytes]],
    ) -> None:
        """An input event whose key belongs to another partition: counted here as
        consumed and forwarded, sent there by ``_apply_ready`` (and counted there).
        A redelivered one was in the outbox of the batch that first read it."""
        if redelivered:
            return
        pstate.consumed += 1
        pstate.forwarded += 1
        counts["consumed", topics.INPUT_TOPICS[message.topic]] += 1
        counts["misrouted", message.topic] += 1
        forwards.append((message.key, routing.forward_value(message, pstate.watermark)))

    def _routed(
        self,
        pstate: PartitionState,
        message: Any,
        redelivered: bool,
        counts: dict[tuple[str, str], int],
    ) -> tuple[_Source, Micros | None] | None:
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
            self._reject(message, routing.NOT_ROUTED, pstate, redelivered, counts)
            return None
        if not redelivered:
            source = f"{record.topic}/{record.partition}"
            if record.offset <= pstate.routed.get(source, -1):
                return None  # sent again by a new owner of the source: counted once
            pstate.routed[source] = record.offset
            pstate.received += 1
        watermark = pstate.watermark
        if watermark is None or record.watermark is None:
            return _forwarded(message, record), None  # as its source judged it: on time
        return _forwarded(message, record), min(watermark, record.watermark)

    def _apply_ready(
        self,
        pstate: PartitionState,
        ready: list[Arrival],
        counts: dict[tuple[str, str], int],
        waiting: PendingBuckets,
        last: Any,
        forwards: list[tuple[bytes, bytes]],
    ) -> None:
        table = self.table
        metrics = self.metrics
        periods = self.periods
        book = pstate.periods
        partition = pstate.partition
        touched: dict[bytes, CustomerState] = {}
        tiers_before: dict[bytes, RiskSummary | None] = {}
        lifecycle = self.lifecycle
        alerts: list[tuple[Alert, Any]] = []
        assessed = 0
        for arrival in ready:
            message = arrival.message
            decoded = arrival.event
            redelivered = arrival.redelivered
            kind = topics.INPUT_TOPICS[message.topic]
            at = arrival.order[0]
            key = message.key
            assert key is not None  # the decoder rejects keyless messages
            state = touched.get(key)
            if state is None:
                raw = table.get(key)
                if raw is None:
                    if not redelivered:
                        pstate.customers += 1
                else:
                    state = decode_state(raw)
            if key not in tiers_before:
                tiers_before[key] = _summary(state)
            if state is not None and state.risk is not None:
                # Time passed since the customer's last assessment: transitions due
                # before this event happen first, with the state they were due in.
                for alert in lifecycle.catch_up(state, at):
                    alerts.append((alert, message))
            if not redelivered:
                periods.extend(book, at)
                before = periods.snapshot(book, state, isinstance(decoded, Purchase | Signup))
            applied = apply(
                state, decoded, arrival.watermark or at, self.policy, at=at, tie=arrival.order[1]
            )
            touched[key] = applied.state
            if not applied.duplicate:
                current = applied.state
                moment = at if current.risk is None else max(at, current.risk.at)
                change = lifecycle.step(current, moment)
                assessed += 1
                if change is not None:
                    alerts.append((change, message))
            # Period figures, like counters, take each message once: a redelivered one
            # was counted in the partition record that is stored before its customers.
            if not redelivered and not applied.duplicate:
                periods.update(book, before, applied.state, at)
                if isinstance(decoded, Feedback):
                    periods.feedback(book, at, decoded.kind, decoded.score, arrival.watermark or at)
            if redelivered:
                continue
            if applied.duplicate:
                pstate.duplicates += 1
                counts["duplicate", kind] += 1
            else:
                pstate.valid += 1
                counts["valid", kind] += 1
                if applied.late:
                    pstate.late += 1
                    counts["late", kind] += 1
        settled = pstate.settled
        periods.close(book, settled)
        buckets = DueBuckets(table, partition)
        for key, state in touched.items():
            self._schedule(buckets, pstate, key, state)
        if settled is not None:
            self._process_due(
                buckets,
                pstate,
                settled - self.lateness,
                touched,
                tiers_before,
                alerts,
                last,
            )
        for key, state in touched.items():
            pstate.move_risk(tiers_before.get(key), _summary(state))
        # The batch's alerts, kept in outbox records until the broker has them: a
        # record per OUTBOX_CHUNK alerts (a tick can raise tens of thousands at once,
        # more than one changelog record may hold). Forwards are kept the same way.
        records = [self._alert_record(alert, source) for alert, source in alerts]
        outboxes = [
            (
                outbox_key(partition, records[i][0]),
                [(key, value) for _, key, value in records[i : i + OUTBOX_CHUNK]],
            )
            for i in range(0, len(records), OUTBOX_CHUNK)
        ]
        first = pstate.forwarded - len(forwards)  # forwards are counted as read
        outboxes.extend(routing.forward_outboxes(partition, first, forwards))
        # Outbox records of earlier batches whose alerts the broker has acknowledged
        # are deleted at the end; the partition record lists the others and this
        # batch's (a crash before the deletion leaves a record that is not listed,
        # but all of its alerts were delivered).
        unacked: list[tuple[list[Any], bytes]] = []
        delivered: list[bytes] = []
        for futures, stored in self.unacked.get(partition, []):
            if all(_acked(future) for future in futures):
                delivered.append(stored)
            else:
                unacked.append((futures, stored))
        pstate.outbox = [stored for _, stored in unacked] + [stored for stored, _ in outboxes]
        # Waiting events and the outbox first, then the partition record, then the
        # due times the new states need, then customers, then what this batch took
        # out of buckets: see the module docstring.
        for stored, chunk in outboxes:
            table[stored] = _OUTBOX_ENCODER.encode(chunk)
        waiting.write_added()
        table[partition_state_key(partition)] = encode_partition(pstate)
        self.written[partition] = dict(pstate.offsets)
        buckets.write_added()
        for key, state in touched.items():
            table[key] = encode_state(state)
        buckets.write_removed()
        waiting.write_released()
        if self.sink is not None:
            for state in touched.values():
                self.sink.offer(state)
        for stored in delivered:
            table.pop(stored, None)
        for stored, chunk in outboxes:
            send = self._sender(partition, stored)
            unacked.append(([send(key, value) for key, value in chunk], stored))
        self.unacked[partition] = unacked
        # Counted per batch: a label lookup per alert costs more than the count.
        by_status: dict[tuple[str, str], int] = defaultdict(int)
        by_reason: dict[tuple[str, str], int] = defaultdict(int)
        for alert, _ in alerts:
            by_status[alert.status, alert.tier] += 1
            for reason in alert.reasons:
                by_reason[alert.status, reason.code] += 1
        for labels, n in by_status.items():
            metrics.alerts.labels(*labels).inc(n)
        for labels, n in by_reason.items():
            metrics.alert_reasons.labels(*labels).inc(n)
        if assessed:
            metrics.risk_assessments["event"].inc(assessed)

    def _send_alert(self, partition: int, key: bytes, value: bytes) -> Any:
        return self.alerts_topic.send_soon(key=key, value=value, partition=partition)

    def _sender(self, partition: int, stored: bytes) -> Callable[[bytes, bytes], Any]:
        """How to send the records of the outbox record ``stored`` of ``partition``."""
        if not routing.is_forward_outbox(stored):
            return lambda key, value: self._send_alert(partition, key, value)
        if self.router is None:  # cannot happen: only a router forwards
            raise RuntimeError(f"forwards in {stored!r} and no router to send them")
        return self.router.send

    def take_over(self, owned: Sequence[int]) -> int:
        """After a rebalance: send again the outbox of each partition this worker did
        not own before (``owned``: the partitions it owns now), whose alerts the
        previous owner may not have delivered. Returns how many were sent.

        The partition record lists its outbox records; a record written before that
        list existed makes this one pass over the table's keys."""
        before, self.owned = self.owned, set(owned)
        # Every partition is read again from its committed (or the state's) offset.
        self.held.clear()
        self.seeks.clear()
        self.sought_back.clear()
        self.gaps.clear()
        for partition in set(self.unacked) - self.owned:
            del self.unacked[partition]  # the new owner sends them again
        # Partitions owned before: this worker's producer is delivering their alerts.
        new = self.owned - before
        if self.router is not None:
            self.router.forget(before ^ self.owned)  # announced afresh by their owners
        for partition in new:
            self.written.pop(partition, None)  # its record now comes from the changelog
        if not new:
            return 0
        found: dict[int, list[tuple[bytes, bytes]]] = {partition: [] for partition in new}
        unlisted: dict[bytes, int] = {}
        for partition in new:
            listed = self._load_partition(partition).outbox
            if listed is None:
                unlisted[outbox_prefix(partition)] = partition
                continue
            for stored in listed:
                raw = self.table.get(stored)
                if raw is not None:
                    found[partition].append((stored, raw))
        if unlisted:
            for stored, raw in self.table.items():
                if stored.startswith(OUTBOX):
                    owner = unlisted.get(stored[: stored.index(b"/", len(OUTBOX)) + 1])
                    if owner is not None:
                        found[owner].append((stored, raw))
        resent = 0
        for partition, entries in found.items():
            self.unacked[partition] = []
            for stored, raw in sorted(entries):
                records = _OUTBOX.decode(raw)
                send = self._sender(partition, stored)
                sent = [send(key, value) for key, value in records]
                self.unacked[partition].append((sent, stored))
                resent += len(records)
        return resent

    def _schedule(
        self, buckets: DueBuckets, pstate: PartitionState, key: bytes, state: CustomerState
    ) -> None:
        due = self.lifecycle.schedule(state)
        if due is not None:
            day = due // DAY
            buckets.add(day, key, due)
            _note_day(pstate.due_days, day)

    def _process_due(
        self,
        buckets: DueBuckets,
        pstate: PartitionState,
        limit: Micros,
        touched: dict[bytes, CustomerState],
        tiers_before: dict[bytes, RiskSummary | None],
        alerts: list[tuple[Alert, Any]],
        source: Any,
    ) -> None:
        """Re-assess every customer due by ``limit`` (the watermark less the lateness):
        the customers who stopped doing anything. Cost: the customers due, no more."""
        lifecycle = self.lifecycle
        days = pstate.due_days
        index = 0
        while index < len(days) and days[index] <= limit // DAY:
            day = days[index]
            bucket = buckets.get(day)
            if not bucket:
                # Emptied by an earlier batch (see PendingBuckets.release).
                days.pop(index)
                continue
            for key, due in sorted(bucket.items(), key=lambda item: (item[1], item[0])):
                if due > limit:
                    continue
                buckets.remove(day, key)
                state = touched.get(key)
                if state is None:
                    raw = self.table.get(key)
                    state = None if raw is None else decode_state(raw)
                if state is None or state.risk is None or state.risk.due != due:
                    continue  # superseded by a later event: rescheduled then
                if key not in tiers_before:
                    tiers_before[key] = _summary(state)
                for alert in lifecycle.catch_up(state, limit):
                    alerts.append((alert, source))
                self.metrics.risk_assessments["due"].inc()
                touched[key] = state
                self._schedule(buckets, pstate, key, state)
            if bucket:
                break  # the rest of this day is not due yet
            # Leaves the index in a later batch, once the customers re-assessed here
            # and the emptied bucket are stored (see PendingBuckets.release).
            index += 1

    def _alert_record(self, alert: Alert, source: Any) -> tuple[str, bytes, bytes]:
        """The id, and the key and value of the record on the alerts topic."""
        event_id = None
        if source.topic != topics.CLOCK and source.value:
            event_id = _event_id(source.value)
        record = AlertRecord(
            alert_id=f"{alert.dedup_key}-{alert.sequence}",
            dedup_key=alert.dedup_key,
            sequence=alert.sequence,
            status=alert.status,
            customer_id=alert.customer_id,
            tier=alert.tier,
            risk_score=alert.risk_score,
            reasons=[
                AlertReason(code=r.code, value=r.value, threshold=r.threshold)
                for r in alert.reasons
            ],
            value_at_risk=alert.value_at_risk,
            clv=alert.clv,
            segment=alert.segment,
            starts_at=from_micros(alert.starts_at),
            at=from_micros(alert.at),
            observed_at=datetime.now(UTC),
            source=AlertSource(
                topic=source.topic,
                partition=source.partition,
                offset=source.offset,
                event_id=event_id,
            ),
        )
        return record.alert_id, alert.customer_id.encode(), _JSON.encode(record)

    def _reject(
        self,
        message: Any,
        rejected: Rejected,
        pstate: PartitionState,
        redelivered: bool,
        counts: dict[tuple[str, str], int],
    ) -> None:
        # Re-sent on redelivery (at-least-once); consumers de-duplicate on
        # (topic, partition, offset). Counted only once.
        if not redelivered:
            pstate.deadletter += 1
            counts["rejected", rejected.reason] += 1
        self._send_dead_letter(message, rejected)

    def _send_dead_letter(self, message: Any, rejected: Rejected) -> None:
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
        self.deadletter.send_soon(key=key, value=_JSON.encode(record), partition=message.partition)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class _EventId(msgspec.Struct):
    event_id: str | None = None


_EVENT_ID = msgspec.json.Decoder(_EventId)


def _event_id(value: bytes) -> str | None:
    # The source of an alert found by the due-time index is the batch's last message,
    # which may be one the decoder rejected: nested too deep for msgspec, for one.
    try:
        return _EVENT_ID.decode(value).event_id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def _acked(future: Any) -> bool:
    """Whether the broker acknowledged a sent record (None: sent by a test double)."""
    return future is None or (
        future.done() and not future.cancelled() and future.exception() is None
    )


def _note_day(days: list[int], day: int) -> None:
    """Add ``day`` to the sorted day index of a partition's buckets, once."""
    index = bisect.bisect_left(days, day)
    if index == len(days) or days[index] != day:
        days.insert(index, day)


def _money_of(event: Event) -> int:
    """The money an event adds to sums kept in state (micro-units)."""
    if isinstance(event, Purchase):
        return money(event.amount) + money(event.cost_to_serve or 0.0)
    if isinstance(event, Signup | Cancellation):
        return money(event.monthly_fee or 0.0)
    return 0


def _summary(state: CustomerState | None) -> RiskSummary | None:
    if state is None or state.risk is None:
        return None
    mark = state.risk
    bucket = "churned" if mark.status == "churned" else mark.tier
    return (bucket, mark.value_at_risk, mark.clv)


#: (event time, id hash, topic, offset): the order events are applied in.
Order = tuple[int, int, str, int]


_ORDER = operator.itemgetter(0)


class Arrival(NamedTuple):
    """A valid input event read in this batch or released from waiting."""

    order: Order
    event: Event
    message: Any  # the Kafka message, or a _Source for a released event
    watermark: Micros | None  # the partition's watermark when it was read
    redelivered: bool


class _Source(NamedTuple):
    """What ``_alert_record`` and ``_apply_ready`` read of a message, for released
    and forwarded events."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: float | None


def _forwarded(message: Any, record: routing.Forward) -> _Source:
    """A forwarded event as it was read at its source: its topic (hence its type),
    partition, offset, timestamp and value; keyed as the repartition record is."""
    return _Source(
        record.topic, record.partition, record.offset, message.key, record.value, record.timestamp
    )


class PendingBuckets:
    """Events waiting for the partition's aligned time, per UTC day of event time.

    Stored in the customers table (same changelog partition as the partition
    record), keyed by (topic, offset) so that writing one again is harmless. Write
    order makes a crash safe: new waiting events are stored before the partition
    record that marks their offsets processed; emptied buckets are written after
    the customers their events were applied to, and the partition record's
    ``released`` key tells a later batch which stored events it already counted.
    """

    def __init__(self, table: Any, partition: int, pstate: PartitionState) -> None:
        self.table = table
        self.partition = partition
        self.pstate = pstate
        self.loaded: dict[int, dict[tuple[str, int], tuple[Any, ...]]] = {}
        self.added: set[int] = set()
        self.removed: dict[int, set[tuple[str, int]]] = {}

    def _get(self, day: int) -> dict[tuple[str, int], tuple[Any, ...]]:
        bucket = self.loaded.get(day)
        if bucket is None:
            raw = self.table.get(pending_bucket_key(self.partition, day))
            entries = [] if raw is None else _PENDING_DECODER.decode(raw)
            bucket = {(e[0], e[1]): e for e in entries}
            self.loaded[day] = bucket
        return bucket

    def add(self, arrival: Arrival) -> None:
        at, tie, topic, offset = arrival.order
        message = arrival.message
        day = at // DAY
        bucket = self._get(day)
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
        _note_day(self.pstate.pending_days, day)

    def release(self, aligned: Micros, decoder: Any) -> list[Arrival]:
        """Every waiting event at or before ``aligned``, decoded again (the bytes
        passed validation when they were read; the decoder is deterministic)."""
        pstate = self.pstate
        done = pstate.released
        out: list[Arrival] = []
        days = pstate.pending_days
        index = 0
        while index < len(days) and days[index] <= aligned // DAY:
            day = days[index]
            bucket = self._get(day)
            if not bucket:
                # Emptied by an earlier batch, whose write of the empty bucket precedes
                # this batch's partition record: the day can leave the index now.
                days.pop(index)
                continue
            gone = self.removed.setdefault(day, set())
            for ident, entry in bucket.items():
                topic, offset, at, tie, key, value, watermark, timestamp = entry
                if at > aligned or ident in gone:
                    continue
                gone.add(ident)
                order = (at, tie, topic, offset)
                counted = done is not None and order <= done
                if not counted:
                    pstate.pending -= 1
                    if pstate.released is None or order > pstate.released:
                        pstate.released = order
                source = _Source(topic, self.partition, offset, key, value, timestamp)
                if topic == topics.REPARTITION:
                    record = routing.decode_record(value)
                    assert isinstance(record, routing.Forward)  # as it was when stored
                    source = _forwarded(source, record)
                event = decoder.decode(topics.INPUT_TOPICS[source.topic], key, source.value)
                out.append(Arrival(order, event, source, watermark, counted))
            if len(gone) < len(bucket):
                break  # the rest of this day is still waiting
            # Emptied now, but the day stays in the index until a later batch: the
            # partition record is written before the customers these events reach,
            # and a crash between the two must leave the bucket findable.
            index += 1
        return out

    def _write(self, day: int, bucket: dict[tuple[str, int], tuple[Any, ...]]) -> None:
        key = pending_bucket_key(self.partition, day)
        if bucket:
            self.table[key] = _PENDING_ENCODER.encode(list(bucket.values()))
        elif key in self.table:
            del self.table[key]

    def write_added(self) -> None:
        """Buckets that gained events, as they were before this batch released any."""
        for day in sorted(self.added):
            self._write(day, self.loaded[day])

    def write_released(self) -> None:
        for day in sorted(self.removed):
            gone = self.removed[day]
            if gone:
                bucket = self.loaded[day]
                self._write(day, {k: v for k, v in bucket.items() if k not in gone})


class DueBuckets:
    """The due-time index: per partition and UTC day, customer key -> due instant.

    Stored in the customers table beside the partition record (same changelog
    partition). Entries are never removed when a customer's due time moves: the
    stale entry is recognised (the state's due differs) and dropped when its day
    comes, which keeps every update a write to one bucket.

    A crash may cut a batch's writes anywhere, so a stored state's due time must
    always be findable: new entries are stored before the customers
    (``write_added``, with the entries this batch took out still in), and entries
    are taken out only after them (``write_removed``).
    """

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition
        self.loaded: dict[int, dict[bytes, int]] = {}
        self.added: set[int] = set()
        self.removed: dict[int, dict[bytes, int]] = {}

    def get(self, day: int) -> dict[bytes, int]:
        bucket = self.loaded.get(day)
        if bucket is None:
            raw = self.table.get(due_bucket_key(self.partition, day))
            bucket = {} if raw is None else _BUCKET_DECODER.decode(raw)
            self.loaded[day] = bucket
        return bucket

    def add(self, day: int, key: bytes, due: int) -> None:
        bucket = self.get(day)
        if bucket.get(key) != due:
            bucket[key] = due
            self.added.add(day)

    def remove(self, day: int, key: bytes) -> None:
        self.removed.setdefault(day, {})[key] = self.loaded[day].pop(key)

    def _write(self, day: int, bucket: dict[bytes, int]) -> None:
        key = due_bucket_key(self.partition, day)
        if bucket:
            self.table[key] = _BUCKET_ENCODER.encode(bucket)
        elif key in self.table:
            del self.table[key]

    def write_added(self) -> None:
        for day in sorted(self.added):
            removed = self.removed.get(day)
            bucket = self.loaded[day]
            self._write(day, {**removed, **bucket} if removed else bucket)

    def write_removed(self) -> None:
        for day in sorted(self.removed):
            self._write(day, self.loaded[day])


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
        known = {} if raw is None else decode_partition(raw).resume_offsets()
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
        # Faust's own commit: flushes the producer first, and records the offsets
        # as committed so that its next commit only moves them forward.
        await cast(Any, consumer)._commit_offsets(unsettled)
    return moved


def _ranges(group: Sequence[EventT]) -> dict[str, tuple[int, int]]:
    """Per topic, the lowest and highest offset in ``group``."""
    ranges: dict[str, tuple[int, int]] = {}
    for event in group:
        message = event.message
        low, high = ranges.get(message.topic, (message.offset, message.offset))
        ranges[message.topic] = (min(low, message.offset), max(high, message.offset))
    return ranges


def _since(moment: float | None, now: float) -> str:
    return "-" if moment is None else f"{now - moment:.2f}"


def _seek_after_faust(app: ChurnwatchApp, on_sought: Callable[[], None]) -> None:
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


#: How long a partition's redo is sought back to its start, in one rebalance, before
#: it is given up on (``CustomerBatch._redo``). Input Faust had queued before the
#: seek took effect drains in well under a second (in a scale chaos run, five seeks
#: back within 0.2 s, then Faust's own seek, then the batch read again).
SEEK_BACK_SECONDS = 30.0

#: How often reading a topic partition again from a gap in its offsets is asked
#: while the gap stays open (``CustomerBatch._contiguous``), and how long that goes
#: on before the agent reads past the gap anyway, with a warning: a seek that never
#: took effect must not stall the partition for good.
GAP_SEEK_EVERY = 1.0
GAP_SECONDS = 120.0

#: Batches' worth of newer messages a partition holds while a redo waits for its
#: batch (four made batches of 4,800 messages, and a worker expelled mid-rebalance).
HOLD_BATCHES = 1

#: How often committed offsets behind a state that covers a whole partition are
#: moved up to it (``CustomerBatch.settled``).
SETTLE_SECONDS = 5.0

#: How often each partition's read progress is announced to the others, if it changed
#: (``CustomerBatch.announce``; a batch announces it too).
PROGRESS_SECONDS = 0.5

#: How long a revocation waits for this worker's writes to reach the broker: well
#: under any rebalance timeout, and far more than a healthy broker needs.
REVOKE_FLUSH_SECONDS = 10.0


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


def install(app: ChurnwatchApp) -> None:
    settings = app.settings
    repartition = app.topic(
        topics.REPARTITION,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    batch = CustomerBatch(app, Router(app, repartition))

    async def _flush_on_revoke(sender: Any, *args: Any, signal: Any = None, **kw: Any) -> None:
        batch.fence()
        if not await flush_writes(app):
            log.warning(
                "writes still unacknowledged %.0fs into a revocation: the new owners of "
                "this worker's partitions may recover them late",
                REVOKE_FLUSH_SECONDS,
            )

    app.on_partitions_revoked.connect(cast(Any, _flush_on_revoke))

    async def _resume(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        batch.unfence()
        resent = batch.take_over(assigned_partitions(app))
        if resent:
            log.warning("sent %d alerts again from the outboxes of partitions taken over", resent)
        _seek_after_faust(app, batch.sought)

    app.on_rebalance_complete.connect(cast(Any, _resume))

    @app.timer(PROGRESS_SECONDS, name="announce-progress")
    async def announce_progress() -> None:
        batch.announce()

    @app.timer(SETTLE_SECONDS, name="settle-commits")
    async def settle_commits() -> None:
        settled = batch.settled()
        if settled:
            log.info("committing %d input partitions applied to their end", len(settled))
            await cast(Any, app.consumer)._commit_offsets(settled)

    @app.agent(app.inputs, name="customers", concurrency=1)
    async def customers(stream: StreamT[bytes]) -> None:
        batches = cast(Stream[bytes], stream).take_events(
            settings.batch_max, within=settings.batch_within
        )
        async for events in batches:
            batch.process(events)
            if batch.seeks:
                await batch.seek_back()
