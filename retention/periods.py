"""Retention figures per calendar period, kept exact incrementally, per partition.

DESIGN section 6 defines each figure as a sum over customers of something that
depends only on that customer's own history (active at the period's start, at its
end, acquired in it, purchases in it, ...). So a partition keeps, for every period
that is still open, the running sums, and every event adds the difference it makes
to its customer's contribution (contribution after the event minus before). That is
exact whatever the order events arrive in.

Customers who have no event in a period still count (a customer active at its start
and at its end, say). Their contribution is known when the period opens: at that
moment no customer of the partition has an event at or after its start, so
"active at t" is "lapses at or after t", read from a histogram of lapse times, and
the subscription revenue running at its start is the partition's running total.
The cost per event is proportional to the number of open periods (one or two), and
no step ever walks over all customers.

A period [s, e) closes once the watermark has passed e by the allowed lateness;
closed figures never change again (later events are "late": they update the
customer, the open periods and cohorts, but not closed periods).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from retention import history
from retention.calendar import Calendar, month_of_day
from retention.period_book import NEVER, ROLLING_DAYS, Figures, Period, PeriodBook
from retention.state import CustomerState, PurchaseDay, day_of
from retention.timeutil import DAY, Micros

#: Figures that come from the customer's history, in Figures' field order.
HISTORY_FIELDS: Final = (
    "active_start",
    "active_end",
    "new",
    "retained",
    "buyers",
    "repeat_buyers",
    "revenue",
    "mrr_start",
    "mrr_churned",
)


Contribution = tuple[int, ...]
_NOTHING: Final[Contribution] = (0,) * len(HISTORY_FIELDS)


def _move(counts: dict[Any, int], old: Any, new: Any) -> None:
    """Move one customer from bucket ``old`` to bucket ``new`` (None: no bucket)."""
    if old == new:
        return
    if old is not None and old in counts:
        counts[old] -= 1
        if not counts[old]:
            del counts[old]
    if new is not None:
        counts[new] = counts.get(new, 0) + 1


def contributions(
    state: CustomerState | None, spans: Sequence[tuple[Micros, Micros]], window: Micros | None
) -> list[Contribution]:
    """One customer's share of HISTORY_FIELDS for each period [start, end) of ``spans``.

    Open periods are consecutive, so one period's end is the next one's start:
    asked per event, before and after it, activity at each boundary is worked out
    once rather than twice.
    """
    if state is None:
        return [_NOTHING] * len(spans)
    active: dict[Micros, bool] = {}
    acquired = history.acquired_at(state)
    days = state.days
    cancels = state.cancels
    out: list[Contribution] = []
    for start, end in spans:
        at_start = active.get(start)
        if at_start is None:
            at_start = active[start] = history.active_before(state, start, window)
        at_end = active.get(end)
        if at_end is None:
            at_end = active[end] = history.active_before(state, end, window)
        # Boundaries are midnights, so a period holds whole purchase days.
        first = bisect.bisect_left(days, start // DAY, key=day_of)
        last = bisect.bisect_left(days, end // DAY, key=day_of)
        purchases = revenue = 0
        for index in range(first, last):
            day = days[index]
            purchases += day.count
            revenue += day.spend
        fee = history.fee_at(state, start)
        churned_fee = 0
        if fee:
            for mark in cancels:
                if start <= mark.at < end:
                    churned_fee = fee
                    break
        out.append(
            (
                int(at_start),
                int(at_end),
                int(acquired is not None and start <= acquired < end),
                int(at_start and at_end),
                int(purchases >= 1),
                int(purchases >= 2),
                revenue,
                fee,
                churned_fee,
            )
        )
    return out


def lapse_keys(
    state: CustomerState | None, window: Micros | None, calendar: Calendar
) -> tuple[int | None, int | None]:
    """Histogram keys of the instant the customer stops being active: the start of
    its period, and its UTC day. None when it is not active; NEVER without a window."""
    if state is None:
        return None, None
    last = history.last_activity_at(state)
    if last is None:
        return None, None
    if state.last_cancel_at is not None and state.last_cancel_at >= last:
        return None, None
    if window is None:
        return NEVER, NEVER
    lapse = last + window
    return calendar.start_of(lapse), lapse // DAY


def acquired_month(state: CustomerState | None, calendar: Calendar) -> int | None:
    """The month of the customer's cohort; None until they have a purchase day."""
    if state is None or not state.days:
        return None
    acquired = history.acquired_at(state)
    return None if acquired is None else calendar.month_index(acquired)


