"""Hashes of what the in-process customer processor computes: the proof that a
restructure changed no behaviour.

``python -m tests.hashes`` runs ``tests.inprocess.Run`` (the agent's batch logic, one
partition, batches of 500 in event-time order, then a final tick) over

- ``generated``: ``streams.generator.write_history(path, CUSTOMERS, 365, 1, END)``
  with bench/pipeline.py's END, the events dated before END;
- ``cdnow``: lifetimes' CDNOW_master.txt, the events dated before 1998-07-01;

- ``routed`` (``--routed N``, default 1,000 customers): a generated history published
  with CRC32 (librdkafka's partitioner) onto 4 partitions, one worker owning them all
  and forwarding misrouted events through the repartition topic
  (tests/agent/test_routing.py's ``Cluster``, seed 2), under a clock that moves 10 s
  a call so that progress announcements do not depend on the machine's speed; one
  hash over the whole table (outbox records less ``observed_at``), the alerts less
  ``observed_at`` and every record sent to the repartition topic;

and prints, per input, one hash over every customer record (the table's raw bytes),
every partition record's figures (decoded, keys sorted: independent of the order of
the record's fields) and every alert record less ``observed_at`` (in send order).
Two further lines per input are stricter or wider: ``table``, every key and raw value
of the table (due and waiting buckets included; outbox records with their alerts'
``observed_at`` removed); ``deadletters``, every dead
letter less ``received_at``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import msgspec

from processor.partition import decode_partition
from retention.timeutil import Micros, from_micros, parse_time
from streams.generator import write_history
from streams.inputs import Record, read_events
from streams.partitions import OUTBOX, is_customer_key, is_partition_key
from tests.inprocess import Run, generated_history

END = "2025-07-01T00:00:00Z"  # bench/pipeline.py's
CDNOW_END = "1998-07-01T00:00:00Z"
CUSTOMERS = 5000
BATCH = 500


def cdnow_path() -> Path:
    import lifetimes  # type: ignore[import-untyped]

    return Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"


def dated_before(records: list[Record], end: Micros) -> list[Record]:
    kept = [r for r in records if r.occurred_at is None or r.occurred_at < end]
    kept.sort(key=lambda r: -1 if r.occurred_at is None else r.occurred_at)
    return kept


def run(records: list[Record], as_of: Micros) -> Run:
    result = Run(records, as_of)
    result.feed(records, [BATCH], random.Random(0))
    return result


def _without_observed_at(value: bytes) -> bytes:
    chunk = msgspec.msgpack.decode(value)
    for entry in chunk:
        alert = json.loads(entry[1])
        del alert["observed_at"]
        entry[1] = json.dumps(alert, sort_keys=True).encode()
    return msgspec.msgpack.encode(chunk)


def hashes(result: Run) -> dict[str, str]:
    main = hashlib.sha256()
    table = hashlib.sha256()
    for key in sorted(result.table):
        value = result.table[key]
        if key.startswith(OUTBOX):  # alerts not yet acknowledged: their observed_at goes
            value = _without_observed_at(value)
        table.update(b"%d:%s%d:%s" % (len(key), key, len(value), value))
        if is_customer_key(key):
            main.update(b"customer %d:%s%d:%s" % (len(key), key, len(value), value))
        elif is_partition_key(key):
            figures = msgspec.to_builtins(decode_partition(value))
            main.update(b"partition " + json.dumps(figures, sort_keys=True).encode())
    for value in result.alerts_sent.values:
        alert = json.loads(value)
        del alert["observed_at"]
        main.update(b"alert " + json.dumps(alert, sort_keys=True).encode())
    dead = hashlib.sha256()
    for value in result.deadletters_sent.values:
        letter = json.loads(value)
        del letter["received_at"]
        dead.update(json.dumps(letter, sort_keys=True).encode())
    return {"hash": main.hexdigest(), "table": table.hexdigest(), "deadletters": dead.hexdigest()}


def report(name: str, records: list[Record], as_of: Micros) -> None:
    started = time.perf_counter()
    result = run(records, as_of)
    seconds = time.perf_counter() - started
    customers = sum(1 for key in result.table if is_customer_key(key))
    alerts = len(result.alerts_sent.values)
    print(
        f"{name}: {len(records):,} events, {customers:,} customers, {alerts:,} alerts, "
        f"{seconds:.1f} s",
        file=sys.stderr,
    )
    for label, digest in hashes(result).items():
        print(f"{name} {label} {digest}")


def routed(customers: int) -> None:
    from tests.agent.test_routing import Cluster, crc32

    with tempfile.TemporaryDirectory(prefix="churnwatch-hashes-") as tmp:
        history = generated_history(Path(tmp), customers, 365, 1, parse_time(END))
    started = time.perf_counter()
    ticks = itertools.count(0, 10.0)
    with mock.patch("time.monotonic", lambda: next(ticks)):
        cluster = Cluster(history, crc32, seed=2).replay()
    seconds = time.perf_counter() - started
    digest = hashlib.sha256()
    for key in sorted(cluster.table):
        value = cluster.table[key]
        if key.startswith(OUTBOX):
            value = _without_observed_at(value)
        digest.update(b"%d:%s%d:%s" % (len(key), key, len(value), value))
    for value in cluster.alerts.values:
        alert = json.loads(value)
        del alert["observed_at"]
        digest.update(json.dumps(alert, sort_keys=True).encode())
    for tp in sorted(cluster.log.records):
        for key, value in cluster.log.records[tp]:
            digest.update(repr((tp, key, value)).encode())
    forwarded = sum(p.forwarded for p in cluster.partitions())
    print(
        f"routed: {len(history):,} events, {forwarded:,} forwarded, "
        f"{len(cluster.alerts.values):,} alerts, {seconds:.1f} s",
        file=sys.stderr,
    )
    print(f"routed hash {digest.hexdigest()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--only", choices=("generated", "cdnow", "routed"))
    parser.add_argument("--routed", type=int, default=1000, help="customers of the routed input")
    args = parser.parse_args()
    if args.only == "routed":
        routed(args.routed)
        return
    if args.only != "cdnow":
        end = parse_time(END)
        with tempfile.TemporaryDirectory(prefix="churnwatch-hashes-") as tmp:
            path = Path(tmp) / "history.jsonl"
            write_history(path, args.customers, 365, 1, from_micros(end))
            records = dated_before(list(read_events(path, "jsonl")), end)
        report("generated", records, end)
    if args.only != "generated":
        end = parse_time(CDNOW_END)
        report("cdnow", dated_before(list(read_events(cdnow_path(), "cdnow")), end), end)
    if args.only is None:
        routed(args.routed)


if __name__ == "__main__":
    main()
