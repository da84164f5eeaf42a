"""The batch oracle's figures per customer segment (DESIGN section 10), recomputed
from the valid distinct events as ``tests/oracle.py`` does for the whole business,
and independent of ``retention`` in the same way.

- A customer's segment is the ``segment`` of their earliest signup by (event time,
  id hash); ``none`` without a signup or when that signup has no segment.
- The cap, per partition: the partition's customers' earliest signups, in (event
  time, id hash) order, name the tracked segments until ``cap`` are named; a name
  first met after that counts under ``other``. The literal names ``none`` and
  ``other`` are those buckets. (A partition applies its on-time events in that order:
  the first name it meets as a customer's segment is the first in this order.)
- Figures from a customer's history (active at start and end, acquired, retained,
  buyers, revenue, MRR) count in the customer's segment; figures counted per event
  (cost to serve, NPS and CSAT responses) in the segment of the earliest of the
  customer's signups before the event in (event time, id hash) order, ``none`` if
  there is none: the segment the customer had when the event was applied.

Per-segment figures of a period sum to the whole business's (``oracle.batch``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from tests.oracle import (
    FIGURES,
    Event,
    Figures,
    Period,
    _History,
    add_customer,
    add_event,
    by_customer,
    empty_periods,
    iso,
)

NONE = "none"
OTHER = "other"


def home(events: list[Event]) -> Event | None:
    """The customer's earliest signup by (event time, id hash)."""
    signups = [e for e in events if e.type == "signup"]
    return min(signups, key=lambda e: (e.at, e.tie)) if signups else None


class Buckets:
    """The cap's verdicts: per partition, the tracked names (see the module doc)."""

    def __init__(
        self,
        grouped: dict[str, list[Event]],
        cap: int,
        partition_of: Callable[[str], int],
        attr: str = "segment",
    ) -> None:
        self.partition_of = partition_of
        firsts: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for cid, items in grouped.items():
            first = home(items)
            name = None if first is None else getattr(first, attr)
            if first is not None and name not in (None, NONE, OTHER):
                firsts[partition_of(cid)].append((first.at, first.tie, name))
        self.tracked: dict[int, set[str]] = defaultdict(set)
        for partition, rows in firsts.items():
            tracked = self.tracked[partition]
            for _, _, segment in sorted(rows):
                if len(tracked) < cap:
                    tracked.add(segment)

    def of(self, cid: str, name: str | None) -> str:
        """The bucket segment ``name`` counts under for customer ``cid``."""
        if name is None or name == NONE:
            return NONE
        return name if name in self.tracked[self.partition_of(cid)] else OTHER


def _applied_in(items: list[Event], event: Event, attr: str) -> str | None:
    """The segment (or plan) the customer had when ``event`` was applied."""
    before = [e for e in items if e.type == "signup" and (e.at, e.tie) < (event.at, event.tie)]
    if not before:
        return None
    name: str | None = getattr(min(before, key=lambda e: (e.at, e.tie)), attr)
    return name


def segments(
    events: list[Event],
    period: str,
    window: int | None,
    until: int,
    cap: int = 50,
    partition_of: Callable[[str], int] = lambda cid: 0,
    attr: str = "segment",
) -> dict[str, list[Period]]:
    """Bucket -> its periods, over the whole business's periods (``oracle.batch``).
    ``attr="plan"``: the same by the plan of the earliest signup (the second
    dimension, kept by the same rules)."""
    if not events:
        return {}
    first = min(e.at for e in events)
    grouped = by_customer(events)
    verdicts = Buckets(grouped, cap, partition_of, attr)
    out: dict[str, list[Period]] = {}

    def book(bucket: str) -> list[Period]:
        if bucket not in out:
            out[bucket] = empty_periods(period, first, until)
        return out[bucket]

    for cid, items in grouped.items():
        signup = home(items)
        bucket = verdicts.of(cid, None if signup is None else getattr(signup, attr))
        add_customer(book(bucket), _History(items), window)
        for e in items:
            if e.type in ("purchase", "feedback"):
                periods = book(verdicts.of(cid, _applied_in(items, e, attr)))
                add_event(periods, [p.start for p in periods], e)
    return out


def engine_segments(
    partitions: Iterable[Any], field: str = "segments"
) -> dict[str, dict[int, tuple[str, int, Figures]]]:
    """Bucket -> period start -> (label, end, figures) of the engine's closed periods
    (``PartitionState.segments``), summed over partitions; duck-typed."""
    sums: dict[str, dict[int, tuple[str, int, Figures]]] = defaultdict(dict)
    for part in partitions:
        kept = getattr(part, field)
        if kept is None:
            raise AssertionError(f"partition {part.partition} keeps no {field}")
        for bucket, book in kept.books.items():
            for p in book.closed:
                label, end, total = sums[bucket].get(p.start, (p.label, p.end, Figures()))
                for name in FIGURES:
                    setattr(total, name, getattr(total, name) + getattr(p.figures, name))
                sums[bucket][p.start] = (label, end, total)
    return sums


def compare(
    want: dict[str, list[Period]], partitions: Iterable[Any], field: str = "segments"
) -> list[str]:
    """Every difference between the oracle's per-segment periods and the engine's
    closed ones (an engine period the oracle lacks must be all zeros)."""
    got = engine_segments(partitions, field)
    out: list[str] = []
    for bucket in sorted(set(want) | set(got)):
        engine = dict(got.get(bucket, {}))
        for p in want.get(bucket, []):
            label, end, figures = engine.pop(p.start, (p.label, p.end, Figures()))
            if (label, end) != (p.label, p.end):
                out.append(f"{bucket} {p.label}: engine label/end {(label, end)}")
            elif figures != p.figures:
                diff = {n: (getattr(figures, n), getattr(p.figures, n)) for n in FIGURES
                        if getattr(figures, n) != getattr(p.figures, n)}  # fmt: skip
                out.append(f"{bucket} {p.label}: (engine, oracle) {diff}")
        low = min((p.start for p in want.get(bucket, [])), default=None)
        high = max((p.end for p in want.get(bucket, [])), default=None)
        for start, (_, end, figures) in engine.items():
            inside = low is not None and high is not None and low <= start and end <= high
            if inside or figures != Figures():
                out.append(f"{bucket} {iso(start)}: an engine period the oracle does not have")
    return out
