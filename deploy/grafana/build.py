"""Writes the Grafana dashboards in deploy/grafana/dashboards/ (run: make dashboards).

The dashboards are code: this file is what one edits; the JSON files are its output,
committed so Grafana's file provisioning can read them, and a test fails when they
drift apart. Every query goes to the data source with the fixed uid
``churnwatch-prometheus`` (provisioned by docker-compose.yml), and ratios come from
the recording rules in deploy/prometheus/rules.yml, never from one worker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "churnwatch-prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


def panel(
    title: str,
    targets: list[dict[str, Any]],
    *,
    kind: str = "timeseries",
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    description: str = "",
    **options: Any,
) -> dict[str, Any]:
    refs = "ABCDEFGH"
    for index, item in enumerate(targets):
        item["refId"] = refs[index]
    return {
        "title": title,
        "type": kind,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"w": width, "h": height},
        "options": options or {},
    }


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], tags: list[str]) -> dict:
    x = y = 0
    for index, item in enumerate(panels, start=1):
        grid = item["gridPos"]
        if x + grid["w"] > 24:
            x, y = 0, y + grid["h"]
        grid.update({"x": x, "y": y})
        x += grid["w"]
        item["id"] = index
    return {
        "uid": uid,
        "title": title,
        "tags": ["churnwatch", *tags],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def retention() -> dict:
    periods = 'period=~"current|last"'
    return dashboard(
        "churnwatch-retention",
        "churnwatch · retention overview",
        [
            panel(
                "Retention rate",
                [target(f"churnwatch:retention_rate{{{periods}}}", "{{period}} period")],
                unit="percentunit",
                description="(CE - CN) / CS of the current and last closed period",
            ),
            panel(
                "Churn rate",
                [target(f"churnwatch:churn_rate{{{periods}}}", "{{period}} period")],
                unit="percentunit",
                description="(CS - retained) / CS",
            ),
            panel(
                "Active customers",
                [target("churnwatch:customers_active:sum", "active now")],
                width=8,
            ),
            panel(
                "New vs churned customers",
                [
                    target('churnwatch:period_customers_new:sum{period="current"}', "new"),
                    target(
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
                [target("churnwatch:customers_by_subscription:sum", "{{status}}")],
                width=8,
            ),
            panel(
                "Repeat-purchase rate",
                [target(f"churnwatch:repeat_purchase_rate{{{periods}}}", "{{period}} period")],
                unit="percentunit",
                width=8,
            ),
            panel(
                "NPS",
                [
                    target(f"churnwatch:nps{{{periods}}}", "{{period}} period"),
                    target("churnwatch:nps_90d", "last 90 days"),
                ],
                width=8,
            ),
            panel(
                "CSAT",
                [
                    target(f"churnwatch:csat{{{periods}}}", "{{period}} period"),
                    target("churnwatch:csat_90d", "last 90 days"),
                ],
                unit="percentunit",
                width=8,
            ),
            panel(
                "Revenue",
                [target(f"churnwatch:period_revenue:sum{{{periods}}}", "{{period}} period")],
                unit="currencyUSD",
                width=8,
            ),
            panel(
                "Revenue churn rate",
                [target(f"churnwatch:revenue_churn_rate{{{periods}}}", "{{period}} period")],
                unit="percentunit",
                width=8,
                description="MRR of cancelled subscriptions / MRR at the period's start",
            ),
            panel(
                "Predicted CLV (mean, customers not churned)",
                [target("churnwatch:predicted_clv:avg", "mean CLV")],
                unit="currencyUSD",
                width=8,
            ),
        ],
        ["retention"],
    )


def cohorts() -> dict:
    return dashboard(
        "churnwatch-cohorts",
        "churnwatch · cohort retention",
        [
            panel(
                "Cohort retention (share of month-0 buyers buying in month N)",
                [target("churnwatch:cohort_retention", "", format="table", instant=True)],
                kind="table",
                unit="percentunit",
                width=24,
                height=14,
                description="Rows: acquisition month; columns: months since acquisition",
                cellHeight="sm",
                showHeader=True,
            )
            | {
                "transformations": [
                    {
                        "id": "groupingToMatrix",
                        "options": {
                            "rowField": "cohort",
                            "columnField": "offset",
                            "valueField": "Value",
                        },
                    }
                ],
                "fieldConfig": {
                    "defaults": {
                        "unit": "percentunit",
                        "custom": {"cellOptions": {"type": "color-background"}},
                        "color": {"mode": "continuous-RdYlGr"},
                        "min": 0,
                        "max": 1,
                    },
                    "overrides": [],
                },
            },
            panel(
                "Cohort sizes (customers buying in month N)",
                [target('churnwatch:cohort_customers:sum{offset="0"}', "{{cohort}}")],
                kind="barchart",
                width=24,
            ),
        ],
        ["cohorts"],
    )


def at_risk() -> dict:
    return dashboard(
        "churnwatch-at-risk",
        "churnwatch · customers at risk",
        [
            panel(
                "Customers by risk tier",
                [target("churnwatch:customers_by_tier:sum", "{{tier}}")],
                description="Customers not churned, by the tier of their last assessment",
            ),
            panel(
                "Value at risk by tier",
                [target("churnwatch:value_at_risk:sum", "{{tier}}")],
                unit="currencyUSD",
                description="sum of risk score x predicted CLV - cost to serve",
            ),
            panel(
                "Alerts by status and tier (per hour)",
                [
                    target(
                        f"sum by (status, tier) (rate(churnwatch_alerts_total[{RATE}])) * 3600",
                        "{{status}} {{tier}}",
                    )
                ],
                unit="short",
            ),
            panel(
                "Alert reasons by status, firing vs resolved (per hour)",
                [
                    target(
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
                    target(
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


def pipeline() -> dict:
    return dashboard(
        "churnwatch-pipeline",
        "churnwatch · pipeline health",
        [
            panel(
                "Events consumed per second, by type",
                [
                    target(
                        f"sum by (type) (rate(churnwatch_events_consumed_total[{RATE}]))",
                        "{{type}}",
                    )
                ],
                unit="ops",
            ),
            panel(
                "Consumer lag (messages)",
                [target("sum by (topic) (churnwatch_consumer_lag_messages)", "{{topic}}")],
            ),
            panel(
                "Dead letters per second, by reason",
                [
                    target(
                        f"sum by (reason) (rate(churnwatch_events_rejected_total[{RATE}]))",
                        "{{reason}}",
                    )
                ],
                unit="ops",
                width=8,
            ),
            panel(
                "Duplicates per second",
                [
                    target(
                        f"sum by (type) (rate(churnwatch_events_duplicate_total[{RATE}]))",
                        "{{type}}",
                    )
                ],
                unit="ops",
                width=8,
            ),
            panel(
                "Late events per second",
                [
                    target(
                        f"sum by (type) (rate(churnwatch_events_late_total[{RATE}]))",
                        "{{type}}",
                    )
                ],
                unit="ops",
                width=8,
            ),
            panel(
                "Processing latency (record timestamp → state written)",
                [
                    target(
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(churnwatch_event_latency_seconds_bucket[{RATE}])))",
                        "p50",
                    ),
                    target(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(churnwatch_event_latency_seconds_bucket[{RATE}])))",
                        "p99",
                    ),
                ],
                unit="s",
            ),
            panel(
                "Event-time lag by partition",
                [target("max by (partition) (churnwatch_event_time_lag_seconds)", "{{partition}}")],
                unit="s",
            ),
            panel(
                "Memory per worker (RSS)",
                [target("process_resident_memory_bytes", "{{instance}}")],
                unit="bytes",
                width=8,
            ),
            panel(
                "Batch processing time, p99",
                [
                    target(
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
                    target("churnwatch_redis_up", "up {{instance}}"),
                    target("churnwatch_redis_buffered", "buffered {{instance}}"),
                    target("increase(churnwatch_redis_overflows_total[1h])", "overflows/h"),
                ],
                width=8,
            ),
        ],
        ["pipeline"],
    )


DASHBOARDS = {
    "retention.json": retention,
    "cohorts.json": cohorts,
    "at-risk.json": at_risk,
    "pipeline.json": pipeline,
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
