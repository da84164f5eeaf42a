"""Per-segment figures of the partitions a worker owns, for the ``/segments`` view:
each segment's current and last closed period (summed over the partitions, derived
rates as in the replay report) and its churn rate against its acceptable churn
(the risk configuration's ``segment_churn_targets``, DESIGN section 10)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Final

from retention.partition import PartitionFigures
from retention.period_book import Figures, Period
from retention.segment_book import SegmentBook
from retention.segments import at_watermark
from retention.state import MONEY_UNIT
from streams.report import period_line

#: Mean days of a period kind, to turn a monthly target into the period's.
_DAYS: Final = {"day": 1.0, "week": 7.0, "month": 365.2425 / 12, "quarter": 365.2425 / 4}


def period_target(monthly: float, period: str) -> float:
    """The churn rate over one ``period`` that compounds to ``monthly`` over a month
    (a monthly target as is for monthly periods)."""
    if period == "month":
        return monthly
    return 1.0 - (1.0 - monthly) ** (_DAYS[period] / _DAYS["month"])


def verdict(rate: float | None, target: float | None) -> str | None:
    """ "over" the target, "under" it (or at it), None without a rate or a target."""
    if rate is None or target is None:
        return None
    return "over" if rate > target else "under"


def _add(total: Figures, figures: Figures) -> None:
    for name in Figures.__struct_fields__:
        setattr(total, name, getattr(total, name) + getattr(figures, name))


def _summed(periods: list[tuple[Period, bool]], want_open: bool) -> dict[str, Any] | None:
    """The latest period that is open (or closed) somewhere, summed over the
    partitions holding it, open or closed there (watermarks differ)."""
    starts = [p.start for p, is_open in periods if is_open == want_open]
    if not starts:
        return None
    start = max(starts)
    total = Figures()
    label, end = "", 0
    for period, _ in periods:
        if period.start == start:
            _add(total, period.figures)
            label, end = period.label, period.end
    return period_line(label, start, end, total)


def segments_view(
    partitions: Iterable[PartitionFigures], targets: Mapping[str, float], period: str
) -> dict[str, Any]:
    """The body of ``/segments``: per segment against its target, and per plan (the
    second dimension; targets are per segment)."""
    states = list(partitions)
    kept = [p.partition for p in states if p.segments is not None]
    without = [p.partition for p in states if p.segments is None]
    return {
        "period": period,
        "partitions": sorted(kept),
        "partitions_without_segments": sorted(without),
        "segments": _dimension(states, "segments", targets, period),
        "plans": _dimension(states, "plans", {}, period),
    }


def _dimension(
    partitions: list[PartitionFigures], field: str, targets: Mapping[str, float], period: str
) -> dict[str, Any]:
    periods: dict[str, list[tuple[Period, bool]]] = defaultdict(list)
    now: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"active": 0, "tiers": defaultdict(int), "value_at_risk": defaultdict(int),
                 "clv": 0, "cost_to_serve": 0}
    )  # fmt: skip
    for part in partitions:
        kept: SegmentBook | None = getattr(part, field)
        if kept is None:
            continue
        for bucket, book in kept.books.items():
            periods[bucket].extend((p, True) for p in book.open)
            periods[bucket].extend((p, False) for p in book.closed)
        for bucket, figures in at_watermark(kept, part.watermark).items():
            total = now[bucket]
            for name in ("active", "clv", "cost_to_serve"):
                total[name] += figures[name]
            for name in ("tiers", "value_at_risk"):
                for tier, value in figures[name].items():
                    total[name][tier] += value
    return {
        bucket: _entry(periods[bucket], now[bucket], targets.get(bucket), period)
        for bucket in sorted(periods)
    }


def _entry(
    periods: list[tuple[Period, bool]],
    figures: dict[str, Any],
    monthly: float | None,
    period: str,
) -> dict[str, Any]:
    target = None if monthly is None else period_target(monthly, period)
    entry: dict[str, Any] = {"churn_target": {"monthly": monthly, "period": target}}
    for which, want_open in (("current", True), ("last", False)):
        line = _summed(periods, want_open)
        entry[which] = line
        rate = None if line is None else line["churn_rate"]
        entry[f"{which}_churn"] = verdict(rate, target)
    active = figures["active"]
    entry["now"] = {
        "customers_active": active,
        "customers_by_tier": dict(figures["tiers"]),
        "value_at_risk": {k: v / 100 for k, v in figures["value_at_risk"].items()},
        "predicted_clv": figures["clv"] / 100,
        "cost_to_serve_current_period": figures["cost_to_serve"] / MONEY_UNIT,
        "cost_to_serve_per_active": (
            None if not active else figures["cost_to_serve"] / MONEY_UNIT / active
        ),
    }
    return entry
