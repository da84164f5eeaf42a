"""Every query of every Grafana dashboard answers, against a real Prometheus.

Grafana itself cannot be installed here, so the dashboards are checked where they
can break: a real Prometheus (Debian's) scrapes a real worker that has processed a
generated history, with the recording rules loaded, and each panel's PromQL must
run without error and return at least one series.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from retention.timeutil import from_micros, parse_time, to_micros
from streams import topics
from streams.generator import write_history
from streams.inputs import read_events
from streams.kafka_admin import create_topics, wait_for_zero_lag
from streams.processes import stop_process_group
from streams.produce import publish
from streams.redis_server import EmbeddedRedis
from streams.replay import tick_and_wait
from streams.settings import Settings
from streams.workers import WorkerProcess, local_settings
from tests.brokers import new_broker
from tests.prometheus import prometheus_query, risk_with_targets, start_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
END = parse_time("2025-06-01T00:00:00Z")
#: Grafana's variables, as the test stands them in (scrapes are every second).
VARIABLES = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # rows hold their own panels


def expressions() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def test_dashboards_are_generated_from_build_py() -> None:
    sys.path.insert(0, str(GRAFANA))
    try:
        import build  # deploy/grafana/build.py
    finally:
        sys.path.remove(str(GRAFANA))
    rendered = build.render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], f"{path.name}: run `make dashboards`"


def test_dashboards_use_the_provisioned_datasource() -> None:
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        for panel in panels(dashboard):
            assert panel["datasource"]["uid"] == "churnwatch-prometheus", panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "churnwatch-prometheus"
    assert len(uids) == 5


def test_every_panel_query_returns_series(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    write_history(history, 500, 150, 3, from_micros(END))
    with (
        new_broker(tmp_path) as broker,
        EmbeddedRedis(tmp_path / "redis") as redis,
    ):
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, 2)))
        settings = local_settings(Settings(), broker, 2, tmp_path).replace(
            redis_url=redis.url, risk=risk_with_targets(tmp_path)
        )
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.start()
        prometheus = None
        try:
            worker.wait_ready()
            prometheus, base = start_prometheus(tmp_path, f"127.0.0.1:{settings.web_port}")
            asyncio.run(publish(broker.bootstrap, read_events(history, "jsonl")))
            asyncio.run(
                wait_for_zero_lag(
                    broker.bootstrap, settings.app_id, list(topics.INPUT_TOPICS), timeout=120
                )
            )
            # Then a day passes: May closes, June opens (ratios of the empty June have
            # no sample, as a zero denominator has no ratio; May's are shown).
            moment = to_micros(from_micros(END) + timedelta(days=1))
            asyncio.run(tick_and_wait(broker.bootstrap, settings.app_id, 2, moment, timeout=60))
            # Enough scrapes for rates over the stand-in windows, and rule evaluations.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                up = prometheus_query(base, 'up{job="churnwatch"} == 1')
                ready = prometheus_query(base, "churnwatch:customers_by_tier:sum")
                if up.get("data", {}).get("result") and ready.get("data", {}).get("result"):
                    break
                time.sleep(0.5)
            time.sleep(6)
            failures = []
            for dashboard, title, expr in expressions():
                query = expr
                for name, value in VARIABLES.items():
                    query = query.replace(name, value)
                answer = prometheus_query(base, query)
                if answer.get("status") != "success":
                    failures.append(f"{dashboard} / {title}: error {answer.get('error')}: {expr}")
                elif not answer["data"]["result"]:
                    failures.append(f"{dashboard} / {title}: no series: {expr}")
            assert not failures, "\n".join(failures)
            assert len(expressions()) >= 30
        finally:
            if prometheus is not None:
                stop_process_group(prometheus, timeout=10)
            worker.stop()
