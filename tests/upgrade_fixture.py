"""The upgrade fixture: a changelog written by a release, for the next one to recover.

An upgrade must need no replay of history (issue 17): a new release recovers the
changelog the old one wrote and carries on. ``python -m tests.upgrade_fixture make``
writes, with the release checked out,

- ``tests/fixtures/upgrade/table.jsonl.gz``: the table (every key and raw value:
  customer records, the partition record, due and waiting buckets, outbox records) of
  one in-process worker (``tests.inprocess.Run``) that read the FIRST part of a
  generated history (HISTORY: the events dated before ``cut``, in event-time order, in
  batches of ``batch``) and was stopped there: the changelog's compacted contents;
- ``tests/fixtures/upgrade/meta.json``: the release and encoding that wrote it, the
  history's parameters (so that the test can generate the same input again), and what
  that release computes when a new worker recovers the table and reads the SECOND part
  (the rest of the history, then a final tick): ``results``'s figures and hash.

Before writing, ``make`` checks that the recovered worker ends as the stopped one
would have had it read on: same customers and partition figures, and the same
alerts once the outbox it sent again is set aside.

tests/unit/test_upgrade_changelog.py recovers the table with the code checked out and
holds its results to the stored ones. Regenerate ONLY to break compatibility on
purpose: the fixture is the previous release's changelog, not this one's.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec

from processor.partition import decode_partition
from retention.state import decode_state
from retention.timeutil import Micros, from_micros, parse_time
from streams.generator import write_history
from streams.inputs import Record, read_events
from streams.partitions import OUTBOX, is_customer_key, is_partition_key
from tests.inprocess import Run

FOLDER = Path(__file__).parent / "fixtures" / "upgrade"
TABLE = FOLDER / "table.jsonl.gz"
META = FOLDER / "meta.json"

#: The generated history, and where the worker that wrote the fixture stopped.
HISTORY: dict[str, Any] = {
    "customers": 300,
    "days": 365,
    "seed": 17,
    "end": "2025-07-01T00:00:00Z",
    "cut": "2025-03-15T00:00:00Z",  # its last batch raised alerts: an outbox record
    "batch": 200,
}

ENCODING = (
    "msgspec {msgspec} msgpack: customer records retention.state.CustomerState "
    "(array_like, fields by position); the partition record "
    "processor.partition.PartitionState (a map by field name); due buckets "
    "dict[bytes, int]; waiting buckets lists of (topic, offset, at, tie, key, value, "
    "watermark, timestamp); outbox records lists of (key, JSON alert)"
)

#: Source folders whose code decides what the table holds: clean when ``make`` runs.
CODE = ("processor", "retention", "schemas", "streams", "agents", "tests/inprocess.py")


def histories(folder: Path) -> tuple[list[Record], list[Record], list[Record]]:
    """HISTORY's whole log (its records in event-time order, the undated first), its
    first part (dated before ``cut``) and second part (the rest)."""
    end = parse_time(HISTORY["end"])
    cut = parse_time(HISTORY["cut"])
    path = folder / "history.jsonl"
    write_history(path, HISTORY["customers"], HISTORY["days"], HISTORY["seed"], from_micros(end))
    records = [
        r for r in read_events(path, "jsonl") if r.occurred_at is None or r.occurred_at < end
    ]
    records.sort(key=lambda r: -1 if r.occurred_at is None else r.occurred_at)
    first = [r for r in records if r.occurred_at is None or r.occurred_at < cut]
    return records, first, records[len(first) :]


def as_of() -> Micros:
    return parse_time(HISTORY["end"])


def rng() -> random.Random:
    return random.Random(0)  # one batch size: never drawn from, but Run.feed wants one


class _Observed:
    """processor.outbox's ``datetime``, its clock stopped at the cut: the
    ``observed_at`` of the alerts the outbox keeps is otherwise the only thing in the
    table that differs from one run to the next."""

    @staticmethod
    def now(tz: tzinfo | None = None) -> datetime:
        return from_micros(parse_time(HISTORY["cut"])).astimezone(tz)


def stopped(log: list[Record], first: list[Record]) -> Run:
    """The worker that wrote the fixture: it read ``first`` of ``log`` and stopped."""
    run = Run(log, as_of())
    with mock.patch("processor.outbox.datetime", _Observed):
        run.read(first, [HISTORY["batch"]], rng())
    return run


def recovered(
    log: list[Record], first: list[Record], second: list[Record], table: dict[bytes, bytes]
) -> tuple[Run, int]:
    """A new worker that recovers ``table`` and reads on: ``second``, then the final
    tick. Returns it and how many alerts its outbox sent again."""
    run = Run(log, as_of())
    resent = run.recover(table, first, [HISTORY["batch"]], rng())
    run.feed(second, [HISTORY["batch"]], rng())
    return run, resent


#: Fields added since the fixture's release (21bf571), by struct: not among the
#: results it recorded, so left out of ``fields``; tests/unit/test_upgrade_changelog.py
#: checks what a recovered worker makes of them on their own.
LATER_FIELDS: dict[str, frozenset[str]] = {
    "CustomerState": frozenset({"home"}),  # retention/state.py: the earliest signup
    "PartitionState": frozenset({"segments", "plans"}),  # retention/segments.py
    "Figures": frozenset({"cost_to_serve"}),  # a period's cost to serve
}


def fields(value: Any) -> Any:
    """``value`` as builtins, every struct a map by field name (an array_like struct's
    ``msgspec.to_builtins`` is a list by position): the figures, not their encoding."""
    if isinstance(value, msgspec.Struct):
        later = LATER_FIELDS.get(type(value).__name__, frozenset())
        return {
            name: fields(getattr(value, name))
            for name in value.__struct_fields__
            if name not in later
        }
    if isinstance(value, dict):
        return {key: fields(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [fields(item) for item in value]
    return value


def canonical(value: Any) -> bytes:
    """A decoded record's figures as JSON, keys sorted."""
    return json.dumps(msgspec.to_builtins(fields(value), str_keys=True), sort_keys=True).encode()


