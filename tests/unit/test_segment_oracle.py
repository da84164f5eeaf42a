"""The processor's figures per segment equal the batch oracle's
(tests/oracle_segments.py) on generated histories with segments, costs to serve and
feedback, and sum to the whole business's; the comparison can fail.

The processor side is the agent's own batch logic in-process (tests/inprocess.py):
one partition, batches of 500 in file order, aligned as a worker aligns them.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from processor.partition import PartitionState, decode_partition
from retention.calendar import Calendar
from retention.period_book import Figures
from retention.segments import at_watermark
from retention.timeutil import DAY, to_micros
from streams.generator import GeneratorProfile, write_history
from streams.inputs import read_events
from streams.partitions import partition_state_key
from streams.report import build_report
from streams.settings import Settings
from tests import oracle, oracle_segments
from tests.inprocess import Run

END = datetime(2025, 7, 1, tzinfo=UTC)


def replay(path: Path, config: Settings) -> PartitionState:
    as_of = to_micros(END)
    records = [
        r for r in read_events(path, "jsonl") if r.occurred_at is None or r.occurred_at < as_of
    ]
    run = Run(records, as_of, config)
    run.feed(records, [500], random.Random(0))
    return decode_partition(run.table[partition_state_key(0)])


def want(path: Path, config: Settings, attr: str = "segment") -> dict[str, list[oracle.Period]]:
    loaded = oracle.load(oracle.read_lines(path), to_micros(END))
    return oracle_segments.segments(
        loaded.events, config.period, config.window, to_micros(END), config.segment_cap,
        attr=attr,
    )  # fmt: skip


def history(tmp_path: Path, seed: int, profile: GeneratorProfile, days: int = 240) -> Path:
    path = tmp_path / f"history-{seed}.jsonl"
    write_history(path, 400, days, seed, END, profile=profile)
    return path


CASES = [
    # seed, profile, cap, period, window (days)
    (1, GeneratorProfile(), 50, "month", "90d"),
    (2, GeneratorProfile(resignup_share=0.3), 50, "week", "30d"),
    (3, GeneratorProfile(sub_segments=4, resignup_share=0.2), 5, "month", "90d"),
    (4, GeneratorProfile(sub_segments=3), 0, "quarter", "none"),
]


@pytest.mark.parametrize(("seed", "profile", "cap", "period", "window"), CASES)
def test_segments_equal_the_oracle(
    tmp_path: Path, seed: int, profile: GeneratorProfile, cap: int, period: str, window: str
) -> None:
    config = Settings(segment_cap=cap, period=period, activity_window=window)  # type: ignore[arg-type]
    path = history(tmp_path, seed, profile)
    part = replay(path, config)
    expected = want(path, config)
    assert oracle_segments.compare(expected, [part]) == []
    assert part.late == 0  # else closed periods may rightly differ
    seg = part.segments
    assert seg is not None
    # It covered something: several segments, costs, feedback and the cap's buckets.
    assert len(seg.tracked) == min(cap, 3 * max(1, profile.sub_segments))
    assert (oracle_segments.OTHER in expected) == (cap < 3 * max(1, profile.sub_segments))
    assert "none" in expected  # legacy customers: no signup
    totals = Figures()
    for periods in expected.values():
        for p in periods:
            for name in Figures.__struct_fields__:
                setattr(totals, name, getattr(totals, name) + getattr(p.figures, name))
    assert totals.cost_to_serve and totals.nps_promoters and totals.csat_responses
    assert totals.active_start and totals.mrr_churned
    # Per-segment figures of a period sum to the partition's.
    for p in part.periods.closed:
        summed = Figures()
        for book in seg.books.values():
            for q in book.closed:
                if q.start == p.start:
                    for name in Figures.__struct_fields__:
                        setattr(summed, name, getattr(summed, name) + getattr(q.figures, name))
        assert summed == p.figures, p.label
    # And the risk sums by segment to the partition's.
    tiers: dict[str, int] = {}
    for sums in seg.risk.values():
        for tier, count in sums.tiers.items():
            tiers[tier] = tiers.get(tier, 0) + count
    assert {k: v for k, v in tiers.items() if v} == part.tiers
    assert sum(s.clv for s in seg.risk.values()) == part.clv
    # The replay report's segments: the same lines, derived rates included.
    report = build_report([part], to_micros(END), 0, {}, Calendar(config.period))
    assert set(report["segments"]) == set(expected)
    for bucket, periods in expected.items():
        assert report["segments"][bucket]["periods"] == [p.line() for p in periods], bucket
    # The second dimension, the plan of the earliest signup, by the same rules.
    plans = want(path, config, "plan")
    assert oracle_segments.compare(plans, [part], "plans") == []
    assert set(report["plans"]) == set(plans) and len(plans) >= 2
    for bucket, periods in plans.items():
        assert report["plans"][bucket]["periods"] == [p.line() for p in periods], bucket
    # At the watermark: active customers per segment, as the oracle counts them.
    loaded = oracle.load(oracle.read_lines(path), to_micros(END))
    grouped = oracle.by_customer(loaded.events)
    verdicts = oracle_segments.Buckets(grouped, cap, lambda cid: 0)
    members: dict[str, list[oracle.Event]] = {}
    for cid, items in grouped.items():
        first = oracle_segments.home(items)
        members.setdefault(verdicts.of(cid, first and first.segment), []).extend(items)
    now = at_watermark(seg, part.watermark)
    day = (to_micros(END) + config.lateness) // DAY
    assert part.watermark is not None and part.watermark // DAY == day
    for bucket, items in members.items():
        assert now[bucket]["active"] == oracle.rolling(items, config.window, day)["active"], bucket
    assert sum(v["active"] for v in now.values()) == part.periods.active_on(day)


def _edit(path: Path, change: str) -> Path:
    """A copy with one record changed, in the oracle's input only."""
    lines = path.read_bytes().splitlines()
    for index, line in enumerate(lines):
        try:
            body = json.loads(line)
        except ValueError:
            continue
        if not isinstance(body, dict) or not str(body.get("event_id", "")).startswith("c"):
            continue
        if change == "segment" and body["type"] == "signup":
            body["segment"] = "enterprise" if body["segment"] != "enterprise" else "smb"
        elif change == "cost" and body["type"] == "purchase":
            body["cost_to_serve"] += 1
        elif change == "earlier signup" and body["type"] == "signup":
            moved = {**body, "event_id": body["event_id"] + "-x", "segment": "moved"}
            moved["occurred_at"] = "2025-01-01T00:00:00Z"
            lines.insert(index, json.dumps(moved).encode())
            break
        else:
            continue
        lines[index] = json.dumps(body).encode()
        break
    out = path.with_name("mutated.jsonl")
    out.write_bytes(b"\n".join(lines) + b"\n")
    return out


@pytest.mark.parametrize("change", ["segment", "cost", "earlier signup"])
def test_the_comparison_detects_a_changed_input(tmp_path: Path, change: str) -> None:
    config = Settings()
    path = history(tmp_path, 5, GeneratorProfile(), days=120)
    part = replay(path, config)
    assert oracle_segments.compare(want(path, config), [part]) == []
    assert oracle_segments.compare(want(_edit(path, change), config), [part]) != []


def test_cost_to_serve_and_margin_are_in_the_report_lines() -> None:
    period = oracle.Period(
        "2025-01", 0, DAY, oracle.Figures(revenue=5_000_000, cost_to_serve=1_250_000)
    )
    line = period.line()
    assert line["cost_to_serve"] == 1.25 and line["margin"] == 3.75
