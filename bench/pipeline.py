"""Pipeline throughput, all measured in one run against one embedded broker and one
input, so the ratios mean something on whatever machine runs it:

1. ceiling: a raw aiokafka consumer (``getmany``, every value decoded) over the
   input topics;
2. Faust floor: a do-nothing Faust agent (``bench/floor.py``: the worker's Faust
   settings and ``take_events`` batching, a body that only counts);
3. writes: the do-nothing agent on churnwatch's consumer (``streams/consumer.py``),
   once alone and once making churnwatch's table writes and nothing else (one write
   per touched customer per batch, of a state-sized value; ``BENCH_AGENT=writes``):
   what the recoverable state costs before any of churnwatch's own work;
4. naive: the obvious Faust program, one event at a time and a table write per
   event on Faust's producer defaults (``bench/floor.py``, ``BENCH_AGENT=naive``);
5. churnwatch: the full worker (validation, alignment, state, periods, risk,
   alerts, metrics), one worker process and then two;
6. the floor and one churnwatch worker again on CDNOW (69,659 real purchases of
   23,570 customers, from the ``lifetimes`` wheel), against a fresh broker: long
   real histories instead of generated ones;
7. anchors: the naive per-customer aggregate (count, spend, last time) on Quix Streams
   and on Kafka Streams (``bench/anchors/``), on the same broker and input;
8. end-to-end latency at a fixed sub-saturation rate and at 80 % of the rate one
   worker sustained, from the record's Kafka timestamp to its state written (the
   worker's latency histogram), p50 and p99.

Rates are events per second from the first event processed to the last, not including
start-up (launch to first event, printed too). The reference agents time themselves; a
worker's /metrics is polled every 100 ms until its first event and near its last, and
every second in between: rendering it takes milliseconds of the worker's event loop,
and polled every 250 ms throughout it took ~4 % of the worker's time (py-spy). Figures are
machine-dependent: compare the ratios.

    python -m bench.pipeline [--customers 5000] [--days 365] [--rate 600] [--cdnow PATH|none]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.anchors.runner import anchor_runs
from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.embedded import KINDS, Broker, embedded_broker
from streams.generator import write_history
from streams.inputs import Record, read_events
from streams.kafka_admin import create_topics
from streams.produce import publish
from streams.settings import Settings, to_env
from streams.workers import WorkerProcess, free_port, local_settings

PARTITIONS = 4
END = "2025-07-01T00:00:00Z"


def cdnow_path() -> Path | None:
    """CDNOW_master.txt as the ``lifetimes`` wheel ships it (a dependency)."""
    try:
        import lifetimes
    except ImportError:
        return None
    path = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"
    return path if path.exists() else None


@dataclass
class Run:
    name: str
    events: int
    seconds: float  # first event processed to last
    startup: float | None = None  # launch to first event processed
    rss: float = 0.0  # bytes, all worker processes, when the last event is processed
    customers: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def wait_counts(
    count: Callable[[], int],
    total: int,
    launched: float,
    timeout: float,
    every: float = 0.05,
    busy_every: float | None = None,
) -> Run:
    """Poll ``count`` every ``every`` seconds until it reaches ``total``; time first and
    last event (to within ``every``). With ``busy_every``, poll that seldom while the
    count is rising and its end, at the rate so far, is more than two such polls away."""
    deadline = time.monotonic() + timeout
    first: float | None = None
    while True:
        now = time.monotonic()
        n = count()
        if n and first is None:
            first = now
        if n >= total:
            assert first is not None
            return Run("", total, max(now - first, 1e-3), first - launched)
        if now > deadline:
            raise TimeoutError(f"{n} of {total} events after {timeout:.0f}s")
        pause = every
        if busy_every is not None and first is not None and n and now > first:
            left = (total - n) * (now - first) / n
            if left > 2 * busy_every:
                pause = busy_every
        time.sleep(pause)


async def ceiling(bootstrap: str, total: int) -> Run:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for topic in topics.INPUT_TOPICS for p in range(PARTITIONS)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        decode = msgspec.json.Decoder().decode
        seen = 0
        started = time.monotonic()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batches.values():
                for record in records:
                    with contextlib.suppress(msgspec.DecodeError):
                        decode(record.value or b"")
                seen += len(records)
        return Run("ceiling: aiokafka getmany + decode", seen, time.monotonic() - started)
    finally:
        await consumer.stop()


def floor(
    settings: Settings, workdir: Path, total: int, mode: str = "floor", label: str = ""
) -> Run:
    """A reference agent of ``bench/floor.py``: the do-nothing floor, or ``naive``."""
    status = workdir / f"{mode}.json"
    Path(settings.datadir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **to_env(settings), "BENCH_STATUS": str(status), "BENCH_AGENT": mode}
    log = (workdir / f"{mode}.log").open("ab")
    launched = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.floor"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def count() -> int:
        if process.poll() is not None:
            raise RuntimeError(f"the {mode} agent exited ({process.returncode}); see {log.name}")
        try:
            return int(json.loads(status.read_text())["count"])
        except (OSError, ValueError, KeyError):
            return 0

    try:
        run = wait_counts(count, total, launched, timeout=600)
        done = json.loads(status.read_text())
        # The agent's own first/last event times are sharper than polling.
        run.seconds = max(done["last"] - done["first"], 1e-3)
        run.name = {
            "floor": "Faust floor: do-nothing agent",
            "inline": "do-nothing agent, record batches",
            "writes": "record batches + churnwatch's table writes",
            "naive": "naive: a table write per event",
        }[mode] + label
        return run
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def churnwatch(settings: Settings, workdir: Path, total: int, workers: int, label: str = "") -> Run:
    procs = [
        WorkerProcess(
            settings.replace(web_port=free_port(), datadir=str(workdir / f"w{n}")),
            workdir / f"w{n}.log",
        )
        for n in range(workers)
    ]
    launched = time.monotonic()
    for proc in procs:
        proc.start()

    def count() -> int:
        n = 0
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"a worker exited:\n{proc.log_tail()}")
            with contextlib.suppress(OSError):
                n += int(proc.metric("churnwatch_events_consumed_total"))
        return n

    try:
        run = wait_counts(count, total, launched, timeout=900, every=0.1, busy_every=1.0)
        run.name = f"churnwatch: full worker x{workers}{label}"
        run.rss = sum(proc.metric("process_resident_memory_bytes") for proc in procs)
        run.customers = int(sum(proc.metric("churnwatch_customers") for proc in procs))
        return run
    finally:
        for proc in procs:
            proc.stop()


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style quantile from cumulative (upper bound, count) buckets."""
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def latency(
    records: list[Record], rate: float, seconds: float, workdir: Path, kind: str
) -> dict[str, float]:
    """A fresh broker and worker, input published at ``rate`` events/s; latency is
    from each record's Kafka timestamp (set when published) to its state written."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = embedded_broker(
        kind, log_path=workdir / "latency-broker.log", datadir=workdir / "latency-kafka"
    )
    with broker:
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, PARTITIONS)))
        settings = local_settings(Settings(), broker, PARTITIONS, workdir / "latency")
        proc = WorkerProcess(settings, workdir / "latency-worker.log")
        proc.start()
        try:
            proc.wait_ready()
            idle_rss = proc.metric("process_resident_memory_bytes")
            sample = records[: int(rate * seconds)]
            asyncio.run(publish(broker.bootstrap, sample, rate=rate))
            deadline = time.monotonic() + 60
            while proc.metric("churnwatch_events_consumed_total") < len(sample):
                if time.monotonic() > deadline:
                    raise TimeoutError("the latency run did not finish")
                time.sleep(0.2)
            buckets = []
            for family in text_string_to_metric_families(proc.get_text("/metrics")):
                for s in family.samples:
                    if s.name == "churnwatch_event_latency_seconds_bucket":
                        buckets.append((float(s.labels["le"]), s.value))
            buckets.sort()
            return {
                "rate": rate,
                "events": len(sample),
                "p50_ms": 1000 * quantile(buckets, 0.5),
                "p99_ms": 1000 * quantile(buckets, 0.99),
                "idle_rss": idle_rss,
            }
        finally:
            proc.stop()


@contextlib.contextmanager
def loaded_broker(workdir: Path, records: list[Record], kind: str) -> Iterator[tuple[Broker, int]]:
    """A broker of this kind with the topics created and ``records`` published; the
    count published."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = embedded_broker(kind, log_path=workdir / "broker.log", datadir=workdir / "kafka")
    with broker:
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, PARTITIONS)))
        yield broker, asyncio.run(publish(broker.bootstrap, records)).published


