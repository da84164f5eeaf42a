"""The same input delivered twice, or shuffled within the allowed lateness, gives the
same customers, the same period figures and not one extra alert."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from retention.timeutil import DAY, from_micros, parse_time
from streams.generator import write_history
from streams.replay import ReplayResult, replay
from streams.settings import Settings
from tests.brokers import KIND

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AS_OF = "2025-07-01T00:00:00Z"


def comparable(alerts: list[dict[str, Any]]) -> list[str]:
    """Alerts apart from when they were observed and which message carried them."""
    kept = [{k: v for k, v in a.items() if k not in {"observed_at", "source"}} for a in alerts]
    return sorted(json.dumps(a, sort_keys=True) for a in kept)


def period_views(result: ReplayResult) -> list[tuple[Any, ...]]:
    """What each partition reports: its periods, cohorts, subscription statuses and
    the rolling views as of its watermark. (Not the raw rolling buckets: how soon a
    day older than the 90-day window is dropped depends on when feedback was read.)"""
    views = []
    for state in result.partitions:
        book = state.periods
        assert state.watermark is not None
        day = state.watermark // DAY
        views.append(
            (book.open, book.closed, book.cohorts, book.statuses, book.mrr,
             book.rolling_feedback(day), book.active_on(day))
        )  # fmt: skip
    return views


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("redelivery") / "history.jsonl"
    write_history(path, 700, 200, 29, from_micros(parse_time(AS_OF)))
    return path


@pytest.fixture(scope="module")
def baseline(history: Path, tmp_path_factory: pytest.TempPathFactory) -> ReplayResult:
    workdir = tmp_path_factory.mktemp("baseline")
    return replay(
        history, parse_time(AS_OF), order="time", embedded=KIND, base=Settings(), workdir=workdir
    )


def test_input_delivered_twice_changes_nothing(
    history: Path, baseline: ReplayResult, tmp_path: Path
) -> None:
    lines = history.read_bytes().splitlines(keepends=True)
    twice = tmp_path / "twice.jsonl"
    twice.write_bytes(b"".join(lines + lines))  # the whole input, then all of it again
    result = replay(
        twice, parse_time(AS_OF), order="file", embedded=KIND, base=Settings(), workdir=tmp_path
    )
    assert result.customers == baseline.customers
    assert comparable(result.alerts) == comparable(baseline.alerts)
    assert len(result.alerts) == len(baseline.alerts)  # not even a re-sent copy
    once, again = baseline.events, result.events
    assert again["consumed"] == 2 * once["consumed"]
    assert again["valid"] == once["valid"]
    assert again["duplicates"] == once["duplicates"] + once["consumed"] - once["deadletter"]
    assert again["deadletter"] == 2 * once["deadletter"]
    assert period_views(result) == period_views(baseline)


def test_input_shuffled_within_the_lateness_changes_nothing(
    history: Path, baseline: ReplayResult, tmp_path: Path
) -> None:
    """Each record moves by up to half the allowed lateness against the others, on its
    own topic and across topics: what alignment and lateness exist for."""
    settings = Settings()
    rng = random.Random(5)
    keyed = []
    for line in history.read_bytes().splitlines(keepends=True):
        try:
            at = parse_time(json.loads(line)["occurred_at"])
        except (ValueError, KeyError, TypeError):
            at = 0  # malformed: rejected wherever it comes
        keyed.append((at + rng.uniform(0, settings.lateness / 2), line))
    keyed.sort(key=lambda item: item[0])
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_bytes(b"".join(line for _, line in keyed))
    result = replay(
        shuffled, parse_time(AS_OF), order="file", embedded=KIND, base=settings, workdir=tmp_path
    )
    assert result.events["late"] == 0
    assert result.customers == baseline.customers
    assert comparable(result.alerts) == comparable(baseline.alerts)
    assert len(baseline.alerts) > 100
    assert result.events == baseline.events
    assert period_views(result) == period_views(baseline)
