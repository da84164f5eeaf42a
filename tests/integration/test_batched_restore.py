"""The batched restore (streams/restore.py) on a real broker: a table restored from a
changelog with overwritten keys and tombstones holds the changelog's latest value
per key and nothing deleted, in the memory store and in RocksDB; a restore that
stops at a highwater short of the log's end holds exactly that prefix, and one from
there on completes it, as Faust's recovery reading the tail would."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from streams import topics
from streams.app import create_app
from streams.embedded import Broker
from streams.kafka_admin import create_topics
from streams.partitions import partition_state_key
from streams.produce import producer_for
from streams.restore import plan_restore, restore, restore_consumer
from streams.settings import Settings
from streams.workers import local_settings

pytestmark = [pytest.mark.integration]

PARTITIONS = 2
KEYS = 300  # per partition
WRITES = 3_000  # per partition: each key written about 10 times, some deleted

Log = list[tuple[bytes, bytes | None]]  # one partition's records in offset order


def compacted(log: Log) -> dict[bytes, bytes]:
    """The latest value per key, deleted keys absent: what compaction keeps."""
    latest: dict[bytes, bytes] = {}
    for key, value in log:
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = value
    return latest


async def write_logs(bootstrap: str, topic: str, seed: int) -> dict[int, Log]:
    """Each partition's records: customer keys set, overwritten, deleted (tombstones)
    and set again, and the partition record among them, as a worker writes."""
    rng = random.Random(seed)
    logs: dict[int, Log] = {p: [] for p in range(PARTITIONS)}
    for partition, log in logs.items():
        keys = [f"p{partition}-c{n:04d}".encode() for n in range(KEYS)]
        keys.append(partition_state_key(partition))
        for n in range(WRITES):
            key = rng.choice(keys)
            value = None if rng.random() < 0.15 else b"%d:%d" % (partition, n)
            log.append((key, value))
        log.append((keys[0], None))  # the last record a tombstone
    producer = producer_for(bootstrap)
    await producer.start()
    try:
        for partition, log in logs.items():
            sent = [
                await producer.send(topic, value, key=key, partition=partition)
                for key, value in log
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return logs


def stored(table: Any, log: Log) -> dict[bytes, bytes]:
    """What the table's store holds for every key the log names (through the store's
    public mapping interface, which reads every open partition)."""
    out = {}
    for key in {key for key, _ in log}:
        value = table.data.get(key)
        if value is not None:
            out[key] = value
    return out


async def restore_to(settings: Settings, table: Any, plan: dict[TP, tuple[int, int]]) -> dict:
    offsets: dict[TP, int] = {}
    consumer = restore_consumer(settings)
    await consumer.start()
    try:
        applied = await restore(consumer, dict.fromkeys(plan, table), plan, offsets)
    finally:
        await consumer.stop()
    assert applied == sum(last - first + 1 for first, last in plan.values())
    return offsets


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_restore_holds_the_latest_value_per_key_and_no_deleted_key(
    broker: Broker, tmp_path: Path, store: str
) -> None:
    settings = local_settings(Settings(), broker, PARTITIONS, tmp_path).replace(store=store)
    topic = topics.changelog_topic(settings.app_id)
    await create_topics(
        broker.bootstrap, {topic: PARTITIONS}, config={topic: {"cleanup.policy": "compact"}}
    )
    logs = await write_logs(broker.bootstrap, topic, seed=7)
    table = create_app(settings).customers
    tps = [TP(topic, p) for p in range(PARTITIONS)]
    cut = {tp: len(logs[tp.partition]) // 2 for tp in tps}  # a highwater short of the end

    # Nothing applied yet (-1): from the log's start up to the cut.
    first = plan_restore(tps, dict.fromkeys(tps, -1), cut, min_records=1)
    assert first == {tp: (0, cut[tp]) for tp in tps}
    offsets = await restore_to(settings, table, first)
    assert offsets == cut
    for tp in tps:
        prefix = logs[tp.partition][: cut[tp] + 1]
        assert stored(table, logs[tp.partition]) == compacted(prefix)

    # On from the last offset applied to the end: the whole log's compaction.
    ends = {tp: len(logs[tp.partition]) - 1 for tp in tps}
    rest = plan_restore(tps, offsets, ends, min_records=1)
    assert rest == {tp: (cut[tp] + 1, ends[tp]) for tp in tps}
    offsets = await restore_to(settings, table, rest)
    assert offsets == ends
    for tp in tps:
        log = logs[tp.partition]
        want = compacted(log)
        assert len(want) < KEYS  # some keys deleted, so the check means something
        assert stored(table, log) == want
        if store == "rocksdb://":
            # Where Faust's recovery (and the next restart) goes on reading from.
            assert table.persisted_offset(tp) == ends[tp]
    if store == "memory://":
        assert len(table.data) == sum(len(compacted(log)) for log in logs.values())
