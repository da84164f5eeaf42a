"""Every per-segment figure of a generated history with segments, costs to serve and
feedback (and customers signing up again in another segment, and more segment names
than the cap) equals the independent oracle's (tests/oracle_segments.py): on one
partition with one worker, and on four partitions with two workers, against a real
broker. Zero mismatches, also in the replay report's segment lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention.calendar import Calendar
from retention.timeutil import from_micros, parse_time
from streams.generator import GeneratorProfile, write_history
from streams.replay import replay
from streams.report import build_report
from streams.routing import home_partition
from streams.settings import Settings
from tests import oracle, oracle_segments
from tests.brokers import KIND

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AS_OF = "2025-07-01T00:00:00Z"
#: Six segment names (three segments, two sub-segments each) and a cap of four: the
#: cap's "other" bucket is in play, and per partition it holds other names.
PROFILE = GeneratorProfile(sub_segments=2, resignup_share=0.2)
CAP = 4


@pytest.mark.parametrize(("partitions", "workers"), [(1, 1), (4, 2)])
def test_segment_figures_equal_the_oracle(tmp_path: Path, partitions: int, workers: int) -> None:
    as_of = parse_time(AS_OF)
    history = tmp_path / "history.jsonl"
    stats = write_history(history, 500, 200, 9, from_micros(as_of), profile=PROFILE)
    assert stats.events["feedback"] and stats.duplicates and stats.disordered
    result = replay(
        history,
        as_of,
        order="file",  # keep the generator's disorder
        partitions=partitions,
        workers=workers,
        embedded=KIND,
        base=Settings(segment_cap=CAP),
        workdir=tmp_path,
    )
    assert result.events["late"] == 0  # else closed periods may rightly differ
    loaded = oracle.load(oracle.read_lines(history), as_of)
    want = oracle_segments.segments(
        loaded.events,
        "month",
        90 * oracle.DAY,
        as_of,
        CAP,
        lambda cid: home_partition(cid.encode(), partitions),
    )
    assert len(result.partitions) == partitions
    assert oracle_segments.compare(want, result.partitions) == []
    report = build_report(
        result.partitions, as_of, len(result.customers), result.events, Calendar("month")
    )
    assert set(report["segments"]) == set(want)
    for bucket, periods in want.items():
        assert report["segments"][bucket]["periods"] == [p.line() for p in periods], bucket
    # The second dimension, the plan of the earliest signup, by the same rules.
    plans = oracle_segments.segments(
        loaded.events, "month", 90 * oracle.DAY, as_of, CAP,
        lambda cid: home_partition(cid.encode(), partitions), attr="plan",
    )  # fmt: skip
    assert oracle_segments.compare(plans, result.partitions, "plans") == []
    assert set(report["plans"]) == set(plans) and len(plans) >= 3
    for bucket, periods in plans.items():
        assert report["plans"][bucket]["periods"] == [p.line() for p in periods], bucket
    # The comparison covered something: the cap's buckets, costs, feedback, churn.
    assert {"other", "none"} <= set(want) and len(want) >= CAP + 2
    for part in result.partitions:
        assert part.segments is not None and len(part.segments.tracked) == CAP
    lines = [line for bucket in want for line in report["segments"][bucket]["periods"]]
    assert len(report["periods"]) >= 6
    assert sum(line["cost_to_serve"] for line in lines) > 0
    assert sum(line["nps_responses"] for line in lines) > 0
    assert sum(line["churned"] for line in lines) > 0
    # Per-segment lines sum to the whole business's.
    for index, whole in enumerate(report["periods"]):
        for name in ("customers_start", "churned", "buyers", "csat_responses"):
            total = sum(report["segments"][b]["periods"][index][name] for b in want)
            assert total == whole[name], (whole["period"], name)
