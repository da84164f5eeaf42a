"""The commit plan: the one order in which a batch writes the customers table.

Per input partition, a batch writes, within the context of an event of that
partition so the changelog records land in the partition the state belongs to:

1. the outbox records of its alerts and forwards (processor/outbox.py), and the
   buckets that gained waiting events (processor/alignment.py);
2. the partition's own record (processor/partition.py), with its processed offsets,
   counters and outbox list;
3. the due-time buckets that gained entries (processor/due.py), with the entries
   this batch took out still in;
4. each touched customer;
5. what the batch took out of due and waiting buckets;
6. then deletes the outbox records the broker has acknowledged, and sends this
   batch's outbox.

Writing the partition record before the customers matters for at-least-once
processing: records of one changelog partition are stored in send order, so after
a crash the stored partition record (with its processed offsets and counters) is
never behind the customer states. Redelivered messages are then recognised by
offset and not counted twice, while their effect on state is deduplicated by
event id. Waiting events are stored before the record that marks their offsets
processed, and removed only after the customers they were applied to; a day
leaves the record's index of waiting or due days only in a batch after the one
that emptied its bucket, so a crash between the record and the customers leaves
the day's work findable. The outbox is stored before the record that lists it and
sent after it: an alert is never sent before the state that raised it is on its
way, nor lost with a worker. A crash may cut a batch's writes anywhere:
tests/agent/test_crash_points.py cuts them at random and right after the record.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from processor import outbox
from processor.alignment import PendingBuckets
from processor.due import DueBuckets
from processor.partition import Partitions, PartitionState
from retention.state import CustomerState, encode_state


@dataclass
class CommitPlan:
    """One partition's writes of one batch."""

    record: PartitionState
    outboxes: list[outbox.Record]
    waiting: PendingBuckets
    due: DueBuckets
    customers: dict[bytes, CustomerState]
    #: Outbox records of earlier batches whose records the broker acknowledged.
    delivered: list[bytes]

    def write(self, table: MutableMapping[bytes, bytes], partitions: Partitions, sink: Any) -> None:
        """Steps 1 to 5 and the deletions of step 6 (the module docstring); ``sink``:
        the serving view offered each customer once it is written (None: none)."""
        for stored, chunk in self.outboxes:
            table[stored] = outbox.encode(chunk)
        self.waiting.write_added()
        partitions.store(self.record)
        self.due.write_added()
        for key, state in self.customers.items():
            table[key] = encode_state(state)
        self.due.write_removed()
        self.waiting.write_released()
        if sink is not None:
            for state in self.customers.values():
                sink.offer(state)
        for stored in self.delivered:
            table.pop(stored, None)
