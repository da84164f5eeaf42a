"""Batched restore: a table's changelog read in bulk before Faust's own recovery.

Faust's recovery (``faust.tables.recovery.Recovery``) takes the changelog one record
at a time: through the consumer's per-message hand-off, a queue and an
``asyncio.wait_for`` per record, about 6,000 records/s here, so a cold start with
1M customers took 162 s. This module reads the same records with a plain,
group-less aiokafka consumer (``getmany``: whole fetches, no per-record task) and
hands them to the table's own ``apply_changelog_batch`` a fetch at a time, the
write Faust's recovery makes too (a RocksDB WriteBatch per partition and the
persisted offset; the memory store's dict). Faust's recovery then starts where the
restore stopped and reads only what is left, usually nothing.

Where it runs: ``BatchedRecovery`` is Faust's ``Recovery`` with two methods
extended. Faust builds each active changelog partition's highwater (its last
offset) and start offset (the store's persisted offset, or the log's start), each
under ``Recovery._wait`` with a request timeout; once the start offsets are built,
the restore runs under ``_wait`` again, without a timeout (a large table may take
minutes) but cancelled, as Faust's own steps are, by a new rebalance or a stop.

Invariants:

- It reads each partition up to Faust's highwater and no further: Faust raises a
  ConsistencyError for an offset past it, and its own recovery would read no more.
- ``Recovery.active_offsets[tp]`` is advanced only after the records up to it are
  in the store, so a restore cut short (a rebalance, a stop, an error) leaves a
  store and offsets that agree, and Faust's recovery goes on from there. An error is
  logged and leaves the rest to Faust; it never stops the worker.
- Records are applied in log order per partition, so the store ends with the
  changelog's latest value per key and a tombstone (value None) deletes the key:
  compaction's semantics, as Faust's own recovery gives.
- Only tables with raw key and value serializers and no ``on_changelog_event``
  callback are restored this way (the customers table is): the store gets the
  bytes as they are in the log, and no callback is skipped. Others are left to
  Faust.

Faust internals (private): ``Recovery._build_offsets``, ``Recovery._wait``,
``Recovery.active_offsets``, ``Recovery.active_highwaters``,
``Recovery.tp_to_table``, ``TableManager._recovery``, and
``Collection._on_changelog_event``. Written against faust-streaming 0.15.3 and
aiokafka 0.14 (as agents/delivery.py and streams/consumer.py are): re-read each
against a new version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from streams.security import client_kwargs, client_security
from streams.settings import Settings

log = logging.getLogger(__name__)

#: How often a restore logs its progress.
PROGRESS_SECONDS = 5.0

#: A restore that reads nothing for this long leaves the rest to Faust's recovery
#: (a log truncated under it, a broker gone): it must never wait for ever.
STALL_SECONDS = 30.0

#: Most records one ``getmany`` returns: each fetch is applied in one synchronous
#: step, which must stay short enough for the event loop's other tasks (heartbeats,
#: the web server).
FETCH_RECORDS = 20_000

#: Consumer settings for reading a log from end to end: big fetches, few requests.
FETCH_CONFIG: Mapping[str, Any] = {
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
    "auto_offset_reset": "earliest",
}

#: A partition's restore: (first offset to read, last offset to read).
Plan = dict[TP, tuple[int, int]]


class ChangelogRecord:
    """One changelog record in the form a table's ``apply_changelog_batch`` reads
    from a Faust event: ``key``, ``value``, and ``message.tp``, ``.offset``,
    ``.partition``, ``.key``, ``.value`` (the record is its own message)."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: TP, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset
        self.key = key
        self.value = value

    @property
    def message(self) -> ChangelogRecord:
        return self


def restorable(table: Any) -> bool:
    """Whether ``table`` can take its changelog's bytes as they are (see the module's
    invariants)."""
    return (
        table.key_serializer == "raw"
        and table.value_serializer == "raw"
        and getattr(table, "_on_changelog_event", None) is None
    )


def plan_restore(
    tps: Sequence[TP],
    offsets: Mapping[TP, int | None],
    highwaters: Mapping[TP, int | None],
    min_records: int,
) -> Plan:
    """The partitions with at least ``min_records`` records left between the offset
    last applied (``offsets``, -1 for none) and the last one (``highwaters``), as
    (first offset to read, last offset). Faust's recovery reads the others."""
    plan: Plan = {}
    for tp in tps:
        applied, last = offsets.get(tp), highwaters.get(tp)
        if applied is None or last is None:
            continue
        if last - applied >= max(1, min_records):
            plan[tp] = (applied + 1, last)
    return plan


def restore_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A group-less consumer (manual assignment, no commits) for reading changelogs,
    connecting as every other client of the worker does."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        enable_auto_commit=False,
        client_id=f"{settings.app_id}-restore",
        **client_kwargs(client_security(settings)),
        **FETCH_CONFIG,
    )


