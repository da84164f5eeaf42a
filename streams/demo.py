"""The demo: the whole pipeline on one machine with nothing but this package.

An embedded broker, one worker process, and a synthetic history streamed at a
steady rate; afterwards the demo keeps the clock ticking in wall time. While
history streams, event time is carried by the events themselves (the worker's
watermark follows them), which is why the demo drives the clock itself instead
of the worker's live clock: wall-clock ticks during a backfill would make every
historical event late.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from schemas.events import ClockTick
from streams import topics
from streams.embedded import describe, embedded_broker
from streams.generator import generate
from streams.inputs import route
from streams.kafka_admin import create_topics, wait_for_zero_lag
from streams.produce import publish
from streams.redis_server import EmbeddedRedis
from streams.settings import Settings
from streams.workers import WorkerProcess, local_settings

SUMMARY_EVERY = 5.0


def scrape(worker: WorkerProcess) -> dict[str, float]:
    """Totals of the worker's input counters by name (labels summed, clock ticks left out)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(worker.get_text("/metrics")):
        for sample in family.samples:
            if sample.labels.get("type") == "tick":
                continue
            if sample.name.endswith("_total") or sample.name == "churnwatch_customers":
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def _ticks(bootstrap: str, partitions: int, interval: float, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        while not stop.is_set():
            value = msgspec.json.encode(ClockTick(time=datetime.now(UTC), source="demo"))
            for partition in range(partitions):
                await producer.send(topics.CLOCK, value, partition=partition)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        await producer.stop()


async def _summaries(worker: WorkerProcess, console: Console, stop: asyncio.Event) -> None:
    previous, previous_at = 0.0, time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SUMMARY_EVERY)
        try:
            totals = await asyncio.to_thread(scrape, worker)
        except OSError as exc:
            console.print(f"[yellow]metrics not available: {exc}[/]")
            continue
        consumed = totals.get("churnwatch_events_consumed_total", 0.0)
        now = time.monotonic()
        rate = (consumed - previous) / (now - previous_at)
        previous, previous_at = consumed, now
        console.print(
            f"events {consumed:,.0f} ({rate:,.0f}/s)"
            f"  valid {totals.get('churnwatch_events_valid_total', 0):,.0f}"
            f"  dead-lettered {totals.get('churnwatch_events_rejected_total', 0):,.0f}"
            f"  duplicates {totals.get('churnwatch_events_duplicate_total', 0):,.0f}"
            f"  late {totals.get('churnwatch_events_late_total', 0):,.0f}"
            f"  customers {totals.get('churnwatch_customers', 0):,.0f}",
            soft_wrap=True,
        )


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass(frozen=True)
class DemoPlan:
    """What the demo streams, and for how long (None: until interrupted)."""

    duration: float | None = None
    customers: int = 2000
    days: int = 120
    rate: float = 800.0
    seed: int = 7


async def _run(settings: Settings, worker: WorkerProcess, plan: DemoPlan, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if plan.duration is not None:
        loop.call_later(plan.duration, stop.set)
    end = datetime.now(UTC).replace(microsecond=0)
    records = (route(line) for line in generate(plan.customers, plan.days, plan.seed, end))
    summaries = asyncio.create_task(_summaries(worker, console, stop))
    streaming = asyncio.create_task(publish(settings.bootstrap, records, rate=plan.rate))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({streaming, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if streaming.done():
        stats = streaming.result()
        console.print(f"[green]history streamed[/]: {stats.published:,} records")
        # Wall-clock ticks before the worker has caught up would make the rest late.
        catch_up = asyncio.create_task(
            wait_for_zero_lag(
                settings.bootstrap, settings.app_id, list(topics.INPUT_TOPICS), timeout=3600
            )
        )
        await asyncio.wait({catch_up, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not catch_up.done():
            await _cancel(catch_up)
        else:
            console.print("worker caught up; the clock now ticks in wall time")
        clock = asyncio.create_task(
            _ticks(settings.bootstrap, settings.partitions, settings.clock_interval, stop)
        )
        await stop.wait()
        await clock
    else:
        await _cancel(streaming)
    await summaries
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


def run_demo(
    settings: Settings,
    plan: DemoPlan,
    console: Console,
    redis: bool = True,
    embedded: str = "tansu",
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="churnwatch-demo-"))
    console.print(f"[bold]churnwatch demo[/] (logs and data in {workdir})")
    with contextlib.ExitStack() as stack:
        broker = embedded_broker(
            embedded, log_path=workdir / "broker.log", datadir=workdir / "kafka"
        )
        console.print(f"starting the {describe(broker)} broker")
        stack.enter_context(broker)
        settings = local_settings(settings, broker, settings.partitions, workdir).replace(
            web_port=settings.web_port
        )
        console.print(f"broker   {broker.bootstrap} ({describe(broker)})")
        if redis and not settings.redis_url:
            server = stack.enter_context(EmbeddedRedis(workdir / "redis"))
            settings = settings.replace(redis_url=server.url)
            console.print(f"redis    {server.url} (embedded, serving view)")
        elif settings.redis_url:
            console.print(f"redis    {settings.redis_url}")
        asyncio.run(
            create_topics(settings.bootstrap, dict.fromkeys(topics.ALL_TOPICS, settings.partitions))
        )
        worker = WorkerProcess(settings, workdir / "worker.log")
        worker.start()
        try:
            worker.wait_ready()
            console.print(f"metrics  {worker.base_url}/metrics")
            console.print(f"health   {worker.base_url}/health")
            if settings.redis_url:
                console.print(f"at-risk  curl '{worker.base_url}/at-risk?limit=10'")
                console.print(f"customer curl {worker.base_url}/customers/<customer_id>")
            console.print(
                f"streaming {plan.customers:,} customers x {plan.days} days of history "
                f"at {plan.rate:,.0f} events/s"
                + (f" for {plan.duration:.0f}s" if plan.duration else " (Ctrl-C to stop)")
            )
            asyncio.run(_run(settings, worker, plan, console))
        finally:
            worker.stop()
    console.print("demo stopped")