def results(run: Run, resent: int = 0, alerts: list[bytes] | None = None) -> dict[str, Any]:
    """What ``run`` ended with: one hash over every customer record and partition
    record (decoded, as ``canonical`` figures: another encoding of the same figures
    hashes the same) and every alert sent (or ``alerts``), in order, less
    ``observed_at``; and counts."""
    digest = hashlib.sha256()

    def add(kind: bytes, key: bytes, value: bytes) -> None:
        digest.update(b"%s %d:%s %d:%s\n" % (kind, len(key), key, len(value), value))

    customers = partitions = 0
    for key in sorted(run.table):
        raw = run.table[key]
        if is_customer_key(key):
            customers += 1
            add(b"customer", key, canonical(decode_state(raw)))
        elif is_partition_key(key):
            partitions += 1
            add(b"partition", key, canonical(decode_partition(raw)))
    if alerts is None:
        alerts = run.alerts_sent.values
    for value in alerts:
        alert = json.loads(value)
        del alert["observed_at"]
        add(b"alert", b"", json.dumps(alert, sort_keys=True).encode())
    return {
        "customers": customers,
        "partitions": partitions,
        "alerts": len(alerts),
        "resent": resent,
        "hash": digest.hexdigest(),
    }


KINDS = ("customer", "due", "outbox", "partition", "pending")


def kinds(table: dict[bytes, bytes]) -> dict[str, int]:
    """How many records of each kind ``table`` holds."""
    found: Counter[str] = Counter()
    for key in table:
        if is_customer_key(key):
            found["customer"] += 1
        elif is_partition_key(key):
            found["partition"] += 1
        elif key.startswith(OUTBOX):
            found["outbox"] += 1
        else:  # b"\x00due/..." or b"\x00pending/..."
            found[key[1:].split(b"/", 1)[0].decode()] += 1
    return dict(sorted(found.items()))


def dump_table(table: dict[bytes, bytes]) -> bytes:
    """The table as gzipped JSON lines, keys sorted, base64 keys and values; the same
    bytes for the same table (no time or name in the gzip header)."""
    lines = b"".join(
        json.dumps(
            {"key": base64.b64encode(key).decode(), "value": base64.b64encode(table[key]).decode()}
        ).encode()
        + b"\n"
        for key in sorted(table)
    )
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as handle:
        handle.write(lines)
    return out.getvalue()


def load_table(path: Path = TABLE) -> dict[bytes, bytes]:
    table: dict[bytes, bytes] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            table[base64.b64decode(entry["key"])] = base64.b64decode(entry["value"])
    return table


def load_meta(path: Path = META) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def release(dirty_ok: bool = False) -> str:
    """The commit checked out; refuses if the code that writes the table has changes
    (``dirty_ok``: named "<commit>+dirty" instead, for a try-out outside the tree)."""
    root = Path(__file__).parent.parent
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", *CODE],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if dirty and not dirty_ok:
        raise SystemExit(f"commit or stash these first, the fixture names a release:\n{dirty}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"{commit}+dirty" if dirty else commit


def make(folder: Path, dirty_ok: bool = False) -> None:
    commit = release(dirty_ok)
    with tempfile.TemporaryDirectory(prefix="churnwatch-upgrade-") as tmp:
        log, first, second = histories(Path(tmp))
    old = stopped(log, first)
    table = dict(old.table)
    missing = set(KINDS) - set(kinds(table))
    if missing:  # the fixture is to hold every kind of record a release must read
        raise SystemExit(f"no {', '.join(sorted(missing))} record in the table: move the cut")
    sent_before = len(old.alerts_sent.values)
    # The stopped worker reading on, and a new one recovering its changelog, must agree.
    old.feed(second, [HISTORY["batch"]], rng())
    new, resent = recovered(log, first, second, table)
    got = results(new, resent)
    # The stopped worker's alerts of the second part, after those the new one resent.
    alerts = new.alerts_sent.values[:resent] + old.alerts_sent.values[sent_before:]
    if results(old, resent, alerts) != got:
        raise SystemExit(f"the recovered worker ends otherwise than the stopped one: {got}")
    meta = {
        "release": commit,
        "encoding": ENCODING.format(msgspec=msgspec.__version__),
        "history": HISTORY,
        "events": {"first": len(first), "second": len(second)},
        "table": kinds(table),
        "results": got,
        "stopped": {"alerts_sent": sent_before},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TABLE.name).write_bytes(dump_table(table))
    (folder / META.name).write_text(json.dumps(meta, indent=2) + "\n")
    size = (folder / TABLE.name).stat().st_size
    print(f"release {commit}: {len(table):,} records, {size:,} bytes; {got}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("make",))
    parser.add_argument("--out", type=Path, default=FOLDER, help="folder (default %(default)s)")
    parser.add_argument("--dirty", action="store_true", help="allow uncommitted code (try-outs)")
    args = parser.parse_args()
    make(args.out, args.dirty)


if __name__ == "__main__":
    main()