def noted(runs: list[Run], run: Run) -> None:
    runs.append(run)
    print(f"  {run.name}: {run.rate:,.0f}/s", file=sys.stderr)


def measure_cdnow(path: Path, workdir: Path, kind: str) -> list[Run]:
    """The floor and one churnwatch worker on CDNOW, against a broker of their own."""
    records = sorted(read_events(path, "cdnow"), key=lambda r: r.occurred_at or 0)
    print(f"CDNOW: {len(records):,} events from {path}", file=sys.stderr)
    runs: list[Run] = []
    with loaded_broker(workdir, records, kind) as (broker, total):
        base = Settings()
        settings = local_settings(base, broker, PARTITIONS, workdir / "f")
        noted(runs, floor(settings, workdir, total, label=" (CDNOW)"))
        settings = local_settings(base, broker, PARTITIONS, workdir / "c1")
        noted(runs, churnwatch(settings, workdir, total, 1, label=" (CDNOW)"))
        for run in anchor_runs(broker.bootstrap, total, workdir, label=" (CDNOW)"):
            noted(runs, run)
    return runs


def print_runs(title: str, runs: list[Run], floor_rate: float) -> None:
    print(f"\n{title:<40}{'events/s':>12}{'vs floor':>10}{'start-up s':>12}")
    for run in runs:
        startup = "" if run.startup is None else f"{run.startup:.1f}"
        print(f"{run.name:<40}{run.rate:>12,.0f}{run.rate / floor_rate:>10.2f}{startup:>12}")


