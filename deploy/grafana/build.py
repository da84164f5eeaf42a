"""Writes the Grafana dashboards in deploy/grafana/dashboards/ (run: make dashboards).

The dashboards are code, built with Grafana's own dashboards-as-code library,
``grafana-foundation-sdk`` (its Python builders; written against the release
``1769699998!10.1.0``, which targets Grafana 10.1): this file is what one edits; the
JSON files are its output, committed so Grafana's file provisioning can read them,
and a test fails when they drift apart. Every query goes to the data source with the
fixed uid ``churnwatch-prometheus`` (provisioned by docker-compose.yml), and ratios
come from the recording rules in deploy/prometheus/rules.yml, never from one worker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import barchart, prometheus, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dashboards
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as promql

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="churnwatch-prometheus")
OUT = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"
REFS = "ABCDEFGH"

#: A panel builder of any visualisation (they share the panel options used here).
Panel = Any


def query(expr: str, legend: str = "") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def panel(
    title: str,
    queries: list[prometheus.Dataquery],
    *,
    kind: Callable[[], Panel] = timeseries.Panel,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    description: str = "",
) -> Panel:
    built = kind().title(title).description(description).datasource(DATASOURCE)
    built = built.unit(unit).span(width).height(height)
    for ref, item in zip(REFS, queries, strict=False):
        built = built.with_target(item.ref_id(ref))
    return built


def dashboard(uid: str, title: str, panels: list[Panel], tags: list[str]) -> dict[str, Any]:
    built = (
        dashboards.Dashboard(title)
        .uid(uid)
        .tags(["churnwatch", *tags])
        .timezone("utc")
        .readonly()
        .refresh("30s")
        .time("now-6h", "now")
    )
    for number, item in enumerate(panels, start=1):
        built = built.with_panel(item.id(number))
    encoded: dict[str, Any] = json.loads(json.dumps(built.build(), cls=JSONEncoder))
    return encoded


def retention() -> dict[str, Any]:
    periods = 'period=~"current|last"'
    return dashboard(
        "churnwatch-retention",
        "churnwatch · retention overview",
        [
            panel(
                "Retention rate",
                [query(f"churnwatch:retention_rate{{{periods}}}", "{{period}} period")],
                unit="percentunit",
                description="(CE - CN) / CS of the current and last closed period",
            ),
            panel(
                "Churn rate",
                [query(f"churnwatch:churn_rate{{{periods}}}", "{{period}} period")],
                unit="percentunit",
                description="(CS - retained) / CS",
            ),
            panel(
                "Active customers",
                [query("churnwatch:customers_active:sum", "active now")],
                width=8,
            ),
            panel(
                "New vs churned customers",
                [
                    query('churnwatch:period_customers_new:sum{period="current"}', "new"),
                    query(
                        'churnwatch:period_customers_start:sum{period="current"}'
                        ' - churnwatch:period_customers_retained:sum{period="current"}',
                        "churned",
                    ),
                ],
                width=8,
                description="In the current period so far",
            ),
            panel(
                "Customers by subscription",
                [query("churnwatch:customers_by_subscription:sum", "{{status}}")],
                width=8,
            ),
            panel(
                "Repeat-purchase rate",
                [query(f"churnwatch:repeat_purchase_rate{{{periods}}}", "{{period}} period")],
                unit="percentunit",
                width=8,
            ),
            panel(
                "NPS",
                [
                    query(f"churnwatch:nps{{{periods}}}", "{{period}} period"),
                    query("churnwatch:nps_90d", "last 90 days"),
                ],
                width=8,
            ),
            panel(
                "CSAT",
                [
                    query(f"churnwatch:csat{{{periods}}}", "{{period}} period"),
                    query("churnwatch:csat_90d", "last 90 days"),
                ],
                unit="percentunit",
                width=8,
            ),
            panel(
                "Revenue",
                [query(f"churnwatch:period_revenue:sum{{{periods}}}", "{{period}} period")],
                unit="currencyUSD",
                width=8,
            ),
            panel(
                "Revenue churn rate",
                [query(f"churnwatch:revenue_churn_rate{{{periods}}}", "{{period}} period")],
                unit="percentunit",
                width=8,
                description="MRR of cancelled subscriptions / MRR at the period's start",
            ),
            panel(
                "Predicted CLV (mean, customers not churned)",
                [query("churnwatch:predicted_clv:avg", "mean CLV")],
                unit="currencyUSD",
                width=8,
            ),
        ],
        ["retention"],
    )


def cohort_matrix() -> Panel:
    """Rows: acquisition month; columns: months since; cells coloured red to green."""
    cells = query("churnwatch:cohort_retention").format(promql.PromQueryFormat.TABLE).instant()
    background = {"type": common.TableCellDisplayMode.COLOR_BACKGROUND.value}
    matrix = models.DataTransformerConfig(
        id_val="groupingToMatrix",
        options={"rowField": "cohort", "columnField": "offset", "valueField": "Value"},
    )
    return (
        panel(
            "Cohort retention (share of month-0 buyers buying in month N)",
            [cells],
            kind=table.Panel,
            unit="percentunit",
            width=24,
            height=14,
            description="Rows: acquisition month; columns: months since acquisition",
        )
        .cell_height(common.TableCellHeight.SM)
        .show_header(True)
        # This release's table builder has no field-level cell options: the cells'
        # colour background is set as an override on every number field instead.
        .override_by_field_type(
            "number",
            [models.DynamicConfigValue(id_val="custom.cellOptions", value=background)],
        )
        .color_scheme(dashboards.FieldColor().mode(models.FieldColorModeId.CONTINUOUS_RD_YL_GR))
        .min(0)
        .max(1)
        .with_transformation(matrix)
    )


def cohorts() -> dict[str, Any]:
    return dashboard(
        "churnwatch-cohorts",
        "churnwatch · cohort retention",
        [
            cohort_matrix(),
            panel(
                "Cohort sizes (customers buying in month N)",
                [query('churnwatch:cohort_customers:sum{offset="0"}', "{{cohort}}")],
                kind=barchart.Panel,
                width=24,
            ),
        ],
        ["cohorts"],
    )


def at_risk() -> dict[str, Any]:
    return dashboard(
        "churnwatch-at-risk",
        "churnwatch · customers at risk",
        [
            panel(
                "Customers by risk tier",
                [query("churnwatch:customers_by_tier:sum", "{{tier}}")],
                description="Customers not churned, by the tier of their last assessment",
            ),
            panel(
                "Value at risk by tier",
                [query("churnwatch:value_at_risk:sum", "{{tier}}")],
                unit="currencyUSD",
                description="sum of risk score x predicted CLV - cost to serve",
            ),
            panel(
                "Alerts by status and tier (per hour)",
                [
                    query(
                        f"sum by (status, tier) (rate(churnwatch_alerts_total[{RATE}])) * 3600",
                        "{{status}} {{tier}}",
                    )
                ],
            ),
            panel(
                "Alert reasons by status, firing vs resolved (per hour)",
                [
                    query(
                        "sum by (status, reason) (rate(churnwatch_alert_reasons_total"
                        f'{{status=~"firing|escalated|resolved"}}[{RATE}])) * 3600',
                        "{{status}}: {{reason}}",
                    ),
                ],
                description="Reasons carried by alerts; a resolved alert carries the "
                "reasons still holding when the customer came back (often none)",
            ),
            panel(
                "Risk assessments per second",
                [
                    query(
                        f"sum by (trigger) (rate(churnwatch_risk_assessments_total[{RATE}]))",
                        "{{trigger}}",
                    )
                ],
                unit="ops",
                width=24,
            ),
        ],
        ["risk"],
    )


def per_second(metric: str, by: str) -> prometheus.Dataquery:
    return query(f"sum by ({by}) (rate({metric}[{RATE}]))", f"{{{{{by}}}}}")


def pipeline() -> dict[str, Any]:
    quantile = (
        "histogram_quantile({q}, sum by (le) (rate(churnwatch_event_latency_seconds_bucket[{r}])))"
    )
    return dashboard(
        "churnwatch-pipeline",
        "churnwatch · pipeline health",
        [
            panel(
                "Events consumed per second, by type",
                [per_second("churnwatch_events_consumed_total", "type")],
                unit="ops",
            ),
            panel(
                "Consumer lag (messages)",
                [query("sum by (topic) (churnwatch_consumer_lag_messages)", "{{topic}}")],
            ),
            panel(
                "Dead letters per second, by reason",
                [per_second("churnwatch_events_rejected_total", "reason")],
                unit="ops",
                width=8,
            ),
            panel(
                "Duplicates per second",
                [per_second("churnwatch_events_duplicate_total", "type")],
                unit="ops",
                width=8,
            ),
            panel(
                "Late events per second",
                [per_second("churnwatch_events_late_total", "type")],
                unit="ops",
                width=8,
            ),
            panel(
                "Processing latency (record timestamp → state written)",
                [
                    query(quantile.format(q=0.5, r=RATE), "p50"),
                    query(quantile.format(q=0.99, r=RATE), "p99"),
                ],
                unit="s",
            ),
            panel(
                "Event-time lag by partition",
                [query("max by (partition) (churnwatch_event_time_lag_seconds)", "{{partition}}")],
                unit="s",
            ),
            panel(
                "Memory per worker (RSS)",
                [query("process_resident_memory_bytes", "{{instance}}")],
                unit="bytes",
                width=8,
            ),
            panel(
                "Batch processing time, p99",
                [
                    query(
                        "histogram_quantile(0.99, sum by (le, instance) "
                        f"(rate(churnwatch_batch_processing_seconds_bucket[{RATE}])))",
                        "{{instance}}",
                    )
                ],
                unit="s",
                width=8,
            ),
            panel(
                "Redis serving view",
                [
                    query("churnwatch_redis_up", "up {{instance}}"),
                    query("churnwatch_redis_buffered", "buffered {{instance}}"),
                    query("increase(churnwatch_redis_overflows_total[1h])", "overflows/h"),
                ],
                width=8,
            ),
        ],
        ["pipeline"],
    )


def segments() -> dict[str, Any]:
    """Retention economics per segment (DESIGN section 10), side by side: one series
    per segment in every panel, from the per-segment recording rules."""
    last = 'period="last"'
    current = 'period="current"'
    return dashboard(
        "churnwatch-segments",
        "churnwatch · segments",
        [
            panel(
                "Retention rate by segment (last closed period)",
                [query(f"churnwatch:segment_retention_rate{{{last}}}", "{{segment}}")],
                unit="percentunit",
                description="(CE - CN) / CS of each segment's customers",
            ),
            panel(
                "Churn rate by segment against its target",
                [
                    query(f"churnwatch:segment_churn_rate{{{last}}}", "{{segment}}"),
                    query("churnwatch:segment_churn_target", "target {{segment}}"),
                ],
                unit="percentunit",
                description="(CS - retained) / CS of the last closed period; the target is "
                "segment_churn_targets in the risk configuration (segments with one only)",
            ),
            panel(
                "Margin by segment (current period)",
                [query(f"churnwatch:segment_margin{{{current}}}", "{{segment}}")],
                unit="currencyUSD",
                description="Revenue minus cost to serve of the period so far",
            ),
            panel(
                "Predicted CLV against cost to serve per active customer",
                [
                    query("churnwatch:segment_predicted_clv:avg", "CLV {{segment}}"),
                    query("churnwatch:segment_cost_to_serve_per_active", "cost {{segment}}"),
                ],
                unit="currencyUSD",
                description="Mean predicted CLV of the segment's customers not churned, and "
                "the current period's cost to serve per customer active now",
            ),
            panel(
                "Value at risk by segment",
                [query("sum by (segment) (churnwatch:segment_value_at_risk:sum)", "{{segment}}")],
                unit="currencyUSD",
                description="sum of risk score x predicted CLV - cost to serve, all tiers",
            ),
            panel(
                "Active customers by segment",
                [query("churnwatch:segment_customers_active:sum", "{{segment}}")],
            ),
        ],
        ["segments"],
    )


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "retention.json": retention,
    "cohorts.json": cohorts,
    "at-risk.json": at_risk,
    "pipeline.json": pipeline,
    "segments.json": segments,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
