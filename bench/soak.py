"""Soak: does a worker's memory settle, and does it keep up, over minutes of live input?

Leaks and slowly growing backlogs do not show in tests that last seconds. This runs
one real worker process on an embedded broker, feeds it a generated business at a
fixed rate for a set time, samples its resident memory, its backlog, the group's committed
lag and events processed, and fails when memory keeps growing after warm-up or the
worker falls behind (``bench/soak_verdict.py`` says which lag is bounded how).

The stream is a window of a generated history (``streams/generator.py``): its
customers are those born before the window opens, so the set of keys the worker
holds stops growing once each has been seen, and memory that grows after warm-up is
not explained by new customers. Event time runs faster than wall time (about two
years per run by default): at one event-time second per second no month would roll
over and no customer would lapse in ten minutes, and those are the code paths that
hold state over time. The worker's clock is off, as in replays; this process ticks
every clock partition at the event time it published a few seconds before.

Some growth after warm-up is by design with the memory store (the default, as in
replays and tests): each customer's state keeps its purchase days and every event
id, about 40 bytes per event measured on the table's values. The RSS bound leaves
room for that; ``--store rocksdb://`` measures the production store instead.
Figures are machine-dependent.

    python -m bench.soak [--duration 600] [--rate 300] [--customers N] [--out soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bench.soak_verdict import Bounds, Sample, Summary, summarize
from retention.timeutil import DAY, SECOND, Micros, from_micros, iso
from schemas.events import ClockTick
from streams import topics
from streams.embedded import KINDS, embedded_broker
from streams.generator import generate
from streams.inputs import Record, route
from streams.kafka_admin import consumer_lag, create_topics, wait_for_zero_lag
from streams.produce import publish
from streams.replay import send_ticks, wait_settled
from streams.settings import Settings
from streams.workers import WorkerProcess, local_settings

#: Event time a run covers when --customers is not given, in days.
DEFAULT_SPAN_DAYS = 730
#: Live-window events per generated customer per day of window, measured on the
#: generator's default profile (0.054 for 2,000 customers over 730 days); only used
#: to size the generated history, which is regenerated longer if it falls short.
WINDOW_DENSITY = 0.05
MB = 1024 * 1024


# --- the live stream -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LiveStream:
    """The records to publish, in order, and where they sit in event time."""

    records: list[Record]
    customers: int  # generated
    population: int  # born before the window: the only customers streamed
    history_days: int
    start: Micros  # the window's opening
    first: Micros  # first and last event time streamed
    last: Micros

    @property
    def span_days(self) -> float:
        return (self.last - self.first) / DAY


def _customer_index(key: bytes | None, customers: int) -> int | None:
    """The generator's customer number for ``c000042``-style keys, None otherwise
    (malformed records carry random ids, which are not customers)."""
    if key is None or not key.startswith(b"c") or not key[1:].isdigit():
        return None
    index = int(key[1:])
    return index if index < customers else None


def _window(records: list[Record], customers: int, start: Micros, count: int) -> list[Record]:
    """The first ``count`` records at or after ``start`` of customers seen before it.

    Records whose time cannot be read (malformed ones) take the time of the record
    before them, which is where the generator put them."""
    first: dict[bytes, Micros] = {}
    for record in records:
        if record.occurred_at is not None and _customer_index(record.key, customers) is not None:
            assert record.key is not None
            seen = first.get(record.key)
            if seen is None or record.occurred_at < seen:
                first[record.key] = record.occurred_at
    born_late = {key for key, at in first.items() if at >= start}
    live: list[Record] = []
    clock: Micros | None = None
    for record in records:
        clock = record.occurred_at if record.occurred_at is not None else clock
        if clock is None or clock < start or record.key in born_late:
            continue
        live.append(record)
        if len(live) == count:
            break
    return live


def live_stream(customers: int, count: int, seed: int, end: datetime) -> LiveStream:
    """``count`` records of a generated history's second half, for ``customers``
    generated customers; the history is lengthened until the window holds enough."""
    end_micros = round(end.timestamp() * SECOND)
    days = math.ceil(2.2 * count / (customers * WINDOW_DENSITY)) + 30
    while True:
        records = [route(line) for line in generate(customers, days, seed, end)]
        start = end_micros - days * DAY // 2
        live = _window(records, customers, start, count)
        if len(live) == count:
            break
        if days > 100 * 365:
            raise ValueError(
                f"{customers} customers cannot make {count:,} events in a century of "
                "history: ask for more customers"
            )
        days = math.ceil(days * 1.5)
    times = [r.occurred_at for r in live if r.occurred_at is not None]
    population = {r.key for r in live if _customer_index(r.key, customers) is not None}
    return LiveStream(live, customers, len(population), days, start, min(times), max(times))


class Feed:
    """Hands records to the publisher and remembers how far it got in event time."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.sent = 0
        self.frontier: Micros | None = None

    def __iter__(self) -> Iterator[Record]:
        for record in self.records:
            at = record.occurred_at
            if at is not None and (self.frontier is None or at > self.frontier):
                self.frontier = at
            self.sent += 1
            yield record


