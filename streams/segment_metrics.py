"""Prometheus gauges per customer segment: each partition's per-segment numerators
and denominators (as ``churnwatch_period_*`` are for the whole partition), with a
``segment`` label whose values a partition bounds to its cap plus ``other`` and
``none`` (retention/segments.py); ratios are left to deploy/prometheus/rules.yml.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from retention.partition import PartitionFigures
from retention.risk_config import TIERS
from retention.segments import at_watermark
from retention.timeutil import SECOND


class SegmentCollector(Collector):
    def __init__(
        self,
        partitions: Callable[[], Iterable[PartitionFigures]],
        targets: Callable[[], Mapping[str, float]],
    ) -> None:
        self._partitions = partitions
        self._targets = targets

    def collect(self) -> Iterator[Metric]:
        from streams.metrics import PERIOD_GAUGES  # streams.metrics registers this class

        labels = ["partition", "period", "segment"]
        periods = {
            name: GaugeMetricFamily(
                f"churnwatch_segment_period_{name}",
                f"{text}, per segment, for the partition's current or last closed period",
                labels=labels,
            )
            for name, (_, text, _) in PERIOD_GAUGES.items()
        }
        start = GaugeMetricFamily(
            "churnwatch_segment_period_start_timestamp_seconds",
            "Start of the segment's current or last closed period (Unix seconds)",
            labels=labels,
        )
        active = GaugeMetricFamily(
            "churnwatch_segment_customers_active",
            "Customers of the segment active now (to the watermark's day)",
            labels=["partition", "segment"],
        )
        by_tier = GaugeMetricFamily(
            "churnwatch_segment_customers_by_tier",
            "Customers of the segment not churned, by risk tier of their last assessment",
            labels=["partition", "segment", "tier"],
        )
        value_at_risk = GaugeMetricFamily(
            "churnwatch_segment_value_at_risk",
            "Value at risk of the segment's customers not churned, by tier (currency units)",
            labels=["partition", "segment", "tier"],
        )
        clv = GaugeMetricFamily(
            "churnwatch_segment_predicted_clv",
            "Predicted CLV of the segment's assessed customers not churned (currency units)",
            labels=["partition", "segment"],
        )
        target = GaugeMetricFamily(
            "churnwatch_segment_churn_target",
            "Acceptable monthly churn rate of the segment (risk configuration)",
            labels=["segment"],
        )
        for state in self._partitions():
            seg = state.segments
            if seg is None:
                continue
            label = str(state.partition)
            for bucket, now in at_watermark(seg, state.watermark).items():
                active.add_metric([label, bucket], now["active"])
                for tier in TIERS:
                    by_tier.add_metric([label, bucket, tier], now["tiers"].get(tier, 0))
                    risk = now["value_at_risk"].get(tier, 0) / 100
                    value_at_risk.add_metric([label, bucket, tier], risk)
                clv.add_metric([label, bucket], now["clv"] / 100)
                book = seg.books[bucket]
                for which, period in (
                    ("current", book.open[-1] if book.open else None),
                    ("last", book.closed[-1] if book.closed else None),
                ):
                    if period is None:
                        continue
                    start.add_metric([label, which, bucket], period.start / SECOND)
                    for name, (field, _, scale) in PERIOD_GAUGES.items():
                        value = getattr(period.figures, field)
                        periods[name].add_metric([label, which, bucket], value / scale)
        for name, rate in sorted(self._targets().items()):
            target.add_metric([name], rate)
        yield from (start, *periods.values(), active, by_tier, value_at_risk, clv, target)
