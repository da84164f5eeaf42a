"""A restarted worker recovers the customers table from its changelog."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from bench import recovery
from retention.state import CustomerState
from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.generator import write_history
from streams.inputs import read_events
from streams.kafka_admin import create_topics, wait_for_zero_lag
from streams.produce import publish
from streams.replay import collect, tick_and_wait, wait_applied
from streams.settings import Settings
from streams.workers import WorkerProcess, free_port, local_settings
from tests import reliability
from tests.brokers import new_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def strip_risk(customers: dict[str, CustomerState]) -> dict[str, CustomerState]:
    return {k: msgspec.structs.replace(v, risk=None) for k, v in customers.items()}


@pytest.mark.parametrize("batched", [True, False], ids=["batched-restore", "faust-recovery"])
def test_restarted_worker_recovers_state_and_counters(tmp_path: Path, batched: bool) -> None:
    """A second worker on an empty data directory recovers the first one's table and
    computes on from it exactly: with the whole changelog read by the batched restore
    (streams/restore.py, on every partition, however short), and by Faust's own
    recovery alone."""
    history = tmp_path / "history.jsonl"
    end = parse_time("2025-06-01T00:00:00Z")
    write_history(history, 1500, 150, 21, from_micros(end))
    with new_broker(tmp_path) as broker:
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, 4)))
        settings = local_settings(Settings(), broker, 4, tmp_path / "first")
        group = settings.app_id
        first = WorkerProcess(settings, tmp_path / "first.log")
        first.start()
        try:
            first.wait_ready()
            asyncio.run(publish(broker.bootstrap, read_events(history, "jsonl")))
            asyncio.run(
                wait_for_zero_lag(broker.bootstrap, group, list(topics.INPUT_TOPICS), timeout=300)
            )
            # No input lag is not every event applied: events waiting for the aligned
            # time are released only once every peer's last progress announcement
            # (churnwatch.repartition, not an input topic) has been read, which can
            # come seconds later (1,259 and 1,374 of 1,500 customers counted at zero
            # lag, on this branch and on dcc1876 alike). Wait for the state itself.
            asyncio.run(wait_applied(broker.bootstrap, group, timeout=60))
            deadline = time.monotonic() + 60
            while first.metric("churnwatch_customers") < 1500 and time.monotonic() < deadline:
                time.sleep(0.2)
            customers_before = first.metric("churnwatch_customers")
        finally:
            first.stop()
        before_customers, before_partitions = asyncio.run(collect(broker.bootstrap, group))
        assert customers_before == len(before_customers) == 1500

        second = WorkerProcess(
            settings.replace(
                web_port=free_port(),
                datadir=str(tmp_path / "second"),
                batched_restore=batched,
                batched_restore_min=1,
                log_level="info",
            ),
            tmp_path / "second.log",
        )
        started = time.monotonic()
        second.start()
        try:
            second.wait_ready()
            deadline = time.monotonic() + 60
            while second.metric("churnwatch_customers") < 1500 and time.monotonic() < deadline:
                time.sleep(0.2)
            recovered = time.monotonic() - started
            reliability.append(
                {
                    "test": "recovery: restart a worker, the table from its changelog"
                    + (" (batched restore)" if batched else ""),
                    "customers": 1500,
                    "restart_to_recovered_seconds": round(recovered, 1),
                }
            )
            assert second.metric("churnwatch_customers") == 1500
            restored = "batched restore: " in second.log_path.read_text()
            assert restored == batched
            # A tick makes the new owner rewrite every partition record from what it
            # recovered: the counters must come back exactly, not from zero.
            asyncio.run(tick_and_wait(broker.bootstrap, group, 4, end, timeout=60))
        finally:
            second.stop()
        after_customers, after_partitions = asyncio.run(collect(broker.bootstrap, group))
    # The tick after the restart moved event time on, which rightly re-assesses the
    # customers then due (their risk marks move forward); everything else is equal.
    assert strip_risk(after_customers) == strip_risk(before_customers)
    for customer_id, state in after_customers.items():
        old, new = before_customers[customer_id].risk, state.risk
        if old is not None:
            assert new is not None and new.at >= old.at and new.sequence >= old.sequence
    for before, after in zip(before_partitions, after_partitions, strict=True):
        assert (after.consumed, after.valid, after.deadletter, after.duplicates) == (
            before.consumed,
            before.valid,
            before.deadletter,
            before.duplicates,
        )
        assert after.ticks == before.ticks + 1


LARGE = 50_000


def test_a_large_changelog_recovers_exactly_and_restarts_fast(tmp_path: Path) -> None:
    """50,000 customers (1.1 KB states) written to the changelog as a worker would
    (``bench/recovery.py``; ``make bench`` runs it with 1M): a worker with an empty
    RocksDB directory recovers them all, and a restart on the same directory reads
    only the changelog's tail. After each, every customer is counted and a sample
    read through the HTTP API equals the view of what was written."""
    with new_broker(tmp_path) as broker:
        partitions = recovery.PARTITIONS  # the changelog's, as write_changelog makes it
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, partitions)))
        settings = local_settings(Settings(), broker, partitions, tmp_path).replace(
            store="rocksdb://", datadir=str(tmp_path / "data")
        )
        written = asyncio.run(recovery.write_changelog(broker.bootstrap, settings.app_id, LARGE, 5))
        assert written.state_bytes > 1000
        figures: dict[str, object] = {
            "test": "recovery: a large changelog (RocksDB)",
            "customers": LARGE,
            "state_bytes": written.state_bytes,
        }
        for phase in ("cold_start", "restart"):
            log = tmp_path / f"{phase}.log"
            worker = WorkerProcess(settings.replace(web_port=free_port()), log)
            launched = time.monotonic()
            worker.start()
            try:
                figures[f"{phase}_to_ready_seconds"] = round(
                    recovery.ready(worker, LARGE, launched, timeout=300), 1
                )
                assert worker.metric("churnwatch_customers") == LARGE
                assert recovery.read_back(worker, written.sample) == 0
            finally:
                worker.stop()
    reliability.append(figures)
    # Local RocksDB files spare the restart the changelog: it must not take as long.
    assert figures["restart_to_ready_seconds"] < figures["cold_start_to_ready_seconds"]
