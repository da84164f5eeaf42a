"""Retention figures per customer segment (DESIGN section 10), kept as the
partition's own (retention/periods.py) and summing to them period by period.

A customer's segment is the ``segment`` of their earliest signup (``CustomerState.
home_signup``). Figures that come from the customer's history (active at start and
end, acquired, retained, buyers, revenue, MRR) are a PeriodBook per segment over the
same open periods as the partition's book: one event's difference is added to the
book of the customer's segment, and when the customer's segment changes (a signup
earlier than all before it, or the first) their whole contribution moves from the
old segment's book to the new one's. Figures counted per event (cost to serve, NPS,
CSAT) count in the segment the customer has once the event is applied: the
partition applies a customer's on-time events in (event time, id hash) order, so
that is the earliest of the signups before the event in that order (``none`` for
events before any signup); a customer state keeps no per-period history of them to
move.

The cap: a partition tracks at most ``cap`` segment names, the first it meets as a
customer's segment in the order it applies events (so for on-time input: the
segments of its customers' first signups, ordered by (event time, id hash)); a name
met after that counts under ``other`` for good. The rule is per partition, since a
partition knows only its own customers: with at most ``cap`` distinct segments in
the input every partition tracks every one and the figures do not depend on the
number of partitions; with more, which names a partition tracks depends on which
customers it holds, and a fleet of P partitions exports at most P * cap + 2 names.
"""

from __future__ import annotations

from typing import Any, Final

from retention.partition import PartitionFigures, RiskSummary, move_summary
from retention.period_book import Figures, Period, PeriodBook
from retention.periods import PeriodEngine, Snapshot
from retention.segment_book import NONE, OTHER, SEGMENT_KEEP, RiskSums, SegmentBook
from retention.state import CustomerState
from retention.timeutil import DAY, Micros

DEFAULT_CAP: Final = 50


def last_open(book: PeriodBook) -> Micros | None:
    """Start of the book's latest open period: it moves when ``extend`` opens one."""
    return book.open[-1].start if book.open else None


def segment_name(state: CustomerState | None) -> str | None:
    """The customer's segment as given (None: no signup, or one without a segment)."""
    return None if state is None else state.home_signup()[0]


def plan_name(state: CustomerState | None) -> str | None:
    """The plan of the customer's earliest signup (None: none)."""
    return None if state is None else state.home_signup()[1]


#: The dimensions a customer is counted by: the partition record's field holding
#: its book, and the customer's name in it. The plan is the second dimension
#: (DESIGN section 10), kept by the same rules, the cap included.
DIMENSIONS: Final = {"segments": segment_name, "plans": plan_name}


