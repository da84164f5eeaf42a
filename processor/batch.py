"""``CustomerBatch``: one batch of input through the processor, per input partition.

It consumes the four input topics, the clock topic and the repartition topic as one
stream of raw bytes, in batches, so that a customer touched by many events in a
batch is decoded and written once. Per batch and input partition it:

1. picks the messages to process now (processor/positions.py): a batch a crash may
   have cut off is redone whole, nothing is applied past a gap in offsets;
2. validates each message, bad ones dead-lettered with a reason, and forwards those
   whose key belongs to another partition (processor/intake.py, routing.py);
3. aligns event time across topics: events later than the partition's aligned time
   wait in the table (processor/alignment.py);
4. folds every aligned event, waiting or new, into customer state in (event time, id
   hash) order, assessing risk as it goes (processor/customers.py); the due-time
   index re-assesses customers who went quiet (processor/due.py);
5. writes all of it in the crash-safe order of processor/commit.py, then sends the
   batch's alerts and forwards from the outbox (processor/outbox.py).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

from prometheus_client import Counter

from processor import alignment, outbox
from processor import routing as routes
from processor.alignment import PendingBuckets
from processor.arrival import Arrival
from processor.commit import CommitPlan
from processor.customers import Rules, Touched, fold
from processor.due import DueBuckets
from processor.intake import Counts, Intake, Read
from processor.partition import Partitions, PartitionState, begin_batch
from processor.ports import TP, Parts, records_of
from processor.positions import Positions
from processor.routing import Router
from retention.alerts import Alert
from retention.calendar import Calendar
from retention.periods import PeriodEngine
from retention.segments import DIMENSIONS, Segments

log = logging.getLogger(__name__)


class CustomerBatch:
    """Processes the customer agent's batches of input, one after the other.

    Its lifecycle, as the agent (agents/customers.py) drives it: ``process`` each
    batch, then carry out ``seeks``; at a revocation ``fence`` (apply nothing); once
    the rebalance is complete ``unfence``, ``take_over`` the partitions now owned,
    and ``sought`` once the consumer is at the recovered state's offsets; from time
    to time ``announce`` read progress and commit what ``settled`` gives.
    """

    def __init__(self, parts: Parts, router: Router | None = None) -> None:
        settings = parts.settings
        self.parts = parts
        self.table = parts.table
        self.offsets = parts.offsets
        self.metrics = parts.metrics
        #: Forwards input events read on a partition other than their key's home
        #: (processor/routing.py); None, or not active: every event stays where read.
        self.router = router
        self.routing = False
        periods = PeriodEngine(Calendar(settings.period), settings.window, settings.lateness)
        dimensions = tuple(
            Segments(periods, settings.segment_cap, dimension) for dimension in DIMENSIONS
        )
        self.rules = Rules(settings.policy, parts.lifecycle, periods, settings.lateness, dimensions)
        self.intake = Intake(parts.decoder, parts.deadletters, periods, dimensions)
        self.partitions = Partitions(parts.table)
        self.positions = Positions(parts.offsets, settings.batch_max)
        self.outbox = outbox.Outbox(parts.alerts, router, parts.deadletters)
        self.owned: set[int] = set()  # input partitions owned, as of the last rebalance
        #: Partitions revoked and the rebalance not complete yet: apply nothing.
        self.fenced = False
        #: Rebalances begun as the current batch started (``_rebalance_began``).
        self.rebalances = 0

    @property
    def seeks(self) -> dict[TP, int]:
        """Topic partitions to read again from an offset (the agent seeks them)."""
        return self.positions.seeks

    def process(self, events: Sequence[Any]) -> None:
        """Process one batch: ``events`` as Faust hands them to the agent, each one
        message that is a whole fetched record batch of one topic partition or a
        single record (``ports.records_of``)."""
        started = time.perf_counter()
        self.rebalances = self.offsets.rebalances()
        self.routing = self.router is not None and self.router.activate()
        by_partition: dict[int, list[Any]] = defaultdict(list)
        context: dict[int, Any] = {}  # per partition, an event to write it in
        writable = self._writable()
        stale = read = 0
        for event in events:
            message = event.message
            records = records_of(message)
            read += len(records)
            if writable is not None and (
                message.generation_id != writable[1] or message.tp not in writable[0]
            ):
                stale += len(records)
                continue
            by_partition[message.partition].extend(records)
            context[message.partition] = event
        if stale:
            # Read again by whoever owns the partition once the rebalance is over:
            # from the committed offset, or from the recovered state's offsets.
            log.warning("left %d events read before a rebalance to be read again", stale)
            self.metrics.stale.inc(stale)
        for partition, group in by_partition.items():
            with self.parts.handling(context[partition]):
                self._process_partition(partition, group)
        self.metrics.batch_size.observe(read)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _writable(self) -> tuple[Collection[Any], int] | None:
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
        partition this worker does not hold; ``flush_writes`` makes sure what was
        written before has landed when the partition is handed over.

        Faust's ``rebalancing`` flag is no fence: it stays set until recovery is done,
        after the consumer has been sought to where it must read again, so messages
        dropped under it would never be read again.
        """
        writable = self.offsets.writable()
        if writable is None:  # no running consumer: Faust's test context
            return None
        if self.fenced:
            return frozenset(), -1
        return writable

    def fence(self) -> None:
        """Apply nothing more until the rebalance is complete (``unfence``)."""
        self.fenced = True

    def unfence(self) -> None:
        """Called once the rebalance is complete, before Faust seeks and resumes the
        flow: what comes next is read in the new generation, from where it must be."""
        self.fenced = False
        self.positions.unfenced_at = time.monotonic()

    def idle_gaps(self) -> int:
        """Ask again to read the gaps nothing was read of for a while (the agent's
        timer calls this, then carries out ``seeks``); nothing while fenced."""
        if self.fenced:
            return 0
        return self.positions.idle_gaps(time.monotonic())

    def sought(self) -> None:
        """Called once the consumer has been sought to the recovered state's offsets."""
        self.positions.sought_at = time.monotonic()

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
        offsets = self.offsets
        settled: dict[TP, int] = {}
        for partition in offsets.assigned():
            if partition in self.positions.held:
                continue  # a redo under way: its records are not all applied yet
            for topic, last in self.partitions.load(partition).offsets.items():
                tp = TP(topic, partition)
                try:
                    high = offsets.highwater(tp)
                except Exception:  # no consumer thread, or not assigned any more
                    continue
                committed = offsets.committed(tp)
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
        for partition in self.offsets.assigned():
            pstate = self.partitions.load(partition)
            idle = alignment.idle(self.offsets.highwater, pstate)
            self.router.announce(partition, pstate, idle, now)

    def take_over(self, owned: Collection[int]) -> int:
        """After a rebalance: send again the outbox of each partition this worker did
        not own before (``owned``: the partitions it owns now), whose alerts the
        previous owner may not have delivered. Returns how many were sent."""
        before, self.owned = self.owned, set(owned)
        self.positions.reset()
        self.outbox.drop(self.owned)
        # Partitions owned before: this worker's producer is delivering their alerts.
        new = self.owned - before
        if self.router is not None:
            self.router.forget(before ^ self.owned)  # announced afresh by their owners
        for partition in new:
            self.partitions.forget(partition)
        if not new:
            return 0
        return self.outbox.resend(self.table, new, lambda p: self.partitions.load(p).outbox)

    def _router(self) -> Router | None:
        return self.router if self.routing else None

    def _redeliver(self, message: Any) -> None:
        router = self._router()
        self.intake.redeliver_dead_letter(message, lambda m: routes.home(router, m))

    def _process_partition(self, partition: int, group: list[Any]) -> None:
        """Read the batch, then apply what is aligned in event-time order.

        Events are first validated and counted as consumed; those later than the
        partition's aligned time (``PartitionState.align``) wait in the table; then
        every aligned event, waiting or new, is applied in (event time, id hash)
        order. A customer's events therefore meet the state in the order they
        happened, whichever input topic the consumer read further ahead, and so do
        risk assessments and alerts.
        """
        pstate = self.partitions.load(partition)
        written = self.partitions.written.get(partition)
        redo = self.positions.select(pstate, group, written, self._redeliver)
        if redo is None:
            return  # nothing new, or the redo of the last batch is not complete: held
        group = redo
        begin_batch(pstate, group)
        counts: Counts = defaultdict(int)
        router = self._router()
        read = self.intake.read(pstate, group, router, counts)
        idle = alignment.idle(self.offsets.highwater, pstate)
        peers = () if router is None else router.peers(partition)
        aligned = pstate.align(alignment.INPUT_NAMES, idle, self.rules.lateness, peers)
        waiting = PendingBuckets(self.table, partition, pstate)
        ready = alignment.ready(pstate, read.arrivals, aligned, waiting, self.parts.decoder)
        if not self._apply_ready(pstate, ready, counts, waiting, group[-1], read):
            self.metrics.stale.inc(len(group))
            return
        if router is not None:
            # After this batch's forwards: what it announces was all sent before.
            router.announce(partition, pstate, idle, time.monotonic())
        self._export(counts, read.latencies)

    def _apply_ready(
        self,
        pstate: PartitionState,
        ready: list[Arrival],
        counts: Counts,
        waiting: PendingBuckets,
        last: Any,
        read: Read,
    ) -> bool:
        """Fold ``ready`` into the customers, re-assess those due, and commit; False
        if nothing was written (``_rebalance_began``)."""
        rules = self.rules
        partition = pstate.partition
        touched = Touched(self.table)
        assessed = fold(rules, pstate, ready, counts, touched)
        settled = pstate.settled
        rules.periods.close(pstate.periods, settled)
        for engine in rules.dimensions:
            kept = engine.book_of(pstate)
            if kept is not None:
                engine.close(kept, settled)
        due = DueBuckets(self.table, partition, pstate.due_days)
        for key, state in touched.states.items():
            due.schedule(rules.lifecycle, key, state)
        if settled is not None:
            limit = settled - rules.lateness
            reassessed = self.metrics.risk_assessments["due"]
            due.reassess(rules.lifecycle, limit, touched, last, reassessed)
        touched.move_risk(pstate, rules.dimensions)
        forwards = read.forwards
        first = pstate.forwarded - len(forwards)  # forwards are counted as read
        batch = outbox.records(partition, touched.alerts, first, forwards, read.deadletters)
        unacked, delivered = self.outbox.delivered(partition)
        self.outbox.list_in(pstate, unacked, batch)
        if self._rebalance_began(partition, len(ready)):
            return False
        plan = CommitPlan(pstate, batch, waiting, due, touched.states, delivered)
        plan.write(self.table, self.partitions, self.parts.sink)
        self.metrics.state_updates.inc(len(ready))
        self.metrics.state_writes.inc(len(touched.states))
        self.outbox.send(partition, unacked, batch)
        self._count_alerts(touched.alerts, assessed)
        return True

    def _rebalance_began(self, partition: int, events: int) -> bool:
        """Whether a rebalance began while this batch was processed: then it writes
        nothing more (each partition's batch is computed on fresh copies of its
        records, so nothing is left half done), and its input is read again from the
        state's offsets once the rebalance is over (``resume_from_state``).

        The fence (``fence``) goes up only when the revocation reaches the main
        loop, after the batch under way. A batch that ran longer than the group's
        session timeout (12,814 events released from waiting at once: 3 s, against
        3 s) had its worker dropped from the group meanwhile; the new owner had
        recovered the partition before its writes landed, and went on from an older
        partition record while the customers had the newer one's effects: 7,464
        events counted as waiting for good in a scale chaos run (the customers all
        right). The consumer's thread counts a rebalance as it begins (``rebalances``).
        """
        if self.offsets.rebalances() == self.rebalances:
            return False
        log.warning(
            "partition %d: a rebalance began during the batch; %d events left unwritten "
            "to be read again",
            partition, events,
        )  # fmt: skip
        return True

    def _count_alerts(self, alerts: list[tuple[Alert, Any]], assessed: int) -> None:
        # Counted per batch: a label lookup per alert costs more than the count.
        metrics = self.metrics
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

    def _export(self, counts: Counts, latencies: list[float]) -> None:
        metrics = self.metrics
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
