"""The replay report: period figures and cohorts as the workers computed them.

Every partition closes its own periods; the report adds the partitions' figures
period by period (each customer lives in exactly one partition) and derives the
ratios of DESIGN section 6 from the sums, never from one partition's ratios.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from retention.calendar import Calendar
from retention.partition import PartitionFigures
from retention.period_book import PeriodBook
from retention.periods import Figures
from retention.state import MONEY_UNIT
from retention.timeutil import Micros, iso


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def period_line(label: str, start: Micros, end: Micros, f: Figures) -> dict[str, Any]:
    churned = f.active_start - f.retained
    nps_responses = f.nps_promoters + f.nps_passives + f.nps_detractors
    nps = _ratio(100 * (f.nps_promoters - f.nps_detractors), nps_responses)
    return {
        "period": label,
        "start": iso(start),
        "end": iso(end),
        "customers_start": f.active_start,
        "customers_new": f.new,
        "customers_end": f.active_end,
        "retention_rate": _ratio(f.active_end - f.new, f.active_start),
        "retained": f.retained,
        "churned": churned,
        "churn_rate": _ratio(churned, f.active_start),
        "buyers": f.buyers,
        "repeat_buyers": f.repeat_buyers,
        "repeat_purchase_rate": _ratio(f.repeat_buyers, f.buyers),
        "revenue": round(f.revenue / MONEY_UNIT, 6),
        "mrr_start": round(f.mrr_start / MONEY_UNIT, 6),
        "mrr_churned": round(f.mrr_churned / MONEY_UNIT, 6),
        "revenue_churn_rate": _ratio(f.mrr_churned, f.mrr_start),
        "nps": nps,
        "csat": _ratio(f.csat_satisfied, f.csat_responses),
        "nps_responses": nps_responses,
        "csat_responses": f.csat_responses,
        "cost_to_serve": round(f.cost_to_serve / MONEY_UNIT, 6),
        "margin": round((f.revenue - f.cost_to_serve) / MONEY_UNIT, 6),
    }


def _add_closed(
    book: PeriodBook,
    first: Micros,
    as_of: Micros,
    sums: dict[Micros, Figures],
    bounds: dict[Micros, tuple[str, Micros]],
) -> None:
    for period in book.closed:
        if period.start < first or period.end > as_of:
            continue
        total = sums.setdefault(period.start, Figures())
        for name in Figures.__struct_fields__:
            setattr(total, name, getattr(total, name) + getattr(period.figures, name))
        bounds[period.start] = (period.label, period.end)


def _lines(
    sums: dict[Micros, Figures],
    bounds: dict[Micros, tuple[str, Micros]],
    first: Micros,
    as_of: Micros,
    calendar: Calendar,
) -> list[dict[str, Any]]:
    """Every period from ``first`` to the last ending by ``as_of`` (none closed: zeros)."""
    periods = []
    start = first
    while calendar.next_start(start) <= as_of:
        label, end = bounds.get(start, (calendar.label(start), calendar.next_start(start)))
        periods.append(period_line(label, start, end, sums.get(start, Figures())))
        start = end
    return periods


def segment_reports(
    partitions: Sequence[PartitionFigures],
    first: Micros,
    as_of: Micros,
    calendar: Calendar,
    field: str = "segments",
) -> dict[str, dict[str, Any]]:
    """Per segment (``field="plans"``: plan) bucket, its periods summed over the
    partitions, as the whole business's are: the same periods, the same rates."""
    sums: dict[str, dict[Micros, Figures]] = defaultdict(dict)
    bounds: dict[Micros, tuple[str, Micros]] = {}
    for part in partitions:
        kept = getattr(part, field)
        if kept is None:
            continue  # a record of a release before segments: none kept there
        for bucket, book in kept.books.items():
            _add_closed(book, first, as_of, sums[bucket], bounds)
    return {
        bucket: {"periods": _lines(sums[bucket], bounds, first, as_of, calendar)}
        for bucket in sorted(sums)
    }


def build_report(
    partitions: Sequence[PartitionFigures],
    as_of: Micros,
    customers: int,
    events: dict[str, int],
    calendar: Calendar,
) -> dict[str, Any]:
    sums: dict[Micros, Figures] = {}
    bounds: dict[Micros, tuple[str, Micros]] = {}
    cohorts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    firsts = [p.periods.first_event_at for p in partitions if p.periods.first_event_at is not None]
    first = calendar.start_of(min(firsts)) if firsts else as_of
    for part in partitions:
        _add_closed(part.periods, first, as_of, sums, bounds)
        for acquired, row in part.periods.cohorts.items():
            for offset, count in row.items():
                cohorts[acquired][offset] += count
    cohort_rows = {}
    for acquired in sorted(cohorts):
        row = cohorts[acquired]
        width = max(row) + 1 if row else 0
        label = f"{acquired // 12:04d}-{acquired % 12 + 1:02d}"
        cohort_rows[label] = [row.get(offset, 0) for offset in range(width)]
    return {
        "as_of": iso(as_of),
        "customers": customers,
        "events": events,
        "periods": _lines(sums, bounds, first, as_of, calendar),
        "cohorts": cohort_rows,
        "segments": segment_reports(partitions, first, as_of, calendar),
        "plans": segment_reports(partitions, first, as_of, calendar, "plans"),
    }