class Segments:
    """Operations on a SegmentBook; pure, with the period engine, cap and dimension
    (``DIMENSIONS``: "segments" or "plans") fixed."""

    def __init__(
        self, periods: PeriodEngine, cap: int = DEFAULT_CAP, dimension: str = "segments"
    ) -> None:
        if cap < 0:
            raise ValueError("the segment cap must be 0 or more")
        self.periods = periods
        self.cap = cap
        self.dimension = dimension
        self.name = DIMENSIONS[dimension]

    def book_of(self, figures: PartitionFigures) -> SegmentBook | None:
        """The partition's book of this dimension (None: a record of a release
        before it)."""
        book: SegmentBook | None = getattr(figures, self.dimension)
        return book

    def bucket(self, segments: SegmentBook, main: PeriodBook, name: str | None) -> str:
        """The bucket of segment ``name``, tracking it if there is room (its book
        then opens on ``main``'s periods, with nothing in them yet)."""
        if name is None or name == NONE:
            bucket = NONE
        elif name in segments.books or name == OTHER:
            bucket = name
        elif len(segments.tracked) < self.cap:
            segments.tracked.append(name)
            bucket = name
        else:
            bucket = OTHER
        if bucket not in segments.books:
            segments.books[bucket] = _mirror(main)
        return bucket

    def of(self, segments: SegmentBook, main: PeriodBook, state: CustomerState | None) -> str:
        return self.bucket(segments, main, self.name(state))

    def extend(self, segments: SegmentBook, moment: Micros) -> None:
        """As ``PeriodEngine.extend`` on the partition's book, for every segment's.

        Needed only when that opened a period (``last_open`` moved): otherwise every
        period up to ``moment``'s is open already, and a segment book's horizon left
        behind only makes its next ``extend`` look again."""
        for book in segments.books.values():
            self.periods.extend(book, moment)

    def close(self, segments: SegmentBook, watermark: Micros | None) -> None:
        for book in segments.books.values():
            self.periods.close(book, watermark, keep=SEGMENT_KEEP)

    def update(
        self,
        segments: SegmentBook,
        main: PeriodBook,
        old: str,
        before: Snapshot,
        after: Snapshot,
        state: CustomerState,
        at: Micros,
    ) -> str:
        """A customer's event moved their contributions ``before`` -> ``after`` (taken
        over ``main``'s open periods, which every segment book shares); ``old`` was
        their bucket before it. Returns their bucket now."""
        new = self.of(segments, main, state)
        periods = self.periods
        if new == old:
            periods.move(segments.books[new], before, after, at)
        else:
            nothing = periods.snapshot(main, None, False)
            periods.move(segments.books[old], before, nothing, at)
            periods.move(segments.books[new], nothing, after, at)
        return new

    def feedback(
        self,
        segments: SegmentBook,
        bucket: str,
        at: Micros,
        kind: str,
        score: int | None,
        watermark: Micros,
    ) -> None:
        self.periods.feedback(segments.books[bucket], at, kind, score, watermark, rolling=False)

    def cost(self, segments: SegmentBook, bucket: str, at: Micros, amount: int) -> None:
        self.periods.cost(segments.books[bucket], at, amount)

    def move_risk(
        self,
        segments: SegmentBook,
        old: tuple[str, RiskSummary] | None,
        new: tuple[str, RiskSummary] | None,
    ) -> None:
        """A customer's (bucket, risk summary) went from ``old`` to ``new``."""
        if old == new:
            return
        for item, sign in ((old, -1), (new, 1)):
            if item is None:
                continue
            bucket, summary = item
            sums = segments.risk.get(bucket)
            if sums is None:
                sums = segments.risk[bucket] = RiskSums()
            sums.clv += move_summary(sums.tiers, sums.value_at_risk, summary, sign)


def _mirror(main: PeriodBook) -> PeriodBook:
    """An empty book over ``main``'s open periods (and its last closed one, so that
    ``PeriodEngine.extend`` opens the same next periods): exact for a segment that
    has no customer yet."""

    def empty(period: Period) -> Period:
        return Period(start=period.start, end=period.end, label=period.label, figures=Figures())

    return PeriodBook(
        open=[empty(p) for p in main.open],
        closed=[empty(main.closed[-1])] if main.closed else [],
        horizon=main.horizon,
    )


def at_watermark(segments: SegmentBook, watermark: Micros | None) -> dict[str, dict[str, Any]]:
    """Per bucket, as of the partition's watermark: customers active now (to the
    day, as ``PeriodBook.active_on``), customers and value at risk by tier and
    predicted CLV (cents) of their last assessments, and the cost to serve of the
    current period (micro-units) with the customers it is spread over."""
    out: dict[str, dict[str, Any]] = {}
    today = None if watermark is None else watermark // DAY
    for bucket, book in segments.books.items():
        risk = segments.risk.get(bucket, RiskSums())
        current = book.open[-1] if book.open else book.closed[-1] if book.closed else None
        out[bucket] = {
            "active": 0 if today is None else book.active_on(today),
            "tiers": {k: v for k, v in risk.tiers.items() if v},
            "value_at_risk": {k: v for k, v in risk.value_at_risk.items() if v},
            "clv": risk.clv,
            "cost_to_serve": 0 if current is None else current.figures.cost_to_serve,
        }
    return out
