"""The due-time index: per partition and UTC day, customer key -> due instant; and
the re-assessment of the customers due, the ones who stopped doing anything.

Stored in the customers table beside the partition record (same changelog
partition), on the day-keyed index of processor/days.py. Entries are never removed
when a customer's due time moves: the stale entry is recognised (the state's due
differs) and dropped when its day comes, which keeps every update a write to one
bucket.

A crash may cut a batch's writes anywhere, so a stored state's due time must
always be findable: new entries are stored before the customers (``write_added``,
with the entries this batch took out still in), and entries are taken out only
after them (``write_removed``); processor/commit.py orders the writes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from processor.customers import Touched
from processor.days import DayBuckets
from retention.alerts import Lifecycle
from retention.state import CustomerState
from retention.timeutil import DAY, Micros
from streams.partitions import due_bucket_key

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(dict[bytes, int])

Due = dict[bytes, int]


def _decode(raw: bytes | None) -> Due:
    return {} if raw is None else _DECODER.decode(raw)


class DueBuckets(DayBuckets[Due]):
    """The due-time index of one partition, as a batch changes it."""

    def __init__(self, table: Any, partition: int, days: list[int]) -> None:
        super().__init__(table, partition, days, due_bucket_key, _decode, _ENCODER.encode)
        self.added: set[int] = set()
        self.removed: dict[int, Due] = {}

    def add(self, day: int, key: bytes, due: int) -> None:
        bucket = self.get(day)
        if bucket.get(key) != due:
            bucket[key] = due
            self.added.add(day)

    def remove(self, day: int, key: bytes) -> None:
        self.removed.setdefault(day, {})[key] = self.loaded[day].pop(key)

    def schedule(self, lifecycle: Lifecycle, key: bytes, state: CustomerState) -> None:
        """Index the customer's next due time, if it has one."""
        due = lifecycle.schedule(state)
        if due is not None:
            day = due // DAY
            self.add(day, key, due)
            self.note(day)

    def reassess(
        self, lifecycle: Lifecycle, limit: Micros, touched: Touched, source: Any, assessed: Any
    ) -> None:
        """Re-assess every customer due by ``limit`` (the watermark less the lateness):
        the customers who stopped doing anything. Cost: the customers due, no more.
        Their alerts name ``source``; ``assessed`` counts each re-assessment."""
        for day, bucket in self.walk(limit, _emptied):
            for key, due in sorted(bucket.items(), key=lambda item: (item[1], item[0])):
                if due > limit:
                    continue
                self.remove(day, key)
                state = touched.stored(key)
                if state is None or state.risk is None or state.risk.due != due:
                    continue  # superseded by a later event: rescheduled then
                touched.note_before(key, state)
                for alert in lifecycle.catch_up(state, limit):
                    touched.alerts.append((alert, source))
                assessed.inc()
                touched.states[key] = state
                self.schedule(lifecycle, key, state)

    def write_added(self) -> None:
        for day in sorted(self.added):
            removed = self.removed.get(day)
            bucket = self.loaded[day]
            self.write(day, {**removed, **bucket} if removed else bucket)

    def write_removed(self) -> None:
        for day in sorted(self.removed):
            self.write(day, self.loaded[day])


def _emptied(day: int, bucket: Due) -> bool:
    """Whether every entry of the day is taken out (else the rest is not due yet)."""
    return not bucket
