"""Turning raw Kafka bytes into a validated event, or a reason why not.

The worker consumes raw bytes and validates here instead of letting Faust decode:
Faust skips undecodable messages silently, and a rejected event must instead reach
the dead-letter topic with a reason. Every failure mode (oversize, bad UTF-8,
malformed or too deeply nested JSON, schema violations, a time outside the
supported range, a key that is not the customer id) maps to one of a small fixed
set of reason codes, so that metrics labelled by reason stay bounded. The detail
that goes with a reason quotes parts of the input, so it is escaped to printable
characters: dead letters are read in terminals.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, TypeVar

import msgspec

from schemas.deadletter import RejectReason
from schemas.events import EVENT_STRUCTS, ClockTick, Event, EventType

DEFAULT_MAX_EVENT_BYTES: Final = 64 * 1024
_DETAIL_MAX: Final = 300
#: Times outside these ranges are rejected as ``invalid_field``. RFC 3339 allows years
#: 0001-9999, but the period calendar cannot step before year 1 or past 9999: an event
#: dated 0001-01-01 (less the allowed lateness) or a tick in 9999 crashed the agent.
#: Events get a loose upper bound because the worker rejects anything more than a day
#: ahead of its clock anyway (``future_time``, processor/intake.py); ticks a tight one,
#: because a tick opens every period up to its time (a tick in 2999 cost 20 s of work
#: with daily periods).
MIN_TIME: Final = datetime(1900, 1, 1, tzinfo=UTC)
MAX_EVENT_TIME: Final = datetime(3000, 1, 1, tzinfo=UTC)
MAX_TICK_TIME: Final = datetime(2200, 1, 1, tzinfo=UTC)
T = TypeVar("T")


class Rejected(msgspec.Struct, frozen=True):
    reason: RejectReason
    detail: str


Decoded = Event | Rejected


def _classify(error: msgspec.ValidationError) -> RejectReason:
    message = str(error)
    if message.startswith("Object missing required field"):
        return "missing_field"
    if message.endswith("at `$.type`"):
        return "wrong_type"
    if message.startswith("Expected `object`"):
        return "not_an_object"
    return "invalid_field"


class EventDecoder:
    """Validates input for one worker; reusable and cheap to call per event."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._decoders: dict[EventType, msgspec.json.Decoder[Event]] = {
            kind: msgspec.json.Decoder(struct) for kind, struct in EVENT_STRUCTS.items()
        }
        self._tick = msgspec.json.Decoder(ClockTick)

    def _precheck(self, value: bytes | None) -> Rejected | None:
        if value is None:
            return Rejected("not_an_object", "empty message (tombstone)")
        if len(value) > self.max_event_bytes:
            return Rejected(
                "too_large", f"{len(value)} bytes exceeds the limit of {self.max_event_bytes}"
            )
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejected("not_utf8", f"invalid UTF-8 at byte {exc.start}")
        return None

    def decode(self, event_type: EventType, key: bytes | None, value: bytes | None) -> Decoded:
        """Validate ``value`` as an event of ``event_type`` keyed by ``key``."""
        event = self._decode(self._decoders[event_type], value)
        if isinstance(event, Rejected):
            return event
        if not MIN_TIME <= event.occurred_at < MAX_EVENT_TIME:
            return _out_of_range("occurred_at", MAX_EVENT_TIME)
        if key is None:
            return Rejected("key_mismatch", "message has no key; expected the customer_id")
        if key != event.customer_id.encode():
            return Rejected("key_mismatch", "message key differs from customer_id")
        return event

    def decode_tick(self, value: bytes | None) -> ClockTick | Rejected:
        tick = self._decode(self._tick, value)
        if isinstance(tick, ClockTick) and not MIN_TIME <= tick.time < MAX_TICK_TIME:
            return _out_of_range("time", MAX_TICK_TIME)
        return tick

    def _decode(self, decoder: msgspec.json.Decoder[T], value: bytes | None) -> T | Rejected:
        rejected = self._precheck(value)
        if rejected is not None:
            return rejected
        assert value is not None
        try:
            return decoder.decode(value)
        except msgspec.ValidationError as exc:
            return Rejected(_classify(exc), _short(exc))
        except msgspec.DecodeError as exc:
            return Rejected("malformed_json", _short(exc))
        except RecursionError:
            return Rejected("too_deep", "JSON nested too deeply")


def _out_of_range(field: str, latest: datetime) -> Rejected:
    span = f"{MIN_TIME:%Y-%m-%d} to {latest:%Y-%m-%d}"
    return Rejected("invalid_field", f"{field} outside the supported range {span}")


def _short(exc: Exception) -> str:
    text = str(exc)
    if not text.isprintable():
        # msgspec and the structs quote values with repr(), but be sure: no control,
        # bidi or separator character from the input reaches a reader's terminal.
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"