def print_costs(floor_run: Run, inline_run: Run, writes_run: Run, single: Run) -> None:
    """Where one worker's time per event goes, from the rates of the same run, and what
    80 % of the floor would leave for churnwatch's own work."""

    def us(run: Run) -> float:
        return 1e6 / run.rate

    budget = us(floor_run) / 0.8
    print(
        f"per event: Faust floor {us(floor_run):.0f} us; churnwatch's consumer "
        f"{us(inline_run):.0f} us, its table writes {us(writes_run) - us(inline_run):.0f} us "
        f"more, its own work {us(single) - us(writes_run):.0f} us more: {us(single):.0f} us"
    )
    print(
        f"80% of the floor is {budget:.0f} us per event: after the consumer and table "
        f"writes, {budget - us(writes_run):.0f} us for churnwatch's own work"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rate", type=float, default=600.0, help="latency run, events/s")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument(
        "--embedded", choices=KINDS, default="kafka", help="broker to run on (default: kafka)"
    )
    parser.add_argument(
        "--cdnow",
        default="",
        help="CDNOW_master.txt for the CDNOW runs (default: the lifetimes wheel's; none: skip)",
    )
    args = parser.parse_args()
    end = parse_time(END)
    with tempfile.TemporaryDirectory(prefix="churnwatch-bench-") as tmp:
        workdir = Path(tmp)
        history = workdir / "history.jsonl"
        write_history(history, args.customers, args.days, 1, from_micros(end))
        records = sorted(
            (r for r in read_events(history, "jsonl") if r.occurred_at and r.occurred_at < end),
            key=lambda r: r.occurred_at or 0,
        )
        print(f"input: {len(records):,} events, {args.customers:,} customers", file=sys.stderr)
        runs: list[Run] = []
        anchors: list[Run] = []
        with loaded_broker(workdir, records, args.embedded) as (broker, total):
            noted(runs, asyncio.run(ceiling(broker.bootstrap, total)))
            base = Settings()
            for mode in ("floor", "inline", "writes", "naive"):
                settings = local_settings(base, broker, PARTITIONS, workdir / mode)
                noted(runs, floor(settings, workdir, total, mode=mode))
            for workers in (1, 2):
                settings = local_settings(base, broker, PARTITIONS, workdir / f"c{workers}")
                noted(runs, churnwatch(settings, workdir, total, workers))
            for run in anchor_runs(broker.bootstrap, total, workdir):
                noted(anchors, run)
        cdnow_runs = []
        cdnow = None if args.cdnow == "none" else Path(args.cdnow) if args.cdnow else cdnow_path()
        if cdnow is not None:
            cdnow_runs = measure_cdnow(cdnow, workdir / "cdnow", args.embedded)
        elif args.cdnow != "none":
            print("CDNOW_master.txt not found (is lifetimes installed?): CDNOW runs skipped")
        lat = latency(records, args.rate, args.latency_seconds, workdir, args.embedded)
        # Near saturation: 80 % of the rate one worker sustained above.
        near = 0.8 * runs[5].rate
        lat80 = latency(records, near, args.latency_seconds, workdir / "near", args.embedded)
    ceiling_run, floor_run, inline_run, writes_run, naive_run, single, double = runs
    runs.extend(anchors)
    floor_rate = floor_run.rate
    one = single.rate
    print_runs("run", runs, floor_rate)
    print(f"\n2 workers / 1 worker: {double.rate / one:.2f}x")
    for anchor in anchors:
        print(f"churnwatch x1 / {anchor.name}: {one / anchor.rate:.2f}x")
    print(f"churnwatch x1 / naive table write per event: {one / naive_run.rate:.2f}x")
    print(f"churnwatch x1 / do-nothing agent on the same consumer: {one / inline_run.rate:.2f}")
    print_costs(floor_run, inline_run, writes_run, single)
    per_customer = (single.rss - lat["idle_rss"]) / max(single.customers, 1)
    print(
        f"memory store, 1 worker: RSS {single.rss / 2**20:.0f} MB with {single.customers:,} "
        f"customers, {lat['idle_rss'] / 2**20:.0f} MB idle: {per_customer:,.0f} B per customer"
    )
    print(f"ceiling / churnwatch x1: {ceiling_run.rate / one:.1f}x")
    if cdnow_runs:
        print_runs("CDNOW run", cdnow_runs, cdnow_runs[0].rate)
        runs.extend(cdnow_runs)
    print(
        f"end-to-end latency at {lat['rate']:.0f} events/s ({lat['events']} events): "
        f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms"
    )
    print(
        f"end-to-end latency at {lat80['rate']:.0f} events/s, 80% of one worker's rate "
        f"({lat80['events']} events): p50 {lat80['p50_ms']:.0f} ms, p99 {lat80['p99_ms']:.0f} ms"
    )
    if args.out:
        figures = {
            "runs": [
                {"name": r.name, "events": r.events, "seconds": r.seconds, "rate": r.rate,
                 "startup": r.startup, "rss": r.rss, "customers": r.customers} for r in runs
            ],
            "latency": lat,
            "latency_near_saturation": lat80,
        }  # fmt: skip
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
