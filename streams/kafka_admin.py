"""Small Kafka admin helpers on aiokafka, broker-agnostic (Apache Kafka or Tansu)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def _partitions(bootstrap: str, topics: Iterable[str]) -> list[TopicPartition]:
    """Partitions of existing topics, from fresh metadata (missing topics: none)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
        result: list[TopicPartition] = []
        for topic in topics:
            parts = cluster.partitions_for_topic(topic) or set()
            result.extend(TopicPartition(topic, p) for p in sorted(parts))
        return result
    finally:
        await client.close()


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    config: Mapping[str, Mapping[str, str]] | None = None,
    replication: int = 1,
    timeout: float = 30.0,
) -> None:
    """Create topics idempotently; an existing topic must have the partition count asked."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name, partitions, replication, topic_configs=dict((config or {}).get(name, {}))
            )
            for name, partitions in topics.items()
            if name not in existing
        ]
        if new:
            # Another process may have created them since we listed.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()
    deadline = time.monotonic() + timeout
    while True:
        found = await _partitions(bootstrap, topics)
        counts: dict[str, int] = {}
        for tp in found:
            counts[tp.topic] = counts.get(tp.topic, 0) + 1
        wrong = {t: counts.get(t, 0) for t, n in topics.items() if counts.get(t, 0) not in (0, n)}
        if wrong:
            raise ValueError(
                "topics exist with other partition counts than requested: "
                + ", ".join(f"{t} has {n}, wanted {topics[t]}" for t, n in wrong.items())
            )
        if all(counts.get(t) == n for t, n in topics.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout}s: {sorted(topics)}")
        await asyncio.sleep(0.2)


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition (the high watermark).

    Tansu answers a "latest offset" request with the base offset of the last record
    batch plus one, not with the end of that batch, so the requested figure alone
    can be short by up to a batch. A fetch response carries the true high watermark
    on Tansu and Kafka alike, so one small fetch near the end settles it.
    """
    partitions = await _partitions(bootstrap, topics)
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        result = dict(await consumer.end_offsets(partitions))
        pending = [tp for tp in partitions if result[tp] > 0]
        for tp in pending:
            consumer.seek(tp, result[tp] - 1)
        deadline = time.monotonic() + 10.0
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    result[tp] = max(result[tp], highwater)
                    pending.remove(tp)
        return result
    finally:
        await consumer.stop()


async def committed_offsets(
    bootstrap: str, group_id: str, topics: Iterable[str]
) -> dict[TopicPartition, int]:
    """The group's committed offsets; 0 where it has committed nothing yet."""
    partitions = await _partitions(bootstrap, topics)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        result = {}
        for tp in partitions:
            offset = await consumer.committed(tp)
            result[tp] = offset if offset is not None and offset >= 0 else 0
        return result
    finally:
        await consumer.stop()


async def consumer_lag(
    bootstrap: str, group_id: str, topics: Iterable[str]
) -> dict[TopicPartition, int]:
    topics = list(topics)
    ends = await end_offsets(bootstrap, topics)
    committed = await committed_offsets(bootstrap, group_id, topics)
    return {tp: max(0, end - committed.get(tp, 0)) for tp, end in ends.items()}


async def wait_for_zero_lag(
    bootstrap: str,
    group_id: str,
    topics: Iterable[str],
    *,
    timeout: float,
    poll: float = 0.25,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    topics = list(topics)
    deadline = time.monotonic() + timeout
    while True:
        lag = await consumer_lag(bootstrap, group_id, topics)
        total = sum(lag.values())
        if on_progress is not None:
            on_progress(total)
        if total == 0:
            return
        if time.monotonic() > deadline:
            behind = {f"{tp.topic}[{tp.partition}]": n for tp, n in lag.items() if n}
            raise TimeoutError(f"consumer group {group_id} still behind after {timeout}s: {behind}")
        await asyncio.sleep(poll)


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of every partition, up to the end offsets taken at call start."""
    ends = await end_offsets(bootstrap, [topic])
    remaining = {tp: end for tp, end in ends.items() if end > 0}
    records: list[Any] = []
    if not remaining:
        return records
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(list(remaining))
        await consumer.seek_to_beginning(*remaining)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
            for tp, items in batch.items():
                records.extend(item for item in items if item.offset < remaining[tp])
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
        return records
    finally:
        await consumer.stop()


async def read_latest_by_key(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    latest: dict[bytes, bytes | None] = {}
    for record in await read_all(bootstrap, topic):
        if record.key is not None:
            latest[record.key] = record.value
    return latest
