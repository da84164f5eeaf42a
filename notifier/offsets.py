"""Which offsets may be committed: every record before them is finished.

Records of a partition finish in any order (deliveries retry, lanes run in
parallel, openings wait in a ranking window), but a committed offset tells a
restarted notifier where to start reading, so it must never pass a record that is
not finished: delivered, given up on into the dead-letter topic, or decided not to
be sent. At least once: a record finished after its offset was last committed is
read again after a crash, and sent again under the same idempotency key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class Offsets(Generic[P]):
    """Per partition (any hashable key), the records read and not yet finished."""

    def __init__(self) -> None:
        #: Offsets read, in the order read (increasing), still waiting on the left.
        self._read: dict[P, deque[int]] = {}
        self._finished: dict[P, set[int]] = {}
        #: The next offset to read of each partition (last read + 1).
        self._next: dict[P, int] = {}

    def read(self, partition: P, offset: int) -> None:
        """A record was read; offsets of a partition must come in increasing order."""
        last = self._next.get(partition)
        if last is not None and offset < last:
            raise ValueError(f"offset {offset} of {partition!r} read after {last - 1}")
        self._read.setdefault(partition, deque()).append(offset)
        self._finished.setdefault(partition, set())
        self._next[partition] = offset + 1

    def finish(self, partition: P, offset: int) -> None:
        """A record is finished (unknown partitions, e.g. revoked ones, are ignored)."""
        waiting = self._read.get(partition)
        if waiting is None:
            return
        finished = self._finished[partition]
        finished.add(offset)
        while waiting and waiting[0] in finished:
            finished.discard(waiting.popleft())

    def committable(self) -> dict[P, int]:
        """Per partition read, the offset to commit: the first unfinished record, or
        the next to read when every record read is finished."""
        out: dict[P, int] = {}
        for partition, waiting in self._read.items():
            out[partition] = waiting[0] if waiting else self._next[partition]
        return out

    def pending(self) -> int:
        return sum(len(waiting) for waiting in self._read.values())

    def forget(self, partitions: Iterable[P]) -> None:
        """Partitions no longer owned: their records are someone else's to finish."""
        for partition in partitions:
            self._read.pop(partition, None)
            self._finished.pop(partition, None)
            self._next.pop(partition, None)
