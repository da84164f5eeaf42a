"""Reading event files: churnwatch JSON Lines, and the CDNOW purchase log.

Reading only routes lines (which topic, which key, which event time); it never
validates them. A line that cannot be routed is still published, to the purchases
topic, so that the worker dead-letters it with a reason: a replay must show what
the worker does with bad input, not hide it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from retention.timeutil import Micros, parse_time
from streams import topics

Format = Literal["jsonl", "cdnow"]
UNROUTABLE_TOPIC = topics.PURCHASES


class _Route(msgspec.Struct):
    type: str | None = None
    customer_id: str | None = None
    occurred_at: str | None = None


_ROUTE = msgspec.json.Decoder(_Route)
_JSON = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Record:
    """One line ready to publish. ``occurred_at`` is None when it cannot be read."""

    topic: str
    key: bytes | None
    value: bytes
    occurred_at: Micros | None
    routable: bool


def route(line: bytes) -> Record:
    try:
        head = _ROUTE.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return Record(UNROUTABLE_TOPIC, None, line, None, routable=False)
    key = head.customer_id.encode() if head.customer_id else None
    occurred: Micros | None = None
    if head.occurred_at is not None:
        try:
            occurred = parse_time(head.occurred_at)
        except ValueError:
            occurred = None
    topic = topics.TOPIC_FOR_TYPE.get(head.type) if head.type else None  # type: ignore[call-overload]
    if topic is None:
        return Record(UNROUTABLE_TOPIC, key, line, occurred, routable=False)
    return Record(topic, key, line, occurred, routable=True)


def read_jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield route(line)


def cdnow_event(line_number: int, line: str) -> bytes | None:
    """A CDNOW_master.txt row as a purchase event (None for a blank line or the header).

    Rows are ``customer_id yyyymmdd number_of_cds dollar_value``. The event id is the
    line number: two identical rows are two real purchases, not a duplicate.
    """
    fields = line.split()
    if not fields or fields[0] == "customer_id":  # blank line or the header row
        return None
    if len(fields) != 4:
        raise ValueError(f"CDNOW line {line_number}: expected 4 fields, got {len(fields)}")
    customer, date, quantity, amount = fields
    if len(date) != 8 or not date.isdigit():
        raise ValueError(f"CDNOW line {line_number}: bad date {date!r}")
    return _JSON.encode(
        {
            "type": "purchase",
            "event_id": f"cdnow-{line_number}",
            "customer_id": customer,
            "occurred_at": f"{date[:4]}-{date[4:6]}-{date[6:]}T00:00:00Z",
            "amount": float(amount),
            "quantity": int(quantity),
            "currency": "USD",
        }
    )


def read_cdnow(path: Path) -> Iterator[Record]:
    with path.open("r", encoding="ascii") as handle:
        for number, text in enumerate(handle, start=1):
            value = cdnow_event(number, text)
            if value is not None:
                yield route(value)


def read_events(path: Path, fmt: Format) -> Iterator[Record]:
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return read_cdnow(path) if fmt == "cdnow" else read_jsonl(path)
