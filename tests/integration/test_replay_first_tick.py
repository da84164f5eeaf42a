"""A replay whose file holds event times outside the supported range: its own clock
ticks are never dead-lettered, so its dead letters are exactly the bad records it
was given, and its summary adds up (consumed = valid + dead-lettered + duplicates)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from retention.calendar import Calendar
from retention.timeutil import parse_time
from streams import topics
from streams.kafka_admin import read_all
from streams.replay import replay
from streams.settings import Settings
from tests.brokers import new_broker

pytestmark = pytest.mark.integration
AS_OF = "2024-06-01T00:00:00Z"
FIRST_VALID = "2024-01-01T00:00:00Z"


def line(type_: str, event_id: str, customer: str, when: str, **fields: object) -> bytes:
    body = {"type": type_, "event_id": event_id, "customer_id": customer, "occurred_at": when}
    return json.dumps({**body, **fields}).encode()


def good_lines() -> list[bytes]:
    lines = [line("signup", f"s{n}", f"c{n}", FIRST_VALID, segment="smb") for n in range(6)]
    for n in range(30):
        when = f"2024-{2 + n % 3:02d}-{1 + n % 28:02d}T12:00:00Z"
        lines.append(line("purchase", f"p{n}", f"c{n % 6}", when, amount=10.0))
    lines.append(lines[-1])  # an exact duplicate
    return lines


#: Published (dated before AS_OF) and dead-lettered: the earliest of them is what the
#: old replay sent its first tick at. The 1950 one has an event time in range but no
#: amount: an event the worker rejects must not decide the first tick either.
BAD_LINES = [
    line("purchase", "b1", "c1", "0001-01-01T00:00:00Z", amount=1.0),
    line("signup", "b2", "c2", "0001-01-01T00:00:00+14:00"),
    line("feedback", "b3", "c3", "1899-12-31T23:59:59Z", kind="nps", score=9),
    line("purchase", "b4", "c4", "1950-06-01T00:00:00Z"),
]
#: At or after AS_OF: skipped by the replay, never given to the worker.
LATE_LINES = [line("purchase", "b5", "c5", "9999-12-31T00:00:00Z", amount=1.0)]


def test_out_of_range_times_dead_letter_exactly_the_bad_records(tmp_path: Path) -> None:
    good = good_lines()
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([*BAD_LINES, *good, *LATE_LINES]) + b"\n")
    with new_broker(tmp_path) as broker:
        result = replay(
            path,
            parse_time(AS_OF),
            partitions=3,
            workers=1,
            broker_url=broker,
            base=Settings(),
            workdir=tmp_path,
        )
        dead = [
            json.loads(r.value) for r in asyncio.run(read_all(broker.bootstrap, topics.DEADLETTER))
        ]
    assert [d["topic"] for d in dead if d["topic"] == topics.CLOCK] == []
    assert sorted(base64.b64decode(d["value_b64"]) for d in dead) == sorted(BAD_LINES)
    assert result.published.skipped_as_of == len(LATE_LINES)
    events = result.events
    assert events["deadletter"] == len(BAD_LINES)
    assert events["consumed"] == len(good) + len(BAD_LINES)
    assert events["duplicates"] == 1
    assert events["consumed"] == events["valid"] + events["deadletter"] + events["duplicates"]
    # The first tick came from the earliest accepted event: the first period is the
    # one an on-time event then could still fall into (up to the lateness before).
    first = Calendar(result.settings.period).start_of(
        parse_time(FIRST_VALID) - result.settings.lateness
    )
    starts = [p.start for part in result.partitions for p in part.periods.closed]
    assert min(starts) == first
