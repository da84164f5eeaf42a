"""The day-keyed index shared by the due-time index and the waiting events.

Both keep, per partition and UTC day, one bucket record in the customers table
(the same changelog partition as the partition record), and in the partition
record the sorted list of days that have a bucket. A batch walks the days up to a
limit (``walk``); it loads each bucket once, and writes those it changed in the
order the commit plan gives (processor/commit.py).

A day leaves the list only in a batch after the one that emptied its bucket: the
partition record is written before the customers the bucket's entries reached, and
a crash between the two must leave the bucket findable.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from retention.timeutil import DAY, Micros

Bucket = TypeVar("Bucket", bound=dict[Any, Any])


def note_day(days: list[int], day: int) -> None:
    """Add ``day`` to the sorted day index of a partition's buckets, once."""
    index = bisect.bisect_left(days, day)
    if index == len(days) or days[index] != day:
        days.insert(index, day)


class DayBuckets(Generic[Bucket]):
    """Buckets of one partition, one a UTC day, loaded from the table at most once.

    ``days`` is the partition record's sorted list of days with a bucket (changed in
    place); ``key`` the table key of a day's bucket; ``decode`` and ``encode`` turn a
    stored bucket into its in-memory form and back.
    """

    def __init__(
        self,
        table: Any,
        partition: int,
        days: list[int],
        key: Callable[[int, int], bytes],
        decode: Callable[[bytes | None], Bucket],
        encode: Callable[[Bucket], bytes],
    ) -> None:
        self.table = table
        self.partition = partition
        self.days = days
        self._key = key
        self._decode = decode
        self._encode = encode
        self.loaded: dict[int, Bucket] = {}

    def get(self, day: int) -> Bucket:
        bucket = self.loaded.get(day)
        if bucket is None:
            raw = self.table.get(self._key(self.partition, day))
            bucket = self._decode(raw)
            self.loaded[day] = bucket
        return bucket

    def note(self, day: int) -> None:
        note_day(self.days, day)

    def write(self, day: int, bucket: Bucket) -> None:
        """Store ``bucket`` as the day's record; an empty one is deleted."""
        key = self._key(self.partition, day)
        if bucket:
            self.table[key] = self._encode(bucket)
        elif key in self.table:
            del self.table[key]

    def walk(
        self, limit: Micros, done: Callable[[int, Bucket], bool]
    ) -> Iterator[tuple[int, Bucket]]:
        """The days up to the one of ``limit``, each with its bucket, in order; stops
        after a day whose bucket is not ``done`` once the caller has handled it (the
        rest of that day is not due yet). A day whose bucket an earlier batch emptied
        leaves the index now: that batch's write of the empty bucket precedes this
        batch's partition record."""
        days = self.days
        index = 0
        while index < len(days) and days[index] <= limit // DAY:
            day = days[index]
            bucket = self.get(day)
            if not bucket:
                days.pop(index)
                continue
            yield day, bucket
            if not done(day, bucket):
                break
            # Emptied now, but the day stays in the index until a later batch (see
            # the module docstring).
            index += 1