async def _ticks(
    bootstrap: str, partitions: int, every: float, delay: float, feed: Feed, stop: asyncio.Event
) -> int:
    """Clock ticks at the event time published ``delay`` seconds earlier, as a live
    clock sends wall time: partitions with no due event still close periods and lapse
    customers. The delay stands for the milliseconds between an event's time and the
    clock's in production: event time here runs days per second, so a tick at the
    newest published time would overtake events still in flight on other topics and
    make them late."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    sent = 0
    seen: deque[tuple[float, Micros]] = deque()
    try:
        while not stop.is_set():
            now = time.monotonic()
            if feed.frontier is not None:
                seen.append((now, feed.frontier))
            moment: Micros | None = None
            while seen and seen[0][0] <= now - delay:
                moment = seen.popleft()[1]
            if moment is not None:
                value = msgspec.json.encode(ClockTick(time=from_micros(moment), source="soak"))
                for partition in range(partitions):
                    await producer.send(topics.CLOCK, value, partition=partition)
                sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        await producer.stop()
    return sent


# --- samples -------------------------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its children (psutil, else /proc)."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {pid}") from None
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


def worker_figures(text: str) -> dict[str, Any]:
    """The worker's own counts from its /metrics text."""
    sums = {"consumed": 0.0, "alerts": 0.0, "due": 0.0, "rejected": 0.0}
    sums |= {"duplicates": 0.0, "late": 0.0, "customers": 0.0}
    names = {
        "churnwatch_events_consumed_total": "consumed",
        "churnwatch_alerts_total": "alerts",
        "churnwatch_events_rejected_total": "rejected",
        "churnwatch_events_duplicate_total": "duplicates",
        "churnwatch_events_late_total": "late",
        "churnwatch_customers": "customers",
    }
    watermarks: list[float] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names and sample.labels.get("type") != "tick":
                sums[names[sample.name]] += sample.value
            elif sample.name == "churnwatch_risk_assessments_total":
                if sample.labels.get("trigger") == "due":
                    sums["due"] += sample.value
            elif sample.name == "churnwatch_watermark_timestamp_seconds":
                watermarks.append(sample.value)
    figures: dict[str, Any] = {name: int(value) for name, value in sums.items()}
    figures["watermark"] = iso(round(min(watermarks) * SECOND)) if watermarks else None
    return figures


async def take_sample(
    worker: WorkerProcess, pid: int, bootstrap: str, group: str, t: float, published: int
) -> Sample:
    if not worker.alive():
        code = worker.process.returncode if worker.process else None
        raise RuntimeError(
            f"the worker died during the soak (exit code {code}):\n{worker.log_tail()}"
        )
    rss = rss_bytes(pid)
    try:
        lag, text = await asyncio.gather(
            consumer_lag(bootstrap, group, topics.CONSUMED_TOPICS),
            asyncio.to_thread(worker.get_text, "/metrics", 10.0),
        )
    except OSError as exc:
        raise RuntimeError(f"the worker's /metrics did not answer within 10s: {exc}") from exc
    f = worker_figures(text)
    return Sample(
        t=round(t, 2),
        rss_mb=round(rss / MB, 2),
        lag=sum(lag.values()),
        events=f["consumed"],
        published=published,
        alerts=f["alerts"],
        due_assessments=f["due"],
        deadletter=f["rejected"],
        duplicates=f["duplicates"],
        late=f["late"],
        customers=f["customers"],
        watermark=f["watermark"],
    )


