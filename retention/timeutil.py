"""Event time as integer microseconds since the epoch (UTC).

Integers keep state compact, comparisons exact, and arithmetic independent of the
order in which events are combined (floating-point timestamps are neither).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

Micros = int

SECOND: Final = 1_000_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)?\s*$")
_UNITS: Final = {
    "us": 1,
    "ms": 1000,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
    "d": DAY,
    "w": 7 * DAY,
}


def to_micros(moment: datetime) -> Micros:
    """Exact conversion of an aware datetime; raises on a naive one."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {moment.isoformat()}")
    return (moment - EPOCH) // _ONE_US


def from_micros(micros: Micros) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def iso(micros: Micros | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``, or None."""
    if micros is None:
        return None
    text = from_micros(micros).isoformat()
    return text.replace("+00:00", "Z")


def parse_time(text: str) -> Micros:
    """Parse RFC 3339 with an offset (``Z`` accepted); a clear error otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"timestamp needs a UTC offset (e.g. 'Z' or '+00:00'): {text!r}")
    return to_micros(moment)


def parse_duration(text: str) -> Micros | None:
    """``90d``, ``12h``, ``30s``, ``250ms``; ``none`` means unbounded (None)."""
    if text.strip().lower() in {"none", "inf", "infinite", "off"}:
        return None
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (examples: 90d, 12h, 30s, 250ms, none)")
    number, unit = match.groups()
    return round(float(number) * _UNITS[unit or "s"])


def day_of(micros: Micros) -> int:
    """UTC calendar day number (days since 1970-01-01)."""
    return micros // DAY
