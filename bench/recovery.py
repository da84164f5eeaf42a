"""Start-up, recovery and memory with a large customers table.

A worker's state is its table's changelog. To measure recovery at a size no test
input reaches in minutes (1M customers would take five at the pipeline's rate),
this writes the changelog directly: real ``CustomerState`` records, built by
``retention.apply`` and an assessment from a few hundred generated event
histories (signup, purchases, feedback) and given distinct customer ids, keyed and
partitioned as the worker's producer would (murmur2), plus each partition's
record. Then, per store:

1. an empty worker of its own (another app id) on the same broker: its RSS is the
   baseline;
2. cold start: launch -> ready (partitions assigned, recovery finished, every
   customer counted), and RSS per customer over the baseline;
3. restart: the worker stopped and launched again on the same data directory
   (RocksDB keeps its files and reads only the changelog's tail; the memory store
   recovers everything again);
4. a sample of customers read back through the HTTP API equals what was written.

    python -m bench.recovery [--customers 100000 1000000] [--stores memory rocksdb]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import tempfile
import time
import urllib.error
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from aiokafka.partitioner import murmur2

from processor.partition import PartitionState, encode_partition
from retention.alerts import Lifecycle
from retention.apply import apply
from retention.risk import load_risk_config
from retention.serving import customer_view
from retention.state import CustomerState, decode_state, encode_state
from retention.timeutil import to_micros
from schemas.events import Event, Feedback, Purchase, Signup
from streams import topics
from streams.embedded import KINDS, Broker, embedded_broker
from streams.kafka_admin import create_topics
from streams.partitions import partition_state_key
from streams.produce import producer_for
from streams.redis_view import view_json
from streams.settings import Settings
from streams.workers import WorkerProcess, free_port, local_settings

PARTITIONS = 4
SHAPES = 500
START = datetime(2024, 1, 1, tzinfo=UTC)


def shapes(count: int, seed: int) -> list[CustomerState]:
    """Customer states from generated histories: 1-30 purchases a few weeks apart,
    feedback now and then, assessed once at their last event. Their mean encoded size
    (printed) is close to that of the generated history of ``bench/pipeline.py``."""
    rng = random.Random(seed)
    settings = Settings()
    lifecycle = Lifecycle(load_risk_config(None), None, settings.window)
    out = []
    for n in range(count):
        cid = f"shape-{n}"
        at = START + timedelta(days=rng.uniform(0, 180))
        events: list[Event] = [
            Signup(event_id=f"{cid}-s", customer_id=cid, occurred_at=at, segment="smb")
        ]
        for k in range(rng.randint(1, 30)):
            at += timedelta(days=rng.expovariate(1 / 12))
            amount = round(rng.uniform(5, 200), 2)
            events.append(
                Purchase(event_id=f"{cid}-p{k}", customer_id=cid, occurred_at=at, amount=amount)
            )
            if rng.random() < 0.3:
                score = rng.randint(0, 10)
                events.append(
                    Feedback(
                        event_id=f"{cid}-f{k}", customer_id=cid, occurred_at=at, kind="nps",
                        score=score,
                    )
                )  # fmt: skip
        state = None
        for event in events:
            state = apply(state, event, to_micros(event.occurred_at)).state
        assert state is not None
        lifecycle.step(state, to_micros(at))
        out.append(state)
    return out


@dataclass
class Written:
    customers: int
    state_bytes: int
    sample: dict[str, bytes]  # customer id -> encoded state, for the read-back check


async def write_changelog(bootstrap: str, app_id: str, customers: int, seed: int) -> Written:
    """Create the customers table's changelog topic of ``app_id`` (compacted, as the
    worker declares it) and write ``customers`` states and the partition records."""
    topic = topics.changelog_topic(app_id)
    await create_topics(
        bootstrap, {topic: PARTITIONS}, config={topic: {"cleanup.policy": "compact"}}
    )
    templates = shapes(SHAPES, seed)
    rng = random.Random(seed)
    sample_ids = set(rng.sample(range(customers), min(200, customers)))
    producer = producer_for(bootstrap)
    await producer.start()
    per_partition = [0] * PARTITIONS
    sample: dict[str, bytes] = {}
    size = 0
    pending = []
    started = time.monotonic()
    try:
        for n in range(customers):
            cid = f"c{n:07d}"
            state = msgspec.structs.replace(templates[n % SHAPES], customer_id=cid)
            value = encode_state(state)
            key = cid.encode()
            partition = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
            per_partition[partition] += 1
            size += len(value)
            if n in sample_ids:
                sample[cid] = value
            pending.append(await producer.send(topic, value, key=key, partition=partition))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                if n and n % 200_000 < 20_000:
                    rate = n / (time.monotonic() - started)
                    print(f"  changelog: {n:,} customers written ({rate:,.0f}/s)", file=sys.stderr)
        for partition, count in enumerate(per_partition):
            record = PartitionState(partition=partition, customers=count)
            pending.append(
                await producer.send(
                    topic,
                    encode_partition(record),
                    key=partition_state_key(partition),
                    partition=partition,
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return Written(customers, size // max(customers, 1), sample)


def ready(proc: WorkerProcess, customers: int, launched: float, timeout: float) -> float:
    """Seconds from ``launched`` until the worker has recovered and counts every customer."""
    deadline = launched + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"the worker exited:\n{proc.log_tail()}")
        health = proc.health()
        if health and health.get("partitions") and not health.get("recovering"):
            try:
                if proc.metric("churnwatch_customers") >= customers:
                    return time.monotonic() - launched
            except (OSError, urllib.error.URLError):
                pass
        time.sleep(0.2)
    raise TimeoutError(f"not ready after {timeout:.0f}s:\n{proc.log_tail()}")


def read_back(proc: WorkerProcess, sample: dict[str, bytes]) -> int:
    """Customers of ``sample`` whose API view differs from the view of what was written."""
    lifecycle = Lifecycle(load_risk_config(None), None, Settings().window)
    mismatches = 0
    for cid, value in sample.items():
        want = view_json(customer_view(decode_state(value), lifecycle))
        got = proc.get_json(f"/customers/{cid}", timeout=10)
        got.pop("source", None)
        want = json.loads(json.dumps(want))  # as it travels: tuples become lists
        mismatches += got != want
    return mismatches


def run_store(broker: Broker, app_id: str, store: str, written: Written, workdir: Path) -> dict:
    base = local_settings(Settings(), broker, PARTITIONS, workdir)
    settings = base.replace(app_id=app_id, store=store, datadir=str(workdir / "data"))
    figures: dict[str, float | str] = {"store": store}
    # Baseline: the same worker with nothing to recover.
    empty = WorkerProcess(
        settings.replace(app_id=app_id + "-empty", web_port=free_port(),
                         datadir=str(workdir / "empty")),
        workdir / "empty.log",
    )  # fmt: skip
    empty.start()
    try:
        empty.wait_ready()
        time.sleep(1.0)
        idle = empty.metric("process_resident_memory_bytes")
    finally:
        empty.stop()
    for phase in ("cold start", "restart"):
        proc = WorkerProcess(settings.replace(web_port=free_port()), workdir / f"{phase}.log")
        launched = time.monotonic()
        proc.start()
        try:
            seconds = ready(proc, written.customers, launched, timeout=900)
            rss = proc.metric("process_resident_memory_bytes")
            figures[f"{phase} s"] = round(seconds, 1)
            if phase == "cold start":
                figures["rss MB"] = round(rss / 2**20)
                figures["idle MB"] = round(idle / 2**20)
                figures["B/customer"] = round((rss - idle) / written.customers)
                figures["read-back mismatches"] = read_back(proc, written.sample)
            print(f"  {store}: {phase} -> ready in {seconds:.1f}s", file=sys.stderr)
        finally:
            proc.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--stores", nargs="+", default=["memory", "rocksdb"])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument(
        "--embedded", choices=KINDS, default="kafka", help="broker to run on (default: kafka)"
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="churnwatch-recovery-") as tmp:
        workdir = Path(tmp)
        broker = embedded_broker(
            args.embedded, log_path=workdir / "broker.log", datadir=workdir / "kafka"
        )
        with broker:
            asyncio.run(
                create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, PARTITIONS))
            )
            for customers, store in itertools.product(args.customers, args.stores):
                app_id = f"churnwatch-recovery-{store}-{customers}-{int(time.time())}"
                started = time.monotonic()
                written = asyncio.run(
                    write_changelog(broker.bootstrap, app_id, customers, args.seed)
                )
                print(
                    f"  {store}: {written.customers:,} customers in the changelog "
                    f"({written.state_bytes} B per state) in {time.monotonic() - started:.0f}s",
                    file=sys.stderr,
                )
                figures = run_store(
                    broker, app_id, f"{store}://", written, workdir / f"{store}-{customers}"
                )
                figures["customers"] = written.customers
                figures["state B"] = written.state_bytes
                results.append(figures)
    columns = ["store", "customers", "state B", "cold start s", "restart s", "rss MB",
               "idle MB", "B/customer", "read-back mismatches"]  # fmt: skip
    widths = [max(12, len(c) + 2) for c in columns]
    print("\n" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for figures in results:
        cells = []
        for column, width in zip(columns, widths, strict=True):
            value = figures.get(column, "")
            text = value if isinstance(value, str) else f"{value:,}"
            cells.append(f"{text:>{width}}")
        print("".join(cells))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
