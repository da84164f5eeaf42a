"""Which changelog partitions the batched restore reads (streams/restore.py), and the
record form it hands to a table."""

from __future__ import annotations

from typing import Any

from faust.types import TP

from streams.app import create_app
from streams.restore import ChangelogRecord, plan_restore, restorable
from streams.settings import Settings


def test_plan_reads_from_the_offset_after_the_last_applied_to_the_highwater() -> None:
    tp, other, unknown = TP("c", 0), TP("c", 1), TP("c", 2)
    offsets: dict[TP, int | None] = {tp: 99, other: 5_000, unknown: None}
    highwaters: dict[TP, int | None] = {tp: 20_000, other: 5_100, unknown: 10}
    # Short tails (other) and partitions with no known offset are Faust's to read.
    assert plan_restore([tp, other, unknown], offsets, highwaters, 10_000) == {tp: (100, 20_000)}
    # Nothing applied (-1): from offset 0.
    assert plan_restore([tp], {tp: -1}, {tp: 0}, 1) == {tp: (0, 0)}
    # A persisted offset past the highwater is Faust's ConsistencyError to raise, and
    # an empty log (-1) has nothing to read.
    assert plan_restore([tp], {tp: 30_000}, {tp: 20_000}, 1) == {}
    assert plan_restore([tp], {tp: -1}, {tp: -1}, 1) == {}


def test_a_record_reads_as_the_event_a_table_applies() -> None:
    record = ChangelogRecord(TP("c", 3), 41, b"k", None)
    assert record.message is record
    assert (record.message.tp, record.message.partition, record.message.offset) == (
        TP("c", 3), 3, 41,
    )  # fmt: skip
    assert (record.key, record.value, record.message.value) == (b"k", None, None)


def test_only_raw_tables_without_a_changelog_callback_are_restored() -> None:
    table: Any = create_app(Settings(clock="off")).customers
    assert restorable(table)
    table._on_changelog_event = lambda event: None
    assert not restorable(table)


def test_the_app_uses_the_restoring_table_manager_unless_turned_off() -> None:
    on = create_app(Settings(clock="off"))
    off = create_app(Settings(clock="off", batched_restore=False))
    assert type(on.tables.recovery).__name__ == "BatchedRecovery"
    assert type(off.tables.recovery).__name__ == "Recovery"
