"""Prometheus metrics of the pipeline.

Counters are incremented once per batch with pre-bound label children (no label
lookups per event). Per-partition figures (customers, watermark, exact event
counts) are read from the partitions' recoverable state at scrape time by a custom
collector, so a partition this worker loses in a rebalance disappears from its
output instead of lingering as a stale series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from retention.partition import PartitionFigures
from retention.risk import TIERS
from retention.state import MONEY_UNIT
from retention.timeutil import DAY, SECOND
from schemas.deadletter import REJECT_REASONS
from schemas.events import EVENT_TYPES
from streams.segment_metrics import SegmentCollector
from streams.topics import INPUT_TOPICS

KINDS = (*EVENT_TYPES, "tick")
#: In the order of PeriodBook.rolling_feedback.
ROLLING_GAUGES = (
    ("nps_promoters", "NPS responses 9-10"),
    ("nps_passives", "NPS responses 7-8"),
    ("nps_detractors", "NPS responses 0-6"),
    ("csat_satisfied", "CSAT responses 4-5"),
    ("csat_responses", "CSAT responses"),
)
#: metric suffix -> (Figures field, help, divisor): numerators and denominators only;
#: ratios are computed across workers by deploy/prometheus/rules.yml.
PERIOD_GAUGES: dict[str, tuple[str, str, float]] = {
    "customers_start": ("active_start", "Customers active at the period start", 1),
    "customers_end": ("active_end", "Customers active at the period end (so far)", 1),
    "customers_new": ("new", "Customers acquired in the period", 1),
    "customers_retained": ("retained", "Customers active at its start and end", 1),
    "buyers": ("buyers", "Customers with a purchase in the period", 1),
    "repeat_buyers": ("repeat_buyers", "Customers with two or more purchases", 1),
    "revenue": ("revenue", "Purchase amounts in the period", MONEY_UNIT),
    "mrr_start": ("mrr_start", "Monthly fees of subscriptions running at the start", MONEY_UNIT),
    "mrr_churned": ("mrr_churned", "Monthly fees of those cancelled in the period", MONEY_UNIT),
    "nps_promoters": ("nps_promoters", "NPS responses 9-10", 1),
    "nps_passives": ("nps_passives", "NPS responses 7-8", 1),
    "nps_detractors": ("nps_detractors", "NPS responses 0-6", 1),
    "csat_satisfied": ("csat_satisfied", "CSAT responses 4-5", 1),
    "csat_responses": ("csat_responses", "CSAT responses", 1),
    "cost_to_serve": ("cost_to_serve", "Cost to serve of the period's purchases", MONEY_UNIT),
}
#: Cohorts exported (the newest) and month offsets per cohort: a bounded label set.
COHORT_MONTHS = 12
#: PartitionFigures counters exported per partition: consumed + received = valid +
#: deadletter + duplicates + pending + forwarded (retention/partition.py).
PARTITION_OUTCOMES = (
    "consumed", "valid", "deadletter", "duplicates", "late", "pending", "forwarded", "received",
)  # fmt: skip
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class PartitionCollector(Collector):
    def __init__(self, partitions: Callable[[], Iterable[PartitionFigures]]) -> None:
        self._partitions = partitions

    def collect(self) -> Iterator[Metric]:
        customers = GaugeMetricFamily(
            "churnwatch_customers",
            "Customers with state, per input partition",
            labels=["partition"],
        )
        watermark = GaugeMetricFamily(
            "churnwatch_watermark_timestamp_seconds",
            "Highest event time applied on the partition (Unix seconds)",
            labels=["partition"],
        )
        lag = GaugeMetricFamily(
            "churnwatch_event_time_lag_seconds",
            "Wall-clock time minus the partition's event-time watermark",
            labels=["partition"],
        )
        events = GaugeMetricFamily(
            "churnwatch_partition_events",
            "Exact input counts per partition, recovered with the state (no double counting)",
            labels=["partition", "outcome"],
        )
        periods = {
            name: GaugeMetricFamily(
                f"churnwatch_period_{name}",
                f"{help_text}, for the partition's current (open) or last closed period",
                labels=["partition", "period"],
            )
            for name, (_, help_text, _) in PERIOD_GAUGES.items()
        }
        period_start = GaugeMetricFamily(
            "churnwatch_period_start_timestamp_seconds",
            "Start of the current or last closed period (Unix seconds)",
            labels=["partition", "period"],
        )
        active = GaugeMetricFamily(
            "churnwatch_customers_active",
            "Customers whose activity window reaches the watermark's day (active now)",
            labels=["partition"],
        )
        subscription = GaugeMetricFamily(
            "churnwatch_customers_by_subscription",
            "Customers by subscription status (subscribed, cancelled, none)",
            labels=["partition", "status"],
        )
        rolling = {
            name: GaugeMetricFamily(
                f"churnwatch_rolling_{name}",
                f"{text} over the 90 days up to the watermark",
                labels=["partition"],
            )
            for name, text in ROLLING_GAUGES
        }
        by_tier = GaugeMetricFamily(
            "churnwatch_customers_by_tier",
            "Customers not churned, by risk tier of their last assessment",
            labels=["partition", "tier"],
        )
        value_at_risk = GaugeMetricFamily(
            "churnwatch_value_at_risk",
            "Sum of value at risk of customers not churned, by risk tier (currency units)",
            labels=["partition", "tier"],
        )
        clv = GaugeMetricFamily(
            "churnwatch_predicted_clv",
            "Sum of predicted CLV of assessed customers not churned (currency units)",
            labels=["partition"],
        )
        cohorts = GaugeMetricFamily(
            "churnwatch_cohort_customers",
            f"Customers of an acquisition-month cohort with a purchase in month offset N "
            f"(the last {COHORT_MONTHS} cohorts, offsets below {COHORT_MONTHS})",
            labels=["partition", "cohort", "offset"],
        )
        now = time.time()
        for state in self._partitions():
            label = str(state.partition)
            customers.add_metric([label], state.customers)
            if state.watermark is not None:
                seconds = state.watermark / SECOND
                watermark.add_metric([label], seconds)
                lag.add_metric([label], now - seconds)
            for outcome in PARTITION_OUTCOMES:
                events.add_metric([label, outcome], getattr(state, outcome))
            book = state.periods
            if state.watermark is not None:
                today = state.watermark // DAY
                active.add_metric([label], book.active_on(today))
                for (name, _), value in zip(
                    ROLLING_GAUGES, book.rolling_feedback(today), strict=True
                ):
                    rolling[name].add_metric([label], value)
            for tier in TIERS:
                by_tier.add_metric([label, tier], state.tiers.get(tier, 0))
                value_at_risk.add_metric([label, tier], state.value_at_risk.get(tier, 0) / 100)
            clv.add_metric([label], state.clv / 100)
            for acquired in sorted(book.cohorts)[-COHORT_MONTHS:]:
                name = f"{acquired // 12:04d}-{acquired % 12 + 1:02d}"
                row = book.cohorts[acquired]
                for offset in range(COHORT_MONTHS):
                    cohorts.add_metric([label, name, str(offset)], row.get(offset, 0))
            for status in ("subscribed", "cancelled", "none"):
                subscription.add_metric([label, status], book.statuses.get(status, 0))
            for which, period in (
                ("current", book.open[-1] if book.open else None),
                ("last", book.closed[-1] if book.closed else None),
            ):
                if period is None:
                    continue
                period_start.add_metric([label, which], period.start / SECOND)
                for name, (field, _, scale) in PERIOD_GAUGES.items():
                    value = getattr(period.figures, field)
                    periods[name].add_metric([label, which], value / scale)
        yield from (customers, watermark, lag, events, period_start, *periods.values())
        yield from (active, subscription, *rolling.values())
        yield from (by_tier, value_at_risk, clv, cohorts)


#: (topic, partition, messages not yet read) for every input partition assigned.
LagReader = Callable[[], Iterable[tuple[str, int, int]]]


class LagCollector(Collector):
    def __init__(self, lag: LagReader) -> None:
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "churnwatch_consumer_lag_messages",
            "Messages in the partition not yet read by this worker (highwater - position)",
            labels=["topic", "partition"],
        )
        for topic, partition, lag in self._lag():
            family.add_metric([topic, str(partition)], lag)
        yield family


class PipelineMetrics:
    """The worker's metrics in a registry of their own (tests create many)."""

    def __init__(
        self,
        partitions: Callable[[], Iterable[PartitionFigures]],
        lag: LagReader | None = None,
        targets: Callable[[], Mapping[str, float]] = dict,
    ) -> None:
        # ``*_created`` series double the output and no dashboard uses them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        consumed = Counter(
            "churnwatch_events_consumed",
            "Input messages consumed, by the event type of their topic",
            ["type"],
            registry=self.registry,
        )
        valid = Counter(
            "churnwatch_events_valid",
            "Input events that passed validation",
            ["type"],
            registry=self.registry,
        )
        rejected = Counter(
            "churnwatch_events_rejected",
            "Input messages sent to the dead-letter topic, by reason",
            ["reason"],
            registry=self.registry,
        )
        duplicates = Counter(
            "churnwatch_events_duplicate",
            "Events dropped because their event_id was already applied",
            ["type"],
            registry=self.registry,
        )
        late = Counter(
            "churnwatch_events_late",
            "Events older than the watermark minus the allowed lateness",
            ["type"],
            registry=self.registry,
        )
        self.consumed: dict[str, Counter] = {kind: consumed.labels(kind) for kind in KINDS}
        self.valid: dict[str, Counter] = {kind: valid.labels(kind) for kind in EVENT_TYPES}
        self.rejected: dict[str, Counter] = {
            reason: rejected.labels(reason) for reason in REJECT_REASONS
        }
        self.duplicates: dict[str, Counter] = {
            kind: duplicates.labels(kind) for kind in EVENT_TYPES
        }
        self.late: dict[str, Counter] = {kind: late.labels(kind) for kind in EVENT_TYPES}
        self.misrouted = _children(
            Counter(
                "churnwatch_events_misrouted",
                "Input events read on a partition other than the one their key hashes to "
                "(murmur2, as Faust and the Java client partition), by topic: forwarded "
                "there through churnwatch.repartition",
                ["topic"],
                registry=self.registry,
            ),
            INPUT_TOPICS,
        )
        self.latency = Histogram(
            "churnwatch_event_latency_seconds",
            "From the input record's Kafka timestamp to its state being written",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "churnwatch_batch_processing_seconds",
            "Time to validate, apply and write one batch of input",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "churnwatch_batch_size",
            "Input messages per processed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=self.registry,
        )
        self.flush_interval = Gauge(
            "churnwatch_state_flush_interval_seconds",
            "Most time a batch gathers input before its state is written "
            "(CHURNWATCH_BATCH_WITHIN): a customer touched many times in it is written once",
            registry=self.registry,
        )
        self.state_updates = Counter(
            "churnwatch_state_updates",
            "Events applied to customer states (aligned, redone ones included)",
            registry=self.registry,
        )
        self.state_writes = Counter(
            "churnwatch_state_writes",
            "Customer records written to the table (one per customer touched per batch)",
            registry=self.registry,
        )
        self.stale = Counter(
            "churnwatch_stale_events",
            "Input messages left unprocessed because they reached the agent during a "
            "rebalance or after their partition moved away (read again by the owner)",
            registry=self.registry,
        )
        self.alerts = Counter(
            "churnwatch_alerts",
            "Churn-risk alerts emitted, by status and tier",
            ["status", "tier"],
            registry=self.registry,
        )
        self.alert_reasons = Counter(
            "churnwatch_alert_reasons",
            "Reasons carried by emitted alerts, by status and reason code",
            ["status", "reason"],
            registry=self.registry,
        )
        self.risk_assessments = _children(
            Counter(
                "churnwatch_risk_assessments",
                "Risk assessments made, by trigger (an event, or a due time passing)",
                ["trigger"],
                registry=self.registry,
            ),
            ("event", "due"),
        )
        # The Redis metrics join the registry only when a Redis sink is made
        # (export_redis): a worker without Redis must not report churnwatch_redis_up
        # 0, which the ChurnwatchRedisDown alert would read as an outage.
        self.redis_up = Gauge(
            "churnwatch_redis_up",
            "1 while Redis answers the sink's last write or ping, 0 after one failed "
            "(exported only by workers with CHURNWATCH_REDIS_URL)",
            registry=None,
        )
        self.redis_buffered = Gauge(
            "churnwatch_redis_buffered",
            "Customers whose newest view waits in the bounded buffer for Redis",
            registry=None,
        )
        redis_writes = Counter(
            "churnwatch_redis_writes",
            "Customer views sent to Redis: written, stale (an equal or newer version "
            "was there) or failed (retried)",
            ["outcome"],
            registry=None,
        )
        self.redis_writes = _children(redis_writes, ("written", "stale", "failed"))
        self.redis_overflows = Counter(
            "churnwatch_redis_overflows",
            "Views dropped from a full buffer (a resync from the table follows)",
            registry=None,
        )
        self.redis_resyncs = Counter(
            "churnwatch_redis_resyncs",
            "Full rewrites of this worker's customers into Redis after an overflow",
            registry=None,
        )
        self._redis: tuple[Collector, ...] = (
            self.redis_up, self.redis_buffered, redis_writes, self.redis_overflows,
            self.redis_resyncs,
        )  # fmt: skip
        self._redis_exported = False
        self.registry.register(PartitionCollector(partitions))
        self.registry.register(SegmentCollector(partitions, targets))
        if lag is not None:
            self.registry.register(LagCollector(lag))
        ProcessCollector(registry=self.registry)

    def export_redis(self) -> None:
        """Add the Redis sink's metrics to the registry (once; RedisSink calls it)."""
        if not self._redis_exported:
            for collector in self._redis:
                self.registry.register(collector)
            self._redis_exported = True


def _children(counter: Counter, labels: Iterable[str]) -> dict[str, Counter]:
    """Bind every label value up front: series exist from zero and lookups are free."""
    return {label: counter.labels(label) for label in labels}
