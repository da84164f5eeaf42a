"""Segments on Prometheus and on /segments: gauges per segment bounded by the cap
however many names a producer sends, and churn rates against acceptable churn."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from processor.partition import PartitionState, decode_partition
from retention.apply import id_hash
from retention.risk_config import RiskConfigError, load_risk_config
from retention.timeutil import to_micros
from streams import topics
from streams.inputs import Record
from streams.metrics import PipelineMetrics
from streams.partitions import partition_state_key
from streams.segment_view import period_target, segments_view, verdict
from streams.settings import Settings
from tests.inprocess import Run

START = datetime(2025, 1, 1, tzinfo=UTC)
TOPIC = {kind: topic for topic, kind in topics.INPUT_TOPICS.items()}


def record(kind: str, n: int, customer: str, at: datetime, **fields: object) -> Record:
    body = {"type": kind, "event_id": f"e{n}", "customer_id": customer,
            "occurred_at": at.isoformat(), **fields}  # fmt: skip
    value = json.dumps(body).encode()
    return Record(TOPIC[kind], customer.encode(), value, to_micros(at), True)


def replay(records: list[Record], config: Settings, as_of: datetime) -> PartitionState:
    run = Run(records, to_micros(as_of), config)
    run.feed(records, [1000], random.Random(0))
    return decode_partition(run.table[partition_state_key(0)])


def segment_series(part: PartitionState, targets: dict[str, float]) -> dict[str, set[str]]:
    """Metric name -> the segment label values it carries."""
    metrics = PipelineMetrics(lambda: [part], targets=lambda: targets)
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            if "segment" in sample.labels:
                found.setdefault(sample.name, set()).add(sample.labels["segment"])
    return found


def test_ten_thousand_segment_names_leave_at_most_cap_plus_two_series() -> None:
    """A producer sending a new segment per signup: the first 50 names, ``other``
    and ``none`` (customers who only buy) are all the label values there are."""
    records = []
    for n in range(10_000):
        at = START + timedelta(minutes=n)
        records.append(record("signup", n, f"c{n}", at, segment=f"name-{n}", plan="pro"))
        records.append(record("purchase", 20_000 + n, f"c{n}", at, amount=5.0, cost_to_serve=1.0))
    records.append(record("purchase", 99_999, "buyer", START, amount=1.0))
    records.sort(key=lambda r: r.occurred_at or 0)
    part = replay(records, Settings(segment_cap=50), START + timedelta(days=40))
    series = segment_series(part, {"name-3": 0.1})
    values = set().union(*(v for k, v in series.items() if k != "churnwatch_segment_churn_target"))
    assert len(values) == 52
    assert values == {f"name-{n}" for n in range(50)} | {"other", "none"}
    assert series["churnwatch_segment_churn_target"] == {"name-3"}
    for name, labels in series.items():
        assert len(labels) <= 52, name
    seg = part.segments
    assert seg is not None and len(seg.books) == 52
    # The "other" bucket holds the 9,950 customers past the cap.
    first = next(p for p in seg.books["other"].closed if p.label == "2025-01").figures
    assert first.new == first.buyers == 9_950 and first.revenue == 9_950 * 5_000_000
    # A purchase's cost to serve counts in the segment its customer had when it was
    # applied: at the same instant as the signup, after it only if its id hash is
    # greater (the partition's order); before it, under "none".
    after = sum(id_hash(f"e{20_000 + n}") > id_hash(f"e{n}") for n in range(50, 10_000))
    assert 0 < after < 9_950 and first.cost_to_serve == after * 1_000_000


def test_acceptable_churn_over_and_under() -> None:
    assert verdict(0.03, 0.02) == "over" and verdict(0.02, 0.02) == "under"
    assert verdict(None, 0.02) is None and verdict(0.5, None) is None
    assert period_target(0.05, "month") == 0.05
    assert period_target(0.05, "quarter") == pytest.approx(1 - 0.95**3, rel=1e-3)
    assert period_target(0.05, "week") < 0.05


def churny_history() -> list[Record]:
    """Ten enterprise and ten smb customers active in January; in February three
    enterprise and one smb customer cancel."""
    records = []
    n = 0
    for index in range(20):
        segment = "enterprise" if index < 10 else "smb"
        cid = f"{segment}-{index}"
        records.append(
            record("signup", n, cid, START, segment=segment, plan="pro", monthly_fee=9.0)
        )
        n += 1
        cancels = index < 3 or index == 10
        at = START + timedelta(days=40)
        if cancels:
            records.append(record("cancellation", n, cid, at, monthly_fee=9.0))
        else:
            records.append(record("purchase", n, cid, at, amount=50.0, cost_to_serve=20.0))
        n += 1
    return sorted(records, key=lambda r: r.occurred_at or 0)


def test_segments_view_against_targets() -> None:
    part = replay(churny_history(), Settings(), START + timedelta(days=62))  # into March
    view = segments_view([part], {"enterprise": 0.2, "smb": 0.2}, "month")
    assert view["partitions"] == [0] and view["partitions_without_segments"] == []
    enterprise, smb = view["segments"]["enterprise"], view["segments"]["smb"]
    # February: 10 customers at the start each, 3 and 1 churned.
    assert enterprise["last"]["period"] == "2025-02" and enterprise["last"]["churned"] == 3
    assert enterprise["last"]["churn_rate"] == 0.3 and enterprise["last_churn"] == "over"
    assert smb["last"]["churn_rate"] == 0.1 and smb["last_churn"] == "under"
    assert smb["last"]["cost_to_serve"] == 9 * 20.0 and smb["last"]["margin"] == 9 * 30.0
    assert enterprise["churn_target"] == {"monthly": 0.2, "period": 0.2}
    assert enterprise["now"]["customers_active"] == 7 and smb["now"]["customers_active"] == 9
    assert enterprise["current"]["period"] == "2025-03"
    pro = view["plans"]["pro"]  # every customer's plan: the whole business
    assert pro["last"]["churned"] == 4 and pro["churn_target"]["monthly"] is None
    old = msgspec.structs.replace(part, segments=None, plans=None)
    assert segments_view([old], {}, "month")["partitions_without_segments"] == [0]


def test_targets_are_validated(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "risk.json"
    path.write_text(json.dumps({"segment_churn_targets": {"enterprise": 0.02}}))
    assert load_risk_config(path).segment_churn_targets == {"enterprise": 0.02}
    path.write_text(json.dumps({"segment_churn_targets": {"enterprise": 1.5}}))
    with pytest.raises(RiskConfigError, match="segment_churn_targets"):
        load_risk_config(path)
