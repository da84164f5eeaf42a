"""The period engine's stored state for one partition: open and closed periods with
their figures, and the histograms that let a period open without walking over
customers (``retention/periods.py`` has the operations; DESIGN section 6 the
definitions). Kept apart from the engine because it is encoded in the partition
record, and because msgspec Structs cannot be compiled by mypyc
(``retention/compiled.py``) while the engine is.
"""

from __future__ import annotations

from typing import Final

import msgspec

from retention.timeutil import Micros

NEVER: Final = -1  # lapse-histogram key of customers who never lapse (no activity window)
ROLLING_DAYS: Final = 90  # the rolling NPS and CSAT window


class Figures(msgspec.Struct, kw_only=True):
    """Sums over the partition's customers for one period (money in micro-units)."""

    active_start: int = 0
    active_end: int = 0
    new: int = 0
    retained: int = 0
    buyers: int = 0
    repeat_buyers: int = 0
    revenue: int = 0
    mrr_start: int = 0
    mrr_churned: int = 0
    nps_promoters: int = 0
    nps_passives: int = 0
    nps_detractors: int = 0
    csat_satisfied: int = 0
    csat_responses: int = 0
    #: Sum of ``cost_to_serve`` of the period's purchases (counted per event, as
    #: feedback is: the customer state keeps only a lifetime total).
    cost_to_serve: int = 0


class Period(msgspec.Struct, kw_only=True):
    start: Micros
    end: Micros
    label: str
    figures: Figures


class PeriodBook(msgspec.Struct, kw_only=True):
    """The period engine's state for one partition (stored in its partition record)."""

    open: list[Period] = msgspec.field(default_factory=list)
    closed: list[Period] = msgspec.field(default_factory=list)
    lapses: dict[int, int] = msgspec.field(default_factory=dict)
    mrr: int = 0
    horizon: Micros | None = None
    first_event_at: Micros | None = None
    #: acquisition month index -> {month offset: customers with a purchase then}
    cohorts: dict[int, dict[int, int]] = msgspec.field(default_factory=dict)
    #: rolling views: customers by subscription status; lapse day -> customers
    #: (for "active now", to the day); day -> NPS/CSAT responses (last ROLLING_DAYS)
    statuses: dict[str, int] = msgspec.field(default_factory=dict)
    lapse_days: dict[int, int] = msgspec.field(default_factory=dict)
    feedback_days: dict[int, list[int]] = msgspec.field(default_factory=dict)

    def active_on(self, day: int) -> int:
        """Customers whose activity window reaches UTC day ``day`` (active now, to the day)."""
        return sum(n for key, n in self.lapse_days.items() if key == NEVER or key >= day)

    def rolling_feedback(self, day: int) -> list[int]:
        """[promoters, passives, detractors, csat satisfied, csat responses] over the
        ROLLING_DAYS days up to and including ``day``."""
        totals = [0] * 5
        for key, counts in self.feedback_days.items():
            if day - ROLLING_DAYS < key <= day:
                for index, count in enumerate(counts):
                    totals[index] += count
        return totals
