"""``churnwatch_redis_up``, which the ChurnwatchRedisDown alert reads, follows a real
Redis going away and coming back, and only workers that write to Redis export it.

No broker: the sink is driven directly, against a real ``redis-server``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from retention.alerts import Lifecycle
from retention.apply import DEFAULT_POLICY, apply
from retention.risk import load_risk_config
from retention.state import CustomerState
from retention.timeutil import from_micros, parse_time, to_micros
from schemas.events import Purchase
from streams.metrics import PipelineMetrics
from streams.redis_server import EmbeddedRedis
from streams.redis_sink import RedisSink
from streams.redis_view import RedisView
from streams.settings import Settings

pytestmark = pytest.mark.integration
LIFECYCLE = Lifecycle(load_risk_config(None), None, Settings().window)
#: The sink pings an idle Redis every 5 s (streams/redis_sink.py): an outage with
#: nothing to write is seen within that, plus slack for a loaded machine.
NOTICE = 20.0


def purchase(n: int) -> CustomerState:
    event = Purchase(
        event_id=f"p{n}",
        customer_id=f"c{n}",
        occurred_at=from_micros(parse_time("2025-06-01T00:00:00Z")),
        amount=10.0 + n,
    )
    state = apply(None, event, to_micros(event.occurred_at), DEFAULT_POLICY).state
    LIFECYCLE.step(state, to_micros(event.occurred_at))
    return state


def redis_up(metrics: PipelineMetrics) -> float | None:
    return metrics.registry.get_sample_value("churnwatch_redis_up")


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


def test_only_a_worker_with_a_redis_sink_exports_redis_metrics() -> None:
    metrics = PipelineMetrics(lambda: [])
    assert b"churnwatch_redis" not in generate_latest(metrics.registry)
    view = RedisView("redis://127.0.0.1:1/0")  # never connected: the sink is not run
    RedisSink(view, LIFECYCLE, metrics, 10, lambda: [])
    RedisSink(view, LIFECYCLE, metrics, 10, lambda: [])  # a second sink adds nothing
    text = generate_latest(metrics.registry).decode()
    # Down until the sink has heard from Redis: a worker never reports an unproven up.
    assert "churnwatch_redis_up 0.0" in text
    for name in ("buffered", "writes_total", "overflows_total", "resyncs_total"):
        assert f"churnwatch_redis_{name}" in text, name


def test_redis_up_follows_the_connection(tmp_path: Path) -> None:
    metrics = PipelineMetrics(lambda: [])
    redis = EmbeddedRedis(tmp_path / "redis")

    async def scenario() -> None:
        view = RedisView(redis.url)
        sink = RedisSink(view, LIFECYCLE, metrics, 100, lambda: [])
        runner = asyncio.create_task(sink.run())
        try:
            sink.offer(purchase(1))  # Redis is not running yet: the write fails
            await until(
                lambda: (metrics.registry.get_sample_value(
                    "churnwatch_redis_writes_total", {"outcome": "failed"}) or 0) > 0,
                NOTICE, "a failed write",
            )  # fmt: skip
            assert redis_up(metrics) == 0
            redis.start()
            assert await sink.wait_settled(NOTICE)
            assert redis_up(metrics) == 1
            redis.stop()  # nothing left to write: only the idle ping can notice
            await until(lambda: redis_up(metrics) == 0, NOTICE, "redis_up 0 after a stop")
            redis.start()
            await until(lambda: redis_up(metrics) == 1, NOTICE, "redis_up 1 after a ping")
            sink.offer(purchase(2))
            assert await sink.wait_settled(NOTICE)
            assert redis_up(metrics) == 1
            assert set(await view.all_views()) == {"c1", "c2"}
        finally:
            runner.cancel()
            await view.close()

    try:
        asyncio.run(scenario())
    finally:
        redis.stop()