def _cells(acquired: int | None, days: Sequence[PurchaseDay]) -> set[tuple[int, int]]:
    if acquired is None:
        return set()
    # A day's purchases share its month: the day number is enough (no division).
    month = month_of_day
    return {(acquired, month(day.day) - acquired) for day in days}


def subscription_status(state: CustomerState | None) -> str | None:
    if state is None:
        return None
    if state.subscribed:
        return "subscribed"
    if state.fee is not None and state.fee.value:
        return "cancelled"
    return "none"


@dataclass(slots=True)
class Snapshot:
    """A customer's contributions before an event, to subtract after it."""

    shares: list[Contribution]
    lapse: int | None
    lapse_day: int | None
    status: str | None
    fee: int
    #: False: the event cannot move the customer's cohort cells (see ``snapshot``).
    cells: bool
    #: What the cells are made of, less the days' months: an event adds at most
    #: one purchase day, so the cells before it follow from those after it.
    acquired: int | None
    day_count: int


class PeriodEngine:
    """Operations on a PeriodBook; pure, with the calendar, window and lateness fixed."""

    def __init__(self, calendar: Calendar, window: Micros | None, lateness: Micros) -> None:
        self.calendar = calendar
        self.window = window
        self.lateness = lateness

    def extend(self, book: PeriodBook, moment: Micros) -> None:
        """Open every period up to the one containing ``moment``.

        Call before applying an event at ``moment`` (or on a tick): a period must be
        open before the first event inside it, which is when its start figures can be
        read off the lapse histogram.
        """
        if book.horizon is not None and moment <= book.horizon:
            return
        calendar = self.calendar
        target = calendar.start_of(moment)
        if book.horizon is None:
            # The first event: also open the periods that on-time events arriving out
            # of order could still fall into.
            start = calendar.start_of(moment - self.lateness)
        elif book.open:
            start = calendar.next_start(book.open[-1].start)
        else:
            start = calendar.next_start(book.closed[-1].start) if book.closed else target
        book.horizon = moment
        while start <= target:
            end = calendar.next_start(start)
            active_start = self._lapsing_from(book, start)
            active_end = self._lapsing_from(book, end)
            figures = Figures(
                active_start=active_start,
                active_end=active_end,
                retained=active_end,  # active at end implies at start: no event since
                mrr_start=book.mrr,
            )
            book.open.append(
                Period(start=start, end=end, label=calendar.label(start), figures=figures)
            )
            start = end
        first_open = book.open[0].start if book.open else target
        for key in [k for k in book.lapses if k != NEVER and k < first_open]:
            del book.lapses[key]

    def _lapsing_from(self, book: PeriodBook, moment: Micros) -> int:
        return sum(n for key, n in book.lapses.items() if key == NEVER or key >= moment)

    def snapshot(
        self, book: PeriodBook, state: CustomerState | None, cells: bool = True
    ) -> Snapshot:
        """``cells=False`` for an event that adds no purchase day and cannot move the
        acquisition time (feedback, a cancellation): its cohort cells are then left
        alone."""
        window = self.window
        lapse, day = lapse_keys(state, window, self.calendar)
        return Snapshot(
            shares=contributions(state, [(p.start, p.end) for p in book.open], window),
            lapse=lapse,
            lapse_day=day,
            status=subscription_status(state),
            fee=0 if state is None or not state.subscribed else state.monthly_fee,
            cells=cells,
            acquired=acquired_month(state, self.calendar),
            day_count=0 if state is None else len(state.days),
        )

    def update(
        self, book: PeriodBook, before: Snapshot, state: CustomerState, at: Micros
    ) -> Snapshot:
        """Add the difference an event at ``at`` made to ``state`` (``before`` taken just
        prior). Returns the customer's contributions after it, which a book over the
        same open periods (a segment's, retention/segments.py) can take as they are."""
        after = self.snapshot(book, state, False)
        self.move(book, before, after, at)
        if before.cells:
            self._move_cells(book, before, state, at)
        return after

    def move(self, book: PeriodBook, before: Snapshot, after: Snapshot, at: Micros) -> None:
        """Replace a customer's contributions ``before`` by ``after`` (both taken over
        ``book``'s open periods; cohort cells apart)."""
        for period, old, new in zip(book.open, before.shares, after.shares, strict=True):
            if new != old:
                figures = period.figures
                for name, a, b in zip(HISTORY_FIELDS, old, new, strict=True):
                    if a != b:
                        setattr(figures, name, getattr(figures, name) + b - a)
        # A histogram key may have been pruned: lapses before every open period are
        # no longer asked about (_move skips a missing key).
        _move(book.lapses, before.lapse, after.lapse)
        _move(book.lapse_days, before.lapse_day, after.lapse_day)
        _move(book.statuses, before.status, after.status)
        book.mrr += after.fee - before.fee
        if book.first_event_at is None or at < book.first_event_at:
            book.first_event_at = at

    def cost(self, book: PeriodBook, at: Micros, amount: int) -> None:
        """Count one (non-duplicate) purchase's cost to serve in its open period, if any."""
        for period in book.open:
            if period.start <= at < period.end:
                period.figures.cost_to_serve += amount
                return

    def _move_cells(
        self, book: PeriodBook, before: Snapshot, state: CustomerState, at: Micros
    ) -> None:
        """Move the customer's cohort cells by what one event changed: at most one
        new purchase day (the event's), and perhaps the acquisition month.

        Without a pass over every purchase day in the common case: with the same
        acquisition month, a new day adds a cell unless another day of its month
        (a neighbour, days being sorted) has it already.
        """
        acquired = acquired_month(state, self.calendar)
        days = state.days
        index = None
        if len(days) > before.day_count:
            index = bisect.bisect_left(days, at // DAY, key=day_of)
        if acquired == before.acquired:
            if index is None or acquired is None:
                return
            month = month_of_day(days[index].day)
            if (index and month_of_day(days[index - 1].day) == month) or (
                index + 1 < len(days) and month_of_day(days[index + 1].day) == month
            ):
                return
            row = book.cohorts.setdefault(acquired, {})
            row[month - acquired] = row.get(month - acquired, 0) + 1
            return
        old = _cells(before.acquired, days if index is None else days[:index] + days[index + 1 :])
        new = _cells(acquired, days)
        for cohort, offset in old - new:
            row = book.cohorts[cohort]
            row[offset] -= 1
            if not row[offset]:
                del row[offset]
        for cohort, offset in new - old:
            row = book.cohorts.setdefault(cohort, {})
            row[offset] = row.get(offset, 0) + 1

    def feedback(
        self,
        book: PeriodBook,
        at: Micros,
        kind: str,
        score: int | None,
        watermark: Micros,
        rolling: bool = True,
    ) -> None:
        """Count one (non-duplicate) NPS or CSAT response in its open period, if any,
        and (``rolling``) in the rolling window."""
        if score is None or kind not in ("nps", "csat"):
            return
        day = at // DAY
        if rolling and day > watermark // DAY - ROLLING_DAYS:
            counts = book.feedback_days.setdefault(day, [0] * 5)
            if kind == "nps":
                counts[0 if score >= 9 else 1 if score >= 7 else 2] += 1
            else:
                counts[3] += score >= 4
                counts[4] += 1
            for old in [d for d in book.feedback_days if d <= watermark // DAY - ROLLING_DAYS]:
                del book.feedback_days[old]
        for period in book.open:
            if period.start <= at < period.end:
                figures = period.figures
                if kind == "nps":
                    if score >= 9:
                        figures.nps_promoters += 1
                    elif score >= 7:
                        figures.nps_passives += 1
                    else:
                        figures.nps_detractors += 1
                elif kind == "csat":
                    figures.csat_responses += 1
                    figures.csat_satisfied += score >= 4
                return

    def close(self, book: PeriodBook, watermark: Micros | None, keep: int = 240) -> list[Period]:
        """Close the open periods the watermark has passed by the allowed lateness."""
        closed: list[Period] = []
        if watermark is None:
            return closed
        while book.open and book.open[0].end + self.lateness <= watermark:
            period = book.open.pop(0)
            book.closed.append(period)
            closed.append(period)
        if closed:  # days already over are no longer asked about
            today = watermark // DAY
            for key in [k for k in book.lapse_days if k != NEVER and k < today - 1]:
                del book.lapse_days[key]
        if len(book.closed) > keep:
            del book.closed[: len(book.closed) - keep]
        return closed