# --- the run -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoakPlan:
    duration: float = 600.0
    rate: float = 300.0
    customers: int | None = None  # None: enough for DEFAULT_SPAN_DAYS of event time
    seed: int = 7
    partitions: int = 4
    sample_every: float = 10.0
    warmup: float | None = None  # None: the first quarter of the run
    tick_every: float = 1.0
    tick_delay: float = 3.0
    drain_timeout: float = 60.0
    max_rss_growth_mb: float = 40.0
    max_backlog: int | None = None  # None: ten seconds of input
    max_backlog_slope: float | None = None  # None: one second of input per minute
    max_lag: int | None = None  # committed lag; None: thirty seconds of input
    embedded: str = "kafka"  # the broker to run on (streams.embedded)

    @property
    def count(self) -> int:
        return math.ceil(self.rate * self.duration)

    @property
    def generated_customers(self) -> int:
        if self.customers is not None:
            return self.customers
        return max(200, round(self.count / (DEFAULT_SPAN_DAYS * WINDOW_DENSITY)))

    @property
    def warmup_seconds(self) -> float:
        return self.duration / 4 if self.warmup is None else self.warmup

    @property
    def bounds(self) -> Bounds:
        return Bounds(
            max_rss_growth_mb=self.max_rss_growth_mb,
            max_backlog=round(10 * self.rate) if self.max_backlog is None else self.max_backlog,
            max_backlog_slope=(
                self.rate if self.max_backlog_slope is None else self.max_backlog_slope
            ),
            max_lag=round(30 * self.rate) if self.max_lag is None else self.max_lag,
        )


@dataclass
class SoakResult:
    plan: dict[str, Any]
    stream: dict[str, Any]
    settings: dict[str, Any]
    samples: list[Sample]
    final: Sample | None
    drain_seconds: float | None
    ticks: int
    summary: Summary

    @property
    def ok(self) -> bool:
        return not self.summary.failures


async def _soak(
    plan: SoakPlan,
    settings: Settings,
    worker: WorkerProcess,
    stream: LiveStream,
    say: Callable[[str], None],
) -> tuple[list[Sample], Sample | None, float | None, int]:
    assert worker.process is not None
    pid, bootstrap, group = worker.process.pid, settings.bootstrap, settings.app_id
    feed = Feed(stream.records)
    stop = asyncio.Event()
    samples: list[Sample] = []
    started = time.monotonic()
    publishing = asyncio.create_task(publish(bootstrap, feed, rate=plan.rate))
    ticking = asyncio.create_task(
        _ticks(bootstrap, settings.partitions, plan.tick_every, plan.tick_delay, feed, stop)
    )
    publishing.add_done_callback(lambda _: stop.set())
    previous: Sample | None = None
    try:
        while True:
            t = time.monotonic() - started
            sample = await take_sample(worker, pid, bootstrap, group, t, feed.sent)
            if samples and sample.t - samples[-1].t < 1.0:
                samples.pop()  # the stream ended just after a sample: keep the later one
            samples.append(sample)
            say(_progress(sample, previous))
            previous = sample
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                next_at = started + len(samples) * plan.sample_every
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
        await publishing  # raises what the publisher raised
    finally:
        stop.set()
        ticks = await ticking
        if not publishing.done():
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
    say(f"stream ended after {samples[-1].t:.0f}s; waiting for the worker to catch up")
    drained_at = time.monotonic()
    try:
        await wait_for_zero_lag(
            bootstrap, group, list(topics.CONSUMED_TOPICS), timeout=plan.drain_timeout
        )
    except TimeoutError as exc:
        say(f"not caught up: {exc}")
        return samples, None, None, ticks
    drain = time.monotonic() - drained_at
    final = await take_sample(worker, pid, bootstrap, group, time.monotonic() - started, feed.sent)
    return samples, final, round(drain, 2), ticks


