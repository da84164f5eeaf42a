"""The replay's first clock tick: the earliest time of an event the worker accepts."""

from __future__ import annotations

import asyncio
import json

import pytest

from retention.timeutil import parse_time
from schemas import EventDecoder, Rejected
from streams.inputs import Record, route
from streams.replay import _tick_accepted, _tick_value, first_tick, send_ticks

AS_OF = parse_time("2024-06-01T00:00:00Z")


def record(when: str, **fields: object) -> Record:
    body = {"type": "purchase", "event_id": when, "customer_id": "c1", "occurred_at": when}
    return route(json.dumps({**body, **fields}).encode())


def test_times_the_worker_rejects_do_not_set_the_first_tick() -> None:
    records = [
        record("2024-03-01T00:00:00Z", amount=1),
        record("0001-01-01T00:00:00Z", amount=1),  # outside the supported range
        record("1899-12-31T23:59:59Z", amount=1),
        record("1950-01-01T00:00:00Z"),  # in range, but no amount: dead-lettered
        record("2024-02-01T00:00:00", amount=1),  # no offset: dead-lettered
        record("2024-02-10T00:00:00Z", amount=1),
        record("2024-07-01T00:00:00Z", amount=1),  # after as_of: not published
    ]
    first = first_tick(records, AS_OF, 64 * 1024)
    assert first == parse_time("2024-02-10T00:00:00Z")
    assert not isinstance(EventDecoder().decode_tick(_tick_value(first)), Rejected)


def test_no_accepted_event_no_first_tick() -> None:
    records = [record("0001-01-01T00:00:00Z", amount=1), record("2024-07-01T00:00:00Z", amount=1)]
    assert first_tick(records, AS_OF, 64 * 1024) is None


def test_a_tick_the_worker_would_reject_is_never_sent() -> None:
    for when in ("0001-01-01T00:00:00+14:00", "1899-12-31T23:59:59Z", "2200-01-01T00:00:00Z"):
        moment = parse_time(when)
        assert not _tick_accepted(EventDecoder(), moment), when
        # Refused before connecting: nothing listens on this port.
        with pytest.raises(ValueError, match="no clock tick"):
            asyncio.run(send_ticks("127.0.0.1:9", 1, moment))
    assert _tick_accepted(EventDecoder(), parse_time("2024-01-01T00:00:00Z"))
