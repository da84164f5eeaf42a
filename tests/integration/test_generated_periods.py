"""Period figures and cohorts of a generated history (signups, fees, cancellations,
feedback, duplicates, disorder within the lateness, malformed records) equal a
batch recomputation, with two workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention.calendar import Calendar
from retention.timeutil import DAY, from_micros, parse_time, to_micros
from schemas import Event, EventDecoder, Rejected
from streams import topics
from streams.generator import write_history
from streams.inputs import read_events
from streams.replay import replay
from streams.report import build_report, period_line
from streams.settings import Settings
from tests.oracle import batch, cohorts

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AS_OF = "2025-07-01T00:00:00Z"


def valid_events(path: Path, before: int) -> list[Event]:
    decoder = EventDecoder()
    seen: dict[str, Event] = {}
    for record in read_events(path, "jsonl"):
        event = decoder.decode(topics.INPUT_TOPICS[record.topic], record.key, record.value)
        if not isinstance(event, Rejected) and to_micros(event.occurred_at) < before:
            seen.setdefault(event.event_id, event)
    return list(seen.values())


def test_generated_history_periods_equal_batch(tmp_path: Path) -> None:
    as_of = parse_time(AS_OF)
    history = tmp_path / "history.jsonl"
    stats = write_history(history, 600, 200, 5, from_micros(as_of))
    assert stats.duplicates and stats.disordered and stats.malformed
    assert stats.events["cancellation"] and stats.events["feedback"]
    result = replay(
        history,
        as_of,
        order="file",  # keep the generator's disorder
        partitions=4,
        workers=2,
        base=Settings(),
        workdir=tmp_path,
    )
    calendar = Calendar("month")
    report = build_report(result.partitions, as_of, len(result.customers), result.events, calendar)
    events = valid_events(history, as_of)
    expected = [
        period_line(t.label, 0, 0, t.figures) for t in batch(events, calendar, 90 * DAY, as_of)
    ]
    assert result.events["late"] == 0
    assert len(report["periods"]) == len(expected) >= 6
    for got, want in zip(report["periods"], expected, strict=True):
        for name, value in want.items():
            if name not in {"start", "end"}:
                assert got[name] == value, (want["period"], name, got[name], value)
    assert report["cohorts"] == cohorts(events, calendar)
    assert sum(p["mrr_churned"] for p in report["periods"]) > 0
    assert sum(p["nps_responses"] for p in report["periods"]) > 0
