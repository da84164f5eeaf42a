"""The naive per-customer aggregate on Quix Streams, an anchor of ``bench/pipeline.py``.

One StreamingDataFrame per input topic, concatenated (Quix then consumes the four topics
time-aligned, as it does for any multi-topic app); every value is parsed as JSON with
orjson (what Quix's own ``"json"`` deserializer calls; the values arrive as bytes so that
a malformed one still counts as processed), ``occurred_at`` read as RFC 3339 and
``amount`` when present; per customer (the record key) a stateful ``update`` keeps the
count of events, the total spend and the last event time in Quix's default state: RocksDB
with its changelog topic, at-least-once, a checkpoint every 5 s. A value that does not
parse, or has no key, counts as processed and updates nothing.

It reads from the beginning with a fresh consumer group and state directory, stops after
``--events N`` messages processed (``on_message_processed``) and prints one JSON line:
events, seconds (first message processed to the N-th), rate, startup (``--launched-at``,
epoch seconds, to the first message; default: this interpreter's start), customers
(aggregates created), aggregated (events that updated one), rss (bytes, at the N-th
message) and close (seconds for Quix to stop: the last checkpoint, its state flush and
changelog writes included).

    python -m bench.anchors.quix_aggregate --bootstrap 127.0.0.1:9092 --events 115000 \\
        --state-dir /tmp/quix [--topics a,b,c,d] [--group NAME]
"""

from __future__ import annotations

import time

_STARTED = time.time()  # before the imports, which are part of start-up

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402
from quixstreams import Application, State  # noqa: E402

INPUT_TOPICS = (
    "customer.signups",
    "customer.purchases",
    "customer.cancellations",
    "customer.feedback",
)


def parse(value: bytes | None, key: Any, timestamp: int, headers: Any) -> tuple | None:
    """(amount, occurred_at in microseconds), or None for a value we cannot read."""
    if key is None or value is None:
        return None
    try:
        event = orjson.loads(value)
        at = datetime.fromisoformat(event["occurred_at"])
        if at.tzinfo is None:
            return None
        amount = event.get("amount")
        spend = float(amount) if amount is not None else 0.0
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return spend, int(at.timestamp() * 1_000_000)


def rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return 1024 * int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--events", type=int, required=True, help="stop after this many")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--topics", default=",".join(INPUT_TOPICS))
    parser.add_argument("--group", default="")
    parser.add_argument("--launched-at", type=float, default=_STARTED)
    parser.add_argument("--loglevel", default="WARNING", help="the quixstreams logger's")
    args = parser.parse_args()
    total: int = args.events

    seen = 0
    customers = 0
    aggregated = 0
    marks = {"first": 0.0, "first_wall": 0.0, "last": 0.0, "rss": 0}
    app: Application

    def processed(topic: str, partition: int, offset: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            marks["first"] = time.perf_counter()
            marks["first_wall"] = time.time()
        if seen == total:
            marks["last"] = time.perf_counter()
            marks["rss"] = rss_bytes()
            app.stop()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group or f"churnwatch-anchor-quix-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        processing_guarantee="at-least-once",
        on_message_processed=processed,
        loglevel=args.loglevel,
    )

    def aggregate(event: tuple, state: State) -> None:
        nonlocal customers, aggregated
        aggregated += 1
        spend, occurred = event
        agg = state.get("agg")
        if agg is None:
            customers += 1
            agg = [0, 0.0, occurred]
        state.set("agg", [agg[0] + 1, agg[1] + spend, max(agg[2], occurred)])

    frames = [
        app.dataframe(app.topic(name, key_deserializer="bytes", value_deserializer="bytes"))
        for name in args.topics.split(",")
    ]
    sdf = functools.reduce(lambda left, right: left.concat(right), frames)
    sdf = sdf.apply(parse, metadata=True).filter(lambda event: event is not None)
    sdf.update(aggregate, stateful=True)

    app.run()
    close = time.perf_counter() - marks["last"] if marks["last"] else 0.0
    if seen < total:
        sys.exit(f"stopped after {seen} of {total} messages")
    seconds = max(marks["last"] - marks["first"], 1e-3)
    line = {
        "events": total,
        "seconds": seconds,
        "rate": total / seconds,
        "startup": marks["first_wall"] - args.launched_at,
        "customers": customers,
        "aggregated": aggregated,
        "rss": marks["rss"],
        "close": close,
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
