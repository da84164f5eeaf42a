"""Why the worker must dead-letter a message: the decoder's verdict plus the
agent's own wall-clock rule. Shared by the fuzz tests of the agent and the worker."""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas.decode import EventDecoder, Rejected
from streams import topics
from streams.routing import NOT_ROUTED, decode_record

DECODER = EventDecoder()


def reason_for(topic: str, key: bytes | None, value: bytes | None, now: datetime) -> str | None:
    """The reject reason for this message, or None if it must be applied."""
    if topic == topics.CLOCK:
        tick = DECODER.decode_tick(value)
        return tick.reason if isinstance(tick, Rejected) else None
    if topic == topics.REPARTITION:  # only what the worker itself forwards belongs there
        return None if decode_record(value) else NOT_ROUTED.reason
    decoded = DECODER.decode(topics.INPUT_TOPICS[topic], key, value)
    if isinstance(decoded, Rejected):
        return decoded.reason
    return "future_time" if decoded.occurred_at > now + timedelta(days=1) else None
