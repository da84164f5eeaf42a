"""Calendar periods in UTC: day, week (ISO, from Monday), month, quarter.

Every boundary falls on a UTC midnight, which the period engine relies on: the
latest purchase before a boundary is then the last purchase of the latest
purchase day before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

from retention.timeutil import DAY, Micros, from_micros, to_micros

PeriodKind = Literal["day", "week", "month", "quarter"]


@dataclass(frozen=True, slots=True)
class Calendar:
    kind: PeriodKind = "month"

    def start_of(self, moment: Micros) -> Micros:
        """Start of the period containing ``moment``."""
        return _start_of_day(self.kind, moment // DAY)

    def _start(self, moment: Micros) -> Micros:
        day = from_micros(moment).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.kind == "week":
            day -= timedelta(days=day.weekday())
        elif self.kind == "month":
            day = day.replace(day=1)
        elif self.kind == "quarter":
            day = day.replace(day=1, month=3 * ((day.month - 1) // 3) + 1)
        return to_micros(day)

    def next_start(self, start: Micros) -> Micros:
        """Start of the period after the one starting at ``start``."""
        begin = from_micros(start)
        if self.kind == "day":
            return to_micros(begin + timedelta(days=1))
        if self.kind == "week":
            return to_micros(begin + timedelta(days=7))
        months = 1 if self.kind == "month" else 3
        index = begin.year * 12 + begin.month - 1 + months
        return to_micros(datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC))

    def label(self, start: Micros) -> str:
        begin = from_micros(start)
        if self.kind == "month":
            return f"{begin.year:04d}-{begin.month:02d}"
        if self.kind == "quarter":
            return f"{begin.year:04d}-Q{(begin.month - 1) // 3 + 1}"
        if self.kind == "week":
            year, week, _ = begin.isocalendar()
            return f"{year:04d}-W{week:02d}"
        return begin.date().isoformat()

    def month_index(self, moment: Micros) -> int:
        """Months since year 0, for cohort offsets (cohorts are monthly whatever the kind)."""
        return month_of_day(moment // DAY)


# Boundaries fall on midnights, so both lookups depend on the UTC day alone; the
# period engine asks them several times per event, and datetime arithmetic costs
# microseconds where a cached day costs a dictionary lookup.
@lru_cache(maxsize=65536)
def _start_of_day(kind: PeriodKind, day: int) -> Micros:
    return Calendar(kind)._start(day * DAY)


@lru_cache(maxsize=65536)
def month_of_day(day: int) -> int:
    """Months since year 0 of a UTC day number."""
    when = from_micros(day * DAY)
    return when.year * 12 + when.month - 1
