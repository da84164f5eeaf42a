"""The alerting rules against a real Prometheus scraping a real worker.

promtool's unit tests (deploy/prometheus/tests/alerts_test.yml) feed the rules
series written by hand; this test proves those series are the ones a worker really
exports, with the labels a real scrape gives them. A worker with Redis processes a
generated history; then every vector selector of alerts.yml must return series,
every rule must evaluate without error, the alerts about a broken deployment must
stay inactive while nothing is broken, and go pending when Redis, then the worker,
really stop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.generator import write_history
from streams.inputs import read_events
from streams.kafka_admin import create_topics, wait_for_zero_lag
from streams.processes import stop_process_group
from streams.produce import publish
from streams.redis_server import EmbeddedRedis
from streams.settings import Settings
from streams.workers import WorkerProcess, local_settings
from tests.brokers import new_broker
from tests.prometheus import (
    ALERTS,
    RULES,
    prometheus_get,
    prometheus_query,
    risk_with_targets,
    rules,
    start_prometheus,
    vector_selectors,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
END = parse_time("2025-06-01T00:00:00Z")
#: Alerts whose condition is false on a healthy deployment with Redis. The input,
#: lag and risk alerts are left out: their conditions depend on the history's pace.
HEALTHY_SILENT = (
    "ChurnwatchWorkerDown",
    "ChurnwatchWorkersAbsent",
    "ChurnwatchWorkerMetricsMissing",
    "ChurnwatchRedisDown",
)


def active_alerts(base: str) -> dict[str, str]:
    """Alert name -> state (pending or firing) of every active alert."""
    body = prometheus_get(base, "/api/v1/alerts")
    return {a["labels"]["alertname"]: a["state"] for a in body["data"]["alerts"]}


def until_active(base: str, name: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = active_alerts(base)
        if name in active:
            return active
        time.sleep(0.5)
    raise AssertionError(f"{name} not active within {timeout} s: {active_alerts(base)}")


def series(base: str, expr: str) -> list[Any]:
    answer = prometheus_query(base, expr)
    assert answer.get("status") == "success", (expr, answer)
    return list(answer["data"]["result"])


def test_alert_rules_read_what_a_worker_exports(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    write_history(history, 300, 120, 5, from_micros(END))
    selectors = sorted({s for rule in rules(ALERTS) for s in vector_selectors(rule["expr"])})
    with new_broker(tmp_path) as broker:
        redis = EmbeddedRedis(tmp_path / "redis")
        redis.start()
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, 2)))
        settings = local_settings(Settings(), broker, 2, tmp_path).replace(
            redis_url=redis.url, risk=risk_with_targets(tmp_path)
        )
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.start()
        prometheus = None
        try:
            worker.wait_ready()
            prometheus, base = start_prometheus(
                tmp_path, f"127.0.0.1:{settings.web_port}", (RULES, ALERTS)
            )
            asyncio.run(publish(broker.bootstrap, read_events(history, "jsonl")))
            asyncio.run(
                wait_for_zero_lag(
                    broker.bootstrap, settings.app_id, list(topics.INPUT_TOPICS), timeout=120
                )
            )
            missing = selectors
            deadline = time.monotonic() + 60
            while missing and time.monotonic() < deadline:
                missing = [s for s in missing if not series(base, s)]
                time.sleep(0.5)
            assert not missing, f"no series for {missing}"
            time.sleep(3)  # three more scrapes and rule evaluations on the settled worker

            groups = prometheus_get(base, "/api/v1/rules")["data"]["groups"]
            evaluated = {
                rule["name"]: rule
                for group in groups
                if group["file"].endswith("alerts.yml")
                for rule in group["rules"]
            }
            expected = {rule.get("alert") or rule["record"] for rule in rules(ALERTS)}
            assert set(evaluated) == expected
            for name, rule in evaluated.items():
                assert rule["health"] == "ok", (name, rule.get("lastError"))
            # A real share: tiers were assessed (the denominator is not zero).
            (share,) = series(base, "churnwatch:customers_critical:share")
            assert 0 <= float(share["value"][1]) <= 1
            healthy = active_alerts(base)
            assert not set(HEALTHY_SILENT) & set(healthy), healthy

            redis.stop()  # the sink's idle ping sees it within 5 s, the next scrape then
            active = until_active(base, "ChurnwatchRedisDown", 30)
            assert active["ChurnwatchRedisDown"] == "pending"  # `for: 2m` not yet over
            assert "ChurnwatchWorkerDown" not in active

            worker.stop()
            active = until_active(base, "ChurnwatchWorkerDown", 30)
            assert active["ChurnwatchWorkerDown"] == "pending"
        finally:
            if prometheus is not None:
                stop_process_group(prometheus, timeout=10)
            worker.stop()
            redis.stop()
