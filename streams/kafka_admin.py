"""Small Kafka admin helpers on aiokafka, broker-agnostic (Apache Kafka or Tansu).

Provisioning, lag checks and topic dumps are needed by the CLI, the demo, replays
and the integration tests; each helper opens its own clients and always closes them.
Every public helper takes ``security`` (``streams.security``; None: plaintext) for
secured clusters.

Tansu 0.6 quirks handled here (each checked against the embedded broker):

- ListOffsets(latest) answers the last record batch's *base* offset + 1, not the end
  of that batch, so with batched producers it can be short by up to a batch. The
  high watermark carried by every Fetch response is right, on Tansu and Kafka alike.
- OffsetFetch with a null topic list ("all offsets of the group") makes Tansu drop
  the connection; asking for explicit partitions works. DescribeConfigs likewise
  drops the connection when config names are given; asking for all configs works.
- CreateTopics accepts any topic config without validation (even
  ``cleanup.policy=bogus``) and any replication factor; configs are stored and shown
  by DescribeConfigs, but the memory engine never compacts, so a compacted topic
  keeps every record. Readers here therefore never assume compaction happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    NotCoordinatorForGroupError,
    TopicAlreadyExistsError,
    for_code,
)

from streams.security import ClientSecurity, client_kwargs

#: Large fetches: dumps of changelogs and dead-letter topics are read in big batches.
_FETCH = {
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
}


class UnknownTopicError(LookupError):
    """A topic the caller relies on does not exist (lag of a missing topic is not 0)."""


class PartitionCountError(ValueError):
    """A topic exists with another partition count than required."""


@asynccontextmanager
async def _admin(
    bootstrap: str, security: ClientSecurity | None
) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs(security))
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def _consumer(
    bootstrap: str, security: ClientSecurity | None, **config: Any
) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less consumer: manual assignment, commits nothing, joins no group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **client_kwargs(security), **config
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _topic_layout(admin: AIOKafkaAdminClient) -> dict[str, dict[int, int]]:
    """topic -> {partition: leader id} from fresh metadata for *all* topics.

    Asking for all topics rather than named ones avoids triggering broker-side
    auto-creation (``auto.create.topics.enable``) when checking existence.
    """
    layout: dict[str, dict[int, int]] = {}
    for topic in await admin.describe_topics(None):
        if topic["error_code"] == 0:
            layout[topic["topic"]] = {p["partition"]: p["leader"] for p in topic["partitions"]}
    return layout


async def _partitions(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> list[TopicPartition]:
    wanted = list(dict.fromkeys(topics))
    layout = await _topic_layout(admin)
    missing = [t for t in wanted if t not in layout]
    if missing:
        raise UnknownTopicError(f"topics do not exist: {', '.join(missing)}")
    return [TopicPartition(t, p) for t in wanted for p in sorted(layout[t])]


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    config: Mapping[str, Mapping[str, str]] | None = None,
    replication: int = 1,
    timeout: float = 30.0,
    security: ClientSecurity | None = None,
) -> None:
    """Create topics with these partition counts, then wait until every partition has a
    leader, so that producers and Faust workers started next see the final layout.

    Idempotent: existing topics are fine, but one with a different partition count
    raises ``PartitionCountError``, because co-partitioned topics (DESIGN section 2)
    must agree. Configs are applied to topics this call creates only. Per-topic errors
    in the CreateTopics response (aiokafka returns them, it does not raise) are raised
    here, except "already exists" from a concurrent creator.
    """
    deadline = time.monotonic() + timeout
    configs = config or {}
    async with _admin(bootstrap, security) as admin:
        layout = await _topic_layout(admin)
        _check_counts(topics, layout)
        new = [
            NewTopic(name, count, replication, topic_configs=dict(configs.get(name, {})))
            for name, count in topics.items()
            if name not in layout
        ]
        if new:
            response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
            errors = [
                f"{name}: {for_code(code).__name__} {message or ''}".rstrip()
                for name, code, message in response.topic_errors
                if code and for_code(code) is not TopicAlreadyExistsError
            ]
            if errors:
                raise RuntimeError("could not create topics: " + "; ".join(errors))
        while True:
            layout = await _topic_layout(admin)
            _check_counts(topics, layout)
            ready = all(
                len(layout.get(name, {})) == count
                and all(leader >= 0 for leader in layout[name].values())
                for name, count in topics.items()
            )
            if ready:
                return
            if time.monotonic() > deadline:
                waiting = sorted(name for name in topics if name not in layout)
                raise TimeoutError(f"topics without all partitions after {timeout:g}s: {waiting}")
            await asyncio.sleep(0.1)


def _check_counts(wanted: Mapping[str, int], layout: Mapping[str, Mapping[int, int]]) -> None:
    wrong = {t: len(layout[t]) for t, n in wanted.items() if t in layout and len(layout[t]) != n}
    if wrong:
        raise PartitionCountError(
            "topics exist with other partition counts than required: "
            + ", ".join(f"{t} has {n}, wanted {wanted[t]}" for t, n in sorted(wrong.items()))
        )


async def _high_watermarks(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """True end offsets: ListOffsets, then one fetch near the end for the high watermark.

    On Kafka the second step only confirms the first; on Tansu it corrects it (see the
    module docstring). A fresh ``assign`` clears highwater values of earlier calls.
    """
    if not partitions:
        return {}
    consumer.assign(partitions)
    result = dict(await consumer.end_offsets(partitions))
    pending = [tp for tp in partitions if result[tp] > 0]
    for tp in pending:
        consumer.seek(tp, result[tp] - 1)
    deadline = time.monotonic() + timeout
    while pending:
        await consumer.getmany(*pending, timeout_ms=100, max_records=1)
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                result[tp] = max(result[tp], highwater)
                pending.remove(tp)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"no fetch response within {timeout:g}s for {pending}")
    # The assignment stays: aiokafka 0.14's consumer.stop() hangs after unsubscribe().
    return result


async def end_offsets(
    bootstrap: str, topics: Iterable[str], *, security: ClientSecurity | None = None
) -> dict[TopicPartition, int]:
    """The offset after the last record of every partition (the high watermark).

    Exists because ``AIOKafkaConsumer.end_offsets`` alone is wrong on Tansu; raises
    ``UnknownTopicError`` for missing topics rather than reporting them as empty.
    """
    async with _admin(bootstrap, security) as admin, _consumer(bootstrap, security) as consumer:
        return await _high_watermarks(consumer, await _partitions(admin, topics))


async def high_watermarks(
    bootstrap: str,
    partitions: Iterable[TopicPartition],
    *,
    security: ClientSecurity | None = None,
) -> dict[TopicPartition, int]:
    """``end_offsets`` for given partitions (which must exist)."""
    wanted = list(partitions)
    if not wanted:
        # No consumer at all: aiokafka 0.14's stop() right after start() raises
        # CancelledError (it awaits a task it cancelled before it ever ran). Faust's
        # recovery asks for none on a worker given no active partition; the
        # CancelledError ended its recovery task for good, and that worker never
        # processed anything again (tests/integration/test_chaos.py, scaling).
        return {}
    async with _consumer(bootstrap, security) as consumer:
        return await _high_watermarks(consumer, wanted)


#: Answers of a group coordinator that is still being elected or loading its state:
#: Apache Kafka creates ``__consumer_offsets`` at the first FindCoordinator and gives
#: these until its partitions are led and loaded, on a fresh broker for seconds.
_COORDINATOR_NOT_READY = (
    GroupCoordinatorNotAvailableError,
    CoordinatorLoadInProgressError,
    NotCoordinatorForGroupError,
)


async def _group_offsets(
    admin: AIOKafkaAdminClient,
    group_id: str,
    partitions: list[TopicPartition],
    timeout: float = 30.0,
) -> dict[TopicPartition, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dict(await admin.list_consumer_group_offsets(group_id, partitions=partitions))
        except _COORDINATOR_NOT_READY:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _committed(
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    group_id: str,
    partitions: list[TopicPartition],
) -> dict[TopicPartition, int]:
    if not partitions:
        return {}
    # Explicit partitions: Tansu drops the connection on the "all partitions" form.
    found = await _group_offsets(admin, group_id, partitions)
    result = {tp: found[tp].offset for tp in partitions if tp in found and found[tp].offset >= 0}
    missing = [tp for tp in partitions if tp not in result]
    if missing:
        result.update(await consumer.beginning_offsets(missing))
    return result


async def committed_offsets(
    bootstrap: str,
    group_id: str,
    topics: Iterable[str],
    *,
    security: ClientSecurity | None = None,
) -> dict[TopicPartition, int]:
    """The group's committed offset (next offset to consume) for every partition.

    Where the group has committed nothing, the partition's log start offset is
    returned: 0 for a log never truncated, i.e. "nothing consumed yet", which is where
    a consumer with ``auto_offset_reset=earliest`` (as churnwatch's workers) starts.
    That keeps ``end - committed`` the true lag instead of a negative or -1 sentinel.
    """
    topics = list(topics)
    async with _admin(bootstrap, security) as admin, _consumer(bootstrap, security) as consumer:
        return await _committed(admin, consumer, group_id, await _partitions(admin, topics))


async def _lag(
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    group_id: str,
    topics: list[str],
) -> dict[TopicPartition, int]:
    partitions = await _partitions(admin, topics)
    committed = await _committed(admin, consumer, group_id, partitions)
    ends = await _high_watermarks(consumer, partitions)
    return {tp: max(0, end - committed[tp]) for tp, end in ends.items()}


async def consumer_lag(
    bootstrap: str,
    group_id: str,
    topics: Iterable[str],
    *,
    security: ClientSecurity | None = None,
) -> dict[TopicPartition, int]:
    """Records the group has yet to commit, per partition (never negative).

    Committed offsets are read before end offsets, so a record produced in between
    can only make the lag larger, never hide unprocessed input.
    """
    async with _admin(bootstrap, security) as admin, _consumer(bootstrap, security) as consumer:
        return await _lag(admin, consumer, group_id, list(topics))


async def wait_for_zero_lag(
    bootstrap: str,
    group_id: str,
    topics: Iterable[str],
    *,
    timeout: float,
    poll: float = 0.25,
    on_progress: Callable[[int], None] | None = None,
    security: ClientSecurity | None = None,
) -> None:
    """Block until the group has committed everything in ``topics``: how replays and
    tests know the workers are done. ``on_progress`` gets the total lag at each poll.

    Raises ``TimeoutError`` naming the partitions still behind and by how much.
    """
    topics = list(topics)
    deadline = time.monotonic() + timeout
    async with _admin(bootstrap, security) as admin, _consumer(bootstrap, security) as consumer:
        while True:
            lag = await _lag(admin, consumer, group_id, topics)
            total = sum(lag.values())
            if on_progress is not None:
                on_progress(total)
            if total == 0:
                return
            if time.monotonic() > deadline:
                behind = ", ".join(
                    f"{tp.topic}[{tp.partition}]={n}" for tp, n in sorted(lag.items()) if n
                )
                raise TimeoutError(
                    f"consumer group {group_id!r} still behind after {timeout:g}s "
                    f"(total {total}): {behind}"
                )
            await asyncio.sleep(poll)


async def _scan(
    bootstrap: str, topic: str, stall_timeout: float, security: ClientSecurity | None
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Batches of every partition of ``topic`` from its start up to the end offsets taken
    at call start, in offset order per partition; no group, so nothing is committed.

    Raises ``TimeoutError`` if no record arrives for ``stall_timeout`` seconds while
    some are still due (a size limit, not a duration, bounds big topics).
    """
    async with (
        _admin(bootstrap, security) as admin,
        _consumer(bootstrap, security, **_FETCH) as consumer,
    ):
        partitions = await _partitions(admin, [topic])
        ends = await _high_watermarks(consumer, partitions)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        if not remaining:
            return
        consumer.assign(list(remaining))
        await consumer.seek_to_beginning(*remaining)
        last_progress = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=50_000)
            for tp, records in batch.items():
                end = remaining.get(tp)
                if end is None:
                    continue
                due = [r for r in records if r.offset < end]
                if due:
                    last_progress = time.monotonic()
                    yield due
            done = [tp for tp in remaining if await consumer.position(tp) >= remaining[tp]]
            for tp in done:
                del remaining[tp]
            if done:
                consumer.pause(*done)
            if remaining and time.monotonic() - last_progress > stall_timeout:
                behind = {f"{tp.topic}[{tp.partition}]": end for tp, end in remaining.items()}
                raise TimeoutError(f"reading {topic} stalled; unread up to offsets {behind}")


async def read_all(
    bootstrap: str,
    topic: str,
    *,
    stall_timeout: float = 30.0,
    security: ClientSecurity | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its end at call start, sorted by (partition,
    offset): lets tests assert on output topics such as the dead-letter topic."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    async for batch in _scan(bootstrap, topic, stall_timeout, security):
        records.extend(batch)
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


async def read_latest_by_key(
    bootstrap: str,
    topic: str,
    *,
    stall_timeout: float = 30.0,
    security: ClientSecurity | None = None,
) -> dict[bytes, bytes | None]:
    """The last value per key (None for a tombstone) of a topic read up to its end at
    call start: what a compacted changelog holds, without relying on compaction having
    run (Tansu never compacts). Keyless records are skipped.
    """
    latest: dict[bytes, bytes | None] = {}
    async for batch in _scan(bootstrap, topic, stall_timeout, security):
        for record in batch:
            if record.key is not None:
                latest[record.key] = record.value
    return latest