def _progress(sample: Sample, previous: Sample | None) -> str:
    rate = ""
    if previous is not None and sample.t > previous.t:
        rate = f" ({(sample.events - previous.events) / (sample.t - previous.t):,.0f}/s)"
    return (
        f"{sample.t:6.0f}s  rss {sample.rss_mb:7.1f} MB  backlog {sample.backlog:6,}  "
        f"committed lag {sample.lag:6,}  "
        f"events {sample.events:9,}{rate:<9}  alerts {sample.alerts:6,}  "
        f"event time {(sample.watermark or '-')[:10]}"
    )


def run_soak(
    plan: SoakPlan,
    base: Settings | None = None,
    workdir: Path | None = None,
    say: Callable[[str], None] = print,
) -> SoakResult:
    base = base or Settings.from_env()
    count, customers = plan.count, plan.generated_customers
    say(f"generating {customers:,} customers' history for {count:,} live events")
    stream = live_stream(customers, count, plan.seed, datetime.now(UTC).replace(microsecond=0))
    say(
        f"live window: {stream.population:,} customers, event time {iso(stream.first)} to "
        f"{iso(stream.last)} ({stream.span_days:,.0f} days, "
        f"{stream.span_days / plan.duration:.2f} days per second)"
    )
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        broker = embedded_broker(
            plan.embedded, log_path=workdir / "broker.log", datadir=workdir / "kafka"
        )
        stack.enter_context(broker)
        settings = local_settings(base, broker, plan.partitions, workdir)
        asyncio.run(
            create_topics(settings.bootstrap, dict.fromkeys(topics.ALL_TOPICS, plan.partitions))
        )
        worker = WorkerProcess(settings, workdir / "worker.log")
        stack.callback(worker.stop)
        worker.start()
        wait_settled([worker], plan.partitions)
        # Open the periods at the first event time before any event arrives (as replays do).
        asyncio.run(send_ticks(settings.bootstrap, plan.partitions, stream.first))
        asyncio.run(
            wait_for_zero_lag(settings.bootstrap, settings.app_id, [topics.CLOCK], timeout=60)
        )
        say(
            f"worker pid {worker.process and worker.process.pid}, store {settings.store}, "
            f"{plan.partitions} partitions; {plan.rate:,.0f} events/s for {plan.duration:.0f}s, "
            f"sampling every {plan.sample_every:g}s, warm-up {plan.warmup_seconds:.0f}s"
        )
        samples, final, drain, ticks = asyncio.run(_soak(plan, settings, worker, stream, say))
    summary = summarize(samples, plan.duration, plan.warmup_seconds, plan.bounds)
    if final is None:
        summary.failures.append(
            f"the worker did not catch up within {plan.drain_timeout:g}s of the stream's end"
        )
    else:
        summary.events = final.events
        if final.events != final.published:
            summary.failures.append(
                f"the worker consumed {final.events:,} of {final.published:,} published records"
            )
    stream_info = {
        "customers": stream.customers,
        "population": stream.population,
        "history_days": stream.history_days,
        "records": len(stream.records),
        "first_event": iso(stream.first),
        "last_event": iso(stream.last),
        "span_days": round(stream.span_days, 1),
    }
    return SoakResult(
        plan={**asdict(plan), "bounds": asdict(plan.bounds), "warmup": plan.warmup_seconds},
        stream=stream_info,
        settings={
            "store": settings.store,
            "partitions": settings.partitions,
            "batch_max": settings.batch_max,
            "commit_interval": settings.commit_interval,
        },
        samples=samples,
        final=final,
        drain_seconds=drain,
        ticks=ticks,
        summary=summary,
    )


