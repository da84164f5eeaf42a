"""The Redis serving view and the HTTP API, on a real broker and a real Redis.

One worker processes a generated history with Redis attached; then Redis is
stopped for 30 seconds while the rest of the history streams in, and started again.
The view must then equal, key by key, what the tables hold (views computed from
the changelog), and nothing may be lost on the way.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka.partitioner import murmur2
from prometheus_client.parser import text_string_to_metric_families

from retention.alerts import Lifecycle
from retention.risk import load_risk_config
from retention.serving import customer_view
from retention.state import CustomerState
from retention.timeutil import from_micros, parse_time, to_micros
from streams import topics
from streams.generator import write_history
from streams.inputs import read_events
from streams.kafka_admin import create_topics, wait_for_zero_lag
from streams.metrics import PipelineMetrics
from streams.produce import publish
from streams.rebuild import rebuild
from streams.redis_server import EmbeddedRedis
from streams.redis_sink import RedisSink
from streams.redis_view import RedisView, expected_queues, view_json
from streams.replay import collect, running_workers, send_ticks, wait_settled
from streams.settings import Settings
from streams.workers import WorkerProcess, local_settings
from tests.brokers import new_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
END = parse_time("2025-06-01T00:00:00Z")
OUTAGE = 30.0


def http(
    worker: WorkerProcess, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(worker.base_url + path, timeout=5) as response:
            if headers is not None:
                headers.update(response.headers)
            return response.status, msgspec.json.decode(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, msgspec.json.decode(exc.read())


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def views_from_tables(customers: dict[str, CustomerState]) -> dict[str, dict[str, Any]]:
    lifecycle = Lifecycle(load_risk_config(None), None, Settings().window)
    return {cid: view_json(customer_view(s, lifecycle)) for cid, s in customers.items()}


def redis_contents(url: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    async def read() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        view = RedisView(url)
        try:
            return await view.all_views(), await view.queues()
        finally:
            await view.close()

    return asyncio.run(read())


def test_view_survives_a_redis_outage_and_the_api_serves_it(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    write_history(history, 600, 120, 5, from_micros(END))
    records = list(read_events(history, "jsonl"))
    cut = len(records) * 2 // 5
    with (
        new_broker(tmp_path) as broker,
        EmbeddedRedis(tmp_path / "redis") as redis,
    ):
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, 4)))
        settings = local_settings(Settings(), broker, 4, tmp_path / "w")
        settings = settings.replace(redis_url=redis.url)
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.start()
        try:
            worker.wait_ready()
            asyncio.run(publish(broker.bootstrap, iter(records[:cut])))
            asyncio.run(
                wait_for_zero_lag(
                    broker.bootstrap, settings.app_id, list(topics.INPUT_TOPICS), timeout=120
                )
            )
            wait_for(
                lambda: (
                    worker.metric("churnwatch_redis_buffered") == 0
                    and worker.metric("churnwatch_redis_writes_total", outcome="written") > 0
                ),
                30,
                "the first views in Redis",
            )
            health = worker.health()
            assert health is not None and health["redis"]["up"] is True

            # Redis goes away for OUTAGE seconds while the rest streams in.
            redis.stop()
            down_at = time.monotonic()
            asyncio.run(publish(broker.bootstrap, iter(records[cut:])))
            asyncio.run(
                send_ticks(broker.bootstrap, 4, to_micros(from_micros(END) + timedelta(days=1)))
            )
            asyncio.run(
                wait_for_zero_lag(
                    broker.bootstrap, settings.app_id, list(topics.CONSUMED_TOPICS), timeout=120
                )
            )
            # Event processing did not wait for Redis: every input is already in state.
            consumed = worker.metric("churnwatch_partition_events", outcome="consumed")
            assert consumed == len(records)
            health = worker.health()
            assert health is not None and health["redis"]["up"] is False
            assert health["status"] == "degraded"
            assert worker.metric("churnwatch_redis_buffered") > 0
            status, body = http(worker, "/at-risk")
            assert status == 503 and "Redis" in body["error"]
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
            redis.start()
            wait_for(
                lambda: (
                    worker.metric("churnwatch_redis_buffered") == 0
                    and worker.metric("churnwatch_redis_up") == 1
                ),
                60,
                "the view to catch up",
            )

            # The API: queues by value at risk, snapshots as in the table, errors.
            status, body = http(worker, "/at-risk?limit=1000")
            assert status == 200 and body["count"] > 0
            values = [c["value_at_risk"] for c in body["customers"]]
            assert values == sorted(values, reverse=True)
            assert {c["tier"] for c in body["customers"]} <= {"medium", "high", "critical"}
            status, critical = http(worker, "/at-risk?tier=critical&limit=5")
            assert status == 200 and all(c["tier"] == "critical" for c in critical["customers"])
            segment = body["customers"][0]["segment"]
            if segment:
                status, seg = http(worker, f"/at-risk?segment={segment}&limit=20")
                assert status == 200 and all(c["segment"] == segment for c in seg["customers"])
            for bad in ("?limit=0", "?limit=x", "?tier=bogus", "?colour=red", "?segment=%3Cx%3E"):
                status, err = http(worker, "/at-risk" + bad)
                assert status == 400 and err["error"], bad
            status, err = http(worker, "/customers/no-such-customer")
            assert status == 404 and err["error"] == "unknown customer"
            snapshots = {}
            for customer in body["customers"][:10]:
                status, snap = http(worker, f"/customers/{customer['customer_id']}")
                assert status == 200 and snap.pop("source") == "table"
                snapshots[snap["customer_id"]] = snap
            families = list(text_string_to_metric_families(worker.get_text("/metrics")))
            assert any(f.name == "churnwatch_customers_by_tier" for f in families)
            assert worker.metric("churnwatch_redis_overflows_total") == 0
        finally:
            worker.stop()
        customers, _ = asyncio.run(collect(broker.bootstrap, settings.app_id))
        views, queues = redis_contents(redis.url)
        # A view rebuilt from the tables alone, from scratch, is the same view.
        rebuilt = asyncio.run(rebuild(settings, flush=True))
        assert rebuilt.customers == rebuilt.written == 600 and rebuilt.deleted > 600
        assert redis_contents(redis.url) == (views, queues)
    expected = views_from_tables(customers)
    assert len(expected) == 600
    assert views.keys() == expected.keys()
    mismatched = [cid for cid in expected if views[cid] != expected[cid]]
    assert not mismatched, f"{len(mismatched)} views differ, e.g. {mismatched[:3]}"
    assert queues == expected_queues_from_json(expected)
    for cid, snap in snapshots.items():
        assert snap == expected[cid]


def expected_queues_from_json(views: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from retention.serving import CustomerView

    return expected_queues(msgspec.convert(v, CustomerView) for v in views.values())


def test_full_buffer_is_resynced_from_the_table(tmp_path: Path) -> None:
    """Past its capacity the sink drops views and, once Redis is back, rewrites
    every customer of its table: nothing stays behind."""
    lifecycle = Lifecycle(load_risk_config(None), None, Settings().window)
    from retention.apply import DEFAULT_POLICY, apply
    from retention.state import encode_state
    from schemas.events import Purchase

    table: dict[bytes, bytes] = {b"\x00partition/0": b"internal"}
    states = []
    for n in range(40):
        event = Purchase(
            event_id=f"p{n}", customer_id=f"c{n:03d}", occurred_at=from_micros(END), amount=n + 1.0
        )
        state = apply(None, event, to_micros(event.occurred_at), DEFAULT_POLICY).state
        lifecycle.step(state, to_micros(event.occurred_at))
        table[state.customer_id.encode()] = encode_state(state)
        states.append(state)
    metrics = PipelineMetrics(lambda: [])
    redis = EmbeddedRedis(tmp_path / "redis")

    async def scenario() -> None:
        view = RedisView(redis.url)
        sink = RedisSink(view, lifecycle, metrics, 10, lambda: table.items())
        runner = asyncio.create_task(sink.run())
        try:
            for state in states:  # Redis is not running yet
                sink.offer(state)
            await asyncio.sleep(1.0)
            assert len(sink.buffer) == 10 and sink.resync_needed
            redis.start()
            assert await sink.wait_settled(30)
            stored = await view.all_views()
        finally:
            runner.cancel()
            await view.close()
        assert stored == {s.customer_id: view_json(customer_view(s, lifecycle)) for s in states}

    try:
        asyncio.run(scenario())
    finally:
        redis.stop()
    samples = {
        s.name: s.value for f in metrics.registry.collect() for s in f.samples if not s.labels
    }
    assert samples["churnwatch_redis_overflows_total"] == 30
    assert samples["churnwatch_redis_resyncs_total"] == 1


def test_any_worker_answers_for_every_customer(tmp_path: Path) -> None:
    """Two workers, no Redis: each forwards /customers/{id} to the owner's table."""
    history = tmp_path / "history.jsonl"
    write_history(history, 200, 60, 9, from_micros(END))
    with new_broker(tmp_path) as broker:
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, 4)))
        settings = local_settings(Settings(), broker, 4, tmp_path)
        with running_workers(settings, 2, tmp_path) as workers:
            wait_settled(workers, 4)
            asyncio.run(publish(broker.bootstrap, read_events(history, "jsonl")))
            asyncio.run(
                wait_for_zero_lag(
                    broker.bootstrap, settings.app_id, list(topics.INPUT_TOPICS), timeout=120
                )
            )
            customers, _ = asyncio.run(collect(broker.bootstrap, settings.app_id))
            expected = views_from_tables(customers)
            owners = [set(w.health()["partitions"]) for w in workers]  # type: ignore[index]
            assert all(owners) and not owners[0] & owners[1]
            owner_of = {p: w.base_url for w, ps in zip(workers, owners, strict=True) for p in ps}
            for worker in workers:
                for customer_id, view in expected.items():
                    headers: dict[str, str] = {}
                    status, body = http(worker, f"/customers/{customer_id}", headers)
                    assert status == 200, (customer_id, body)
                    assert body.pop("source") == "table"
                    assert body == view
                    # Answered by the owner of the key's partition (Kafka's murmur2).
                    partition = (murmur2(customer_id.encode()) & 0x7FFFFFFF) % 4
                    assert headers["X-Churnwatch-Worker"] == owner_of[partition]
                status, body = http(worker, "/customers/nobody")
                assert status == 404
                status, body = http(worker, "/at-risk")
                assert status == 503 and "Redis" in body["error"]
