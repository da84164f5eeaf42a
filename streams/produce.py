"""Publishing event records to Kafka, keyed by customer id, optionally rate-limited."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from retention.timeutil import Micros
from streams.inputs import Record
from streams.security import ClientSecurity, client_kwargs

_WINDOW = 5000  # sends in flight before waiting for acknowledgements


@dataclass
class PublishStats:
    published: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    unroutable: int = 0
    skipped_as_of: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


def producer_for(bootstrap: str, security: ClientSecurity | None = None) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **client_kwargs(security),
        linger_ms=10,
        max_batch_size=1024 * 1024,
        max_request_size=4 * 1024 * 1024,
        acks="all",
    )


async def publish(
    bootstrap: str,
    records: Iterable[Record],
    *,
    rate: float | None = None,
    before: Micros | None = None,
    progress: Callable[[int], None] | None = None,
    security: ClientSecurity | None = None,
) -> PublishStats:
    """Send ``records``; with ``before``, skip events dated at or after it.

    ``rate`` caps events per second (None: as fast as the broker takes them).
    Returns once every record is acknowledged by the broker.
    """
    stats = PublishStats()
    producer = producer_for(bootstrap, security)
    await producer.start()
    started = time.perf_counter()
    pending: list[asyncio.Future[object]] = []
    try:
        for record in records:
            if (
                before is not None
                and record.occurred_at is not None
                and record.occurred_at >= before
            ):
                stats.skipped_as_of += 1
                continue
            pending.append(await producer.send(record.topic, record.value, key=record.key))
            stats.published += 1
            stats.by_topic[record.topic] += 1
            stats.unroutable += not record.routable
            if len(pending) >= _WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
                if progress is not None:
                    progress(stats.published)
            if rate:
                ahead = stats.published / rate - (time.perf_counter() - started)
                if ahead > 0.005:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
        if progress is not None:
            progress(stats.published)
    finally:
        await producer.stop()
    stats.seconds = time.perf_counter() - started
    return stats