class _Progress:
    """Records applied so far, logged every PROGRESS_SECONDS."""

    def __init__(self, plan: Plan) -> None:
        self.total = sum(last - first + 1 for first, last in plan.values())
        self.partitions = len(plan)
        self.applied = 0
        self.done = 0
        self.started = self.logged = time.monotonic()

    def rate(self) -> float:
        return self.applied / max(time.monotonic() - self.started, 1e-6)

    def maybe_log(self) -> None:
        if time.monotonic() - self.logged >= PROGRESS_SECONDS:
            self.logged = time.monotonic()
            log.info(
                "batched restore: %d of at most %d changelog records applied (%.0f/s), "
                "%d of %d partitions done",
                self.applied, self.total, self.rate(), self.done, self.partitions,
            )  # fmt: skip


async def restore(
    consumer: AIOKafkaConsumer,
    tables: Mapping[TP, Any],
    plan: Plan,
    offsets: MutableMapping[TP, int],
) -> int:
    """Read each partition of ``plan`` from its first offset to its last with the
    started ``consumer`` and apply the records, a fetch at a time, to the table
    ``tables`` names for it; ``offsets[tp]`` follows the last offset applied (the
    last of the plan once the consumer's position has passed it, even if that offset
    held no record any more). Returns the records applied; stops early, leaving the
    rest unread, if nothing arrives for STALL_SECONDS."""
    pending = {TopicPartition(tp.topic, tp.partition): tp for tp in plan}
    consumer.assign(list(pending))
    for atp, tp in pending.items():
        consumer.seek(atp, plan[tp][0])
    progress = _Progress(plan)
    last_read = time.monotonic()
    while pending:
        fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=FETCH_RECORDS)
        for atp, records in fetched.items():
            if atp not in pending:
                continue
            tp = pending[atp]
            last = plan[tp][1]
            batch = [
                ChangelogRecord(tp, r.offset, r.key, r.value) for r in records if r.offset <= last
            ]
            if batch:
                tables[tp].apply_changelog_batch(batch)
                offsets[tp] = batch[-1].offset
                progress.applied += len(batch)
                last_read = time.monotonic()
        for atp, tp in list(pending.items()):
            if await consumer.position(atp) > plan[tp][1]:
                offsets[tp] = plan[tp][1]
                consumer.pause(atp)
                del pending[atp]
                progress.done += 1
        if pending and time.monotonic() - last_read > STALL_SECONDS:
            log.warning(
                "batched restore: nothing read for %.0fs from %s; Faust's recovery "
                "reads the rest", STALL_SECONDS, ", ".join(sorted(map(str, pending.values()))),
            )  # fmt: skip
            break
        progress.maybe_log()
        await asyncio.sleep(0)  # a fetch applied: let the loop's other tasks run
    log.info(
        "batched restore: %d changelog records of %d partitions applied in %.1fs (%.0f/s)",
        progress.applied, progress.partitions, time.monotonic() - progress.started,
        progress.rate(),
    )  # fmt: skip
    return progress.applied


class BatchedRecovery(Recovery):
    """Faust's recovery, preceded by a batched restore of the active changelog
    partitions with at least ``settings.batched_restore_min`` records to read."""

    _restore_plan: Plan | None = None

    async def _build_offsets(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await super()._build_offsets(consumer, tps, destination, title)
        if title != "active":
            return
        settings: Settings = cast(Any, self.app).settings
        tables = {tp: self.tp_to_table[tp] for tp in tps if tp in self.tp_to_table}
        self._restore_plan = plan_restore(
            [tp for tp, table in tables.items() if restorable(table)],
            destination,
            self.active_highwaters,
            settings.batched_restore_min,
        )

    async def _wait(self, coro: Any, timeout: Any = None) -> None:
        # Faust's steps run with a timeout that a large restore would outlast (and a
        # timed-out step stops the recovery service for good): the restore runs as
        # a step of its own, right after the one that planned it, without one.
        try:
            await super()._wait(coro, timeout=timeout)
        finally:
            plan, self._restore_plan = self._restore_plan, None
        if plan:
            await super()._wait(self._restore(plan))

    async def _restore(self, plan: Plan) -> None:
        settings: Settings = cast(Any, self.app).settings
        consumer = restore_consumer(settings)
        try:
            await consumer.start()
            await restore(consumer, self.tp_to_table, plan, self.active_offsets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "batched restore failed (%r); Faust's recovery reads the changelog on "
                "from the last offset applied", exc, exc_info=True,
            )  # fmt: skip
        finally:
            await consumer.stop()


class RestoringTableManager(TableManager):
    """Faust's table manager with ``BatchedRecovery`` as its recovery service (the
    app's ``TableManager`` setting: streams/app.py)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = BatchedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
