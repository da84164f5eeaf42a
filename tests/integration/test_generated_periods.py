"""Period figures, cohorts and customer facts of a generated history (signups, fees,
cancellations, feedback, duplicates, disorder within the lateness, malformed records)
equal the independent batch oracle, with two workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention.calendar import Calendar
from retention.timeutil import from_micros, parse_time
from streams.generator import write_history
from streams.replay import replay
from streams.report import build_report
from streams.settings import Settings
from tests.brokers import KIND
from tests.oracle import expected, facts_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AS_OF = "2025-07-01T00:00:00Z"


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
        embedded=KIND,
        base=Settings(),
        workdir=tmp_path,
    )
    calendar = Calendar("month")
    report = build_report(result.partitions, as_of, len(result.customers), result.events, calendar)
    truth = expected(history, as_of)
    assert result.events["late"] == 0
    for name in ("consumed", "valid", "deadletter", "duplicates"):
        assert result.events[name] == truth.counts[name], name
    assert len(report["periods"]) == len(truth.periods) >= 6
    for got, want in zip(report["periods"], (p.line() for p in truth.periods), strict=True):
        for name, value in want.items():
            assert got[name] == value, (want["period"], name, got[name], value)
    assert truth.compare_periods(result.partitions) == []
    assert report["cohorts"] == truth.cohorts
    facts = {cid: facts_of(state) for cid, state in result.customers.items()}
    assert facts.keys() == truth.customers.keys()
    wrong = [cid for cid in facts if facts[cid] != truth.customers[cid]]
    assert not wrong, [(facts[c], truth.customers[c]) for c in wrong[:2]]
    assert sum(p["mrr_churned"] for p in report["periods"]) > 0
    assert sum(p["nps_responses"] for p in report["periods"]) > 0