# --- the report ----------------------------------------------------------------------------------
def report(result: SoakResult) -> str:
    s, bounds = result.summary, result.plan["bounds"]
    lines = [f"\n{'time s':>8}{'RSS MB':>10}{'backlog':>9}{'lag':>9}{'events':>11}"]
    lines += [
        f"{x.t:8.0f}{x.rss_mb:10.1f}{x.backlog:9,}{x.lag:9,}{x.events:11,}" for x in result.samples
    ]
    final = result.final
    lines += [
        "",
        f"warm-up end            {s.warmup_end:.0f} s (RSS {s.rss_at_warmup_mb:.1f} MB)",
        f"RSS after warm-up      max {s.rss_max_after_warmup_mb:.1f} MB, growth "
        f"{s.rss_growth_mb:.1f} MB (bound {bounds['max_rss_growth_mb']:g}), "
        f"slope {s.rss_slope_mb_per_min:+.2f} MB/min",
        f"backlog after warm-up  slope {s.backlog_slope_per_min:+,.0f} messages/min (bound "
        f"{bounds['max_backlog_slope']:,.0f}), last-quarter max "
        f"{s.backlog_max_last_quarter:,} (bound {bounds['max_backlog']:,})",
        f"committed lag          slope {s.lag_slope_per_min:+,.0f} messages/min, last-quarter "
        f"max {s.lag_max_last_quarter:,} (bound {bounds['max_lag']:,})",
        f"events                 {s.events:,} processed, {s.events_per_s:,.1f}/s during the run"
        + (
            ""
            if result.drain_seconds is None
            else f"; caught up {result.drain_seconds:.1f}s after the stream ended"
        ),
    ]
    if final is not None:
        lines.append(
            f"worker saw             {final.customers:,} customers, {final.alerts:,} alerts, "
            f"{final.due_assessments:,} due re-assessments, {final.deadletter:,} dead letters, "
            f"{final.duplicates:,} duplicates, {final.late:,} late; "
            f"event time {result.stream['span_days']:,.0f} days"
        )
    lines.append("")
    lines += [f"FAIL: {failure}" for failure in s.failures] or ["OK: within bounds"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of input")
    parser.add_argument("--rate", type=float, default=300.0, help="events per second")
    parser.add_argument(
        "--customers", type=int, help="generated customers (default: enough for ~2 years)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--warmup", type=float, help="seconds (default: a quarter of the run)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=40.0)
    parser.add_argument(
        "--max-backlog", type=int, help="last-quarter bound (default: 10 s of input)"
    )
    parser.add_argument(
        "--max-backlog-slope", type=float, help="messages/min (default: 1 s of input per minute)"
    )
    parser.add_argument(
        "--max-lag", type=int, help="committed lag, last-quarter bound (default: 30 s of input)"
    )
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--store", help="table store, e.g. rocksdb:// (default: settings)")
    parser.add_argument("--workdir", type=Path, help="keep broker and worker logs here")
    parser.add_argument("--out", type=Path, help="write the samples and figures as JSON")
    parser.add_argument(
        "--embedded", choices=KINDS, default="kafka", help="broker to run on (default: kafka)"
    )
    args = parser.parse_args(argv)
    plan = SoakPlan(
        duration=args.duration,
        rate=args.rate,
        customers=args.customers,
        seed=args.seed,
        partitions=args.partitions,
        sample_every=args.sample_every,
        warmup=args.warmup,
        drain_timeout=args.drain_timeout,
        max_rss_growth_mb=args.max_rss_growth_mb,
        max_backlog=args.max_backlog,
        max_backlog_slope=args.max_backlog_slope,
        max_lag=args.max_lag,
        embedded=args.embedded,
    )
    base = Settings.from_env(store=args.store)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_soak(plan, base, args.workdir, say=lambda line: print(line, flush=True))
    except (RuntimeError, TimeoutError) as exc:  # BrokerError is a RuntimeError
        print(f"FAIL: {exc}", file=sys.stderr)
        return 2
    print(report(result), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**asdict(result), "ok": result.ok}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
