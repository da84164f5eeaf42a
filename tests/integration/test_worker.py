"""A production worker process: live clock, /metrics, /health, clean shutdown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import retention.compiled as compiled
from streams import topics
from streams.kafka_admin import create_topics
from streams.settings import Settings
from streams.workers import WorkerProcess, local_settings
from tests.brokers import new_broker

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_live_worker_ticks_its_partitions_and_serves_metrics(tmp_path: Path) -> None:
    with new_broker(tmp_path) as broker:
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, 2)))
        settings = local_settings(Settings(), broker, 2, tmp_path).replace(
            clock="live", clock_interval=0.5, batch_within=0.15
        )
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.start()
        try:
            started = time.monotonic()
            health = worker.wait_ready(timeout=60)
            ready_after = time.monotonic() - started
            print(f"launch to ready: {ready_after:.1f}s")
            assert health["partitions"] == [0, 1]
            assert health["state_flush"] == {"interval_s": 0.15, "max_records": 1000}
            # `make test` builds the compiled modules first: the worker runs them.
            modules = sorted(name.removesuffix(".py") for name in compiled.MODULES)
            assert sorted(health["compiled"]) == modules
            deadline = time.monotonic() + 30
            values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            while time.monotonic() < deadline:
                values = samples(worker.get_text("/metrics"))
                ticks = values.get(("churnwatch_events_consumed_total", (("type", "tick"),)), 0)
                if ticks >= 4:
                    break
                time.sleep(0.5)
            assert ticks >= 4, worker.log_tail()
            assert values[("churnwatch_state_flush_interval_seconds", ())] == 0.15
            for partition in ("0", "1"):
                key = ("churnwatch_event_time_lag_seconds", (("partition", partition),))
                assert 0 <= values[key] < 10, values[key]
                # Ticks open the current period: its gauges exist from the start.
                labels = (("partition", partition), ("period", "current"))
                assert values[("churnwatch_period_customers_start", labels)] == 0
                assert ("churnwatch_period_start_timestamp_seconds", labels) in values
                assert values[("churnwatch_customers_active", (("partition", partition),))] == 0
                status = (("partition", partition), ("status", "subscribed"))
                assert values[("churnwatch_customers_by_subscription", status)] == 0
        finally:
            worker.stop()
        assert worker.process is not None and worker.process.returncode == 0, worker.log_tail()
