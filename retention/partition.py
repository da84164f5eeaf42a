"""The retention figures of one input partition: its event-time clock, exact
counters and the sums over its customers.

These are domain figures: nothing here knows where the input comes from. The
partition's stored record (processor/partition.py, ``PartitionState``) extends them
with the processor's delivery bookkeeping (offsets read, where a new owner resumes,
the outbox's keys, the sources of forwarded events), which is what keeps the
counters exact under at-least-once delivery; both are one msgpack map by field
name, so ``decode_figures`` reads these figures out of a stored record and skips
the rest.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

import msgspec

from retention.periods import PeriodBook
from retention.segment_book import SegmentBook
from retention.timeutil import Micros

#: Exact money sums are stored as 64-bit integers of micro-units; a partition applies
#: at most this much money in all (2**62 micro-units: 4.6e12 currency units).
MONEY_BUDGET = 2**62

#: (tier, or "churned"; value at risk; CLV), cents: what the partition sums count.
RiskSummary = tuple[str, int, int]


class PeerProgress(msgspec.Struct, array_like=True, frozen=True):
    """How far another partition has read its own part of the input topics, as it
    last announced it (processor/routing.py): per topic, the highest event time of its
    own customers' events read (``frontiers``), and the topics read to their end
    (``idle``). Every event of this partition's customers read there before that is
    forwarded here, and is on the repartition topic ahead of the announcement."""

    frontiers: dict[str, Micros] = msgspec.field(default_factory=dict)
    idle: tuple[str, ...] = ()


class PartitionFigures(msgspec.Struct, kw_only=True):
    """The retention figures of one input partition.

    The watermark is the event time up to which this partition's input is taken to
    be complete: the greater of the latest clock tick and the *least* of the input
    topics' highest event times. Taking the least over topics matters because a
    consumer reads its topics at different paces (one fetch may carry days of
    purchases while the feedback topic is still behind): a maximum would call the
    slower topic's on-time events late, and make "late" depend on fetch timing. A
    topic that has delivered nothing yet holds the event-driven watermark back
    entirely (its first event may be old); clock ticks move the watermark when an
    input is idle or unused, which is what a live worker's clock does every few
    seconds and what a replay's final tick does at the end.
    """

    partition: int
    watermark: Micros | None = None
    clock: Micros | None = None
    frontiers: dict[str, Micros] = msgspec.field(default_factory=dict)
    customers: int = 0
    consumed: int = 0
    valid: int = 0
    deadletter: int = 0
    duplicates: int = 0
    late: int = 0
    ticks: int = 0
    periods: PeriodBook = msgspec.field(default_factory=PeriodBook)
    #: UTC days that have a bucket of customers due for re-assessment (sorted).
    due_days: list[int] = msgspec.field(default_factory=list)
    #: Customers by risk tier as of their last assessment ("churned" apart).
    tiers: dict[str, int] = msgspec.field(default_factory=dict)
    #: Value at risk by tier and predicted CLV of customers not churned (cents).
    value_at_risk: dict[str, int] = msgspec.field(default_factory=dict)
    clv: int = 0
    #: Event time up to which every input topic of the partition has been read (or
    #: has nothing more to read): events after it wait, so that a customer's events
    #: are applied in event-time order whichever topic a consumer happens to read
    #: first. See ``align``.
    aligned: Micros | None = None
    #: UTC days that have a bucket of events waiting for ``aligned`` (sorted).
    pending_days: list[int] = msgspec.field(default_factory=list)
    #: Events waiting; counted in ``consumed``, not yet in valid or duplicates.
    pending: int = 0
    #: Money applied on the partition (micro-units): every money sum kept in state
    #: (a customer's spend, a period's revenue, MRR) is at most this, so keeping it
    #: under ``MONEY_BUDGET`` keeps them all within 64-bit integers.
    money: int = 0
    #: Input events read here whose key hashes to another partition (misrouted by
    #: their producer): counted in ``consumed`` here, forwarded to that partition and
    #: counted there, once, in ``received`` and as valid, dead letter or duplicate.
    #: Per partition, consumed + received = valid + deadletter + duplicates +
    #: pending + forwarded; over all partitions, once every forward is read,
    #: consumed = valid + deadletter + duplicates + pending.
    forwarded: int = 0
    received: int = 0
    #: Highest event time of a forwarded event read here (not a topic's frontier:
    #: forwards come from every other partition, each at its own pace).
    routed_frontier: Micros | None = None
    #: The latest read progress each other partition announced (``align``).
    peers: dict[int, PeerProgress] = msgspec.field(default_factory=dict)
    #: Figures per customer segment (retention/segments.py). None in a record written
    #: before them: its customers' past is not in any segment's book, so that
    #: partition keeps none (replay the history to have them); a new record has one.
    segments: SegmentBook | None = None
    #: The same by the plan of the customer's earliest signup (the second dimension).
    plans: SegmentBook | None = None

    def align(
        self,
        topics: Iterable[str],
        idle: Container[str],
        slack: Micros,
        peers: Iterable[int] = (),
    ) -> Micros | None:
        """Move ``aligned`` to the least highest event time, less ``slack`` (the
        allowed lateness: how far a topic's own events may be out of order), of the
        topics that still have input to read; a topic read to its end (``idle``)
        holds nothing back.
        With every topic read to its end, everything read so far is aligned, up to
        the latest clock tick if that is later.

        ``peers``: the other partitions, whose producers may have put events of this
        partition's customers there (forwarded here): each of their topics with input
        left holds this partition back as its own do, at the frontier the peer last
        announced, and a peer not heard from yet holds it back entirely.

        Never moves back: a topic that was idle and gets new input only makes its
        new events wait or, if older than ``aligned``, be applied out of order, as is
        an event more than ``slack`` behind its own topic's frontier.
        """
        topics = tuple(topics)
        held: list[Micros] = []
        for topic in topics:
            if topic in idle:
                continue
            frontier = self.frontiers.get(topic)
            if frontier is None:
                return self.aligned  # a topic with input but nothing read yet
            held.append(frontier - slack)
        for peer in peers:
            progress = self.peers.get(peer)
            if progress is None:
                return self.aligned  # may still forward anything
            for topic in topics:
                if topic in progress.idle:
                    continue
                frontier = progress.frontiers.get(topic)
                if frontier is None:
                    return self.aligned
                held.append(frontier - slack)
        if held:
            candidate = min(held)
        else:
            # Nothing left to read: up to the latest event or clock tick seen, as the
            # watermark (a tick says no input is older than the tick's time).
            seen = [*self.frontiers.values()]
            for moment in (self.routed_frontier, self.clock):
                if moment is not None:
                    seen.append(moment)
            if not seen:
                return self.aligned
            candidate = max(seen)
        if self.aligned is None or candidate > self.aligned:
            self.aligned = candidate
        return self.aligned

    @property
    def settled(self) -> Micros | None:
        """Event time up to which input is complete *and* applied in order: periods
        close and lapses are assessed against it, never ahead of waiting events."""
        if self.watermark is None or self.aligned is None:
            return None
        return min(self.watermark, self.aligned)

    def move_risk(self, old: RiskSummary | None, new: RiskSummary | None) -> None:
        """A customer's summary went from ``old`` to ``new``: keep the sums exact."""
        if old == new:
            return
        for summary, sign in ((old, -1), (new, 1)):
            if summary is not None:
                self.clv += move_summary(self.tiers, self.value_at_risk, summary, sign)

    def observe(self, topic: str, moment: Micros, inputs: int) -> None:
        """An event of ``topic`` (one of ``inputs`` input topics) at ``moment`` was applied."""
        if moment > self.frontiers.get(topic, moment - 1):
            self.frontiers[topic] = moment
            if len(self.frontiers) >= inputs:
                self._advance(min(self.frontiers.values()))

    def received_at(self, moment: Micros) -> None:
        """A forwarded event at ``moment`` was read (``routed_frontier``)."""
        if self.routed_frontier is None or moment > self.routed_frontier:
            self.routed_frontier = moment

    def tick(self, moment: Micros) -> None:
        if self.clock is None or moment > self.clock:
            self.clock = moment
            self._advance(moment)

    def _advance(self, moment: Micros) -> None:
        if self.watermark is None or moment > self.watermark:
            self.watermark = moment


def move_summary(
    tiers: dict[str, int], value_at_risk: dict[str, int], summary: RiskSummary, sign: int
) -> int:
    """Add (``sign`` 1) or take away (-1) one customer's summary from the counts by
    tier and value at risk by tier; returns the change to the predicted CLV sum."""
    bucket, risk, clv = summary
    count = tiers.get(bucket, 0) + sign
    if count:
        tiers[bucket] = count
    else:
        tiers.pop(bucket, None)
    if bucket == "churned":
        return 0
    total = value_at_risk.get(bucket, 0) + sign * risk
    if total or bucket in tiers:
        value_at_risk[bucket] = total
    else:
        value_at_risk.pop(bucket, None)
    return sign * clv


#: Unknown fields are skipped (msgspec's default for a map): a stored partition
#: record also holds the processor's fields, which these figures do not need.
_FIGURES = msgspec.msgpack.Decoder(PartitionFigures)


def decode_figures(data: bytes) -> PartitionFigures:
    """The figures of a stored partition record (processor/partition.py)."""
    return _FIGURES.decode(data)
