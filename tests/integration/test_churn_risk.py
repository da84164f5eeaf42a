"""Churn risk end to end on CDNOW, through the broker and a real worker (issue 4).

The backtest replays the calibration period (to 1997-10-01) through the pipeline,
takes the workers' state at the cut-off and scores it against who bought nothing
before 1998-07-01. Alerts are what the worker emitted on churnwatch.alerts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import lifetimes
import msgspec
import pytest

from retention.model import BgNbd, GammaGamma, Model, dump_model
from retention.timeutil import parse_time
from streams.backtest import backtest
from streams.replay import replay
from streams.settings import Settings
from tests.brokers import KIND

pytestmark = pytest.mark.integration

T1 = parse_time("1997-10-01T00:00:00Z")
T2 = parse_time("1998-07-01T00:00:00Z")
CDNOW = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return backtest(CDNOW, "cdnow", T1, T2, embedded=KIND, base=Settings(), keep_alerts=True)


def test_risk_score_beats_the_baselines_on_cdnow(result: dict[str, Any]) -> None:
    assert result["customers"] == 23_570
    risk = result["risk_score"]
    assert risk["roc_auc"] >= 0.765
    baselines = result["baselines"]
    assert baselines["recency_days"]["roc_auc"] == pytest.approx(0.759, abs=0.002)
    assert baselines["bgnbd_expected_purchases"]["roc_auc"] == pytest.approx(0.763, abs=0.003)
    assert risk["roc_auc"] > baselines["recency_days"]["roc_auc"]
    tiers = risk["tiers"]
    assert sum(t["customers"] for t in tiers.values()) == result["customers"]
    # Tiers are ordered: the higher the tier, the more of its customers leave.
    shares = [t["precision"] for t in tiers.values() if t["customers"] >= 100]
    assert shares == sorted(shares)
    assert 0 < risk["precision_top_10pct"] <= 1
    assert risk["precision_top_10pct_by_value_at_risk"] is not None


def test_alerts_follow_the_lifecycle(result: dict[str, Any]) -> None:
    alerts = result["alert_records"]
    assert alerts, "the replay emitted no alerts"
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alert in alerts:
        by_customer[alert["customer_id"]].append(alert)
    statuses = Counter(a["status"] for a in alerts)
    assert statuses["churned"] > 0 and statuses["resolved"] > 0
    for customer, items in by_customer.items():
        items.sort(key=lambda a: a["sequence"])
        # Sequences are 1, 2, 3, ... per customer: no alert lost, none twice.
        assert [a["sequence"] for a in items] == list(range(1, len(items) + 1)), customer
        # One firing per episode at most, and no alert at all after an episode
        # closes except a resolution of a churned episode or a new episode.
        for episode in {a["dedup_key"] for a in items}:
            kinds = [a["status"] for a in items if a["dedup_key"] == episode]
            assert kinds.count("firing") <= 1 and kinds.count("churned") <= 1, kinds
            assert kinds.count("resolved") <= 1, kinds
        for alert in items:
            if alert["status"] != "resolved":
                assert alert["reasons"], alert  # no alert without evidence
            assert alert["starts_at"] <= alert["at"] <= "1997-10-01T00:00:00Z"


def test_a_customer_who_returns_gets_a_resolved_alert(result: dict[str, Any]) -> None:
    alerts = result["alert_records"]
    churned = {a["dedup_key"] for a in alerts if a["status"] == "churned"}
    resolved = [a for a in alerts if a["status"] == "resolved" and a["dedup_key"] in churned]
    assert resolved
    assert all(a["source"]["topic"] == "customer.purchases" for a in resolved)


def test_replaying_again_yields_the_same_alerts(result: dict[str, Any], tmp_path: Path) -> None:
    # The first 2,000 customers of CDNOW, replayed twice with different layouts.
    subset = tmp_path / "cdnow-2000.txt"
    with CDNOW.open() as source, subset.open("w") as out:
        for number, line in enumerate(source):
            fields = line.split()
            if number == 0 or (fields and fields[0].isdigit() and int(fields[0]) <= 2000):
                out.write(line)
    model = Model(
        bgnbd=msgspec.convert(result["model"]["bgnbd"], BgNbd, from_attributes=True),
        gamma_gamma=msgspec.convert(
            result["model"]["gamma_gamma"], GammaGamma, from_attributes=True
        ),
    )
    (tmp_path / "model.json").write_bytes(dump_model(model))
    base = Settings().replace(model=str(tmp_path / "model.json"))

    def run(partitions: int, name: str) -> list[dict[str, Any]]:
        return replay(
            subset,
            T1,
            fmt="cdnow",
            partitions=partitions,
            embedded=KIND,
            base=base,
            workdir=tmp_path / name,
        ).alerts

    def identity(alerts: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {(a["dedup_key"], a["sequence"], a["status"], a["at"]) for a in alerts}

    first, second = run(4, "first"), run(2, "second")
    assert first and identity(first) == identity(second)
    # Nothing emitted twice; and a customer's alerts depend on their own events
    # only, so the full replay emitted exactly these for the same customers.
    assert len(identity(first)) == len(first)
    mine = {a["customer_id"] for a in first}
    from_full = [a for a in result["alert_records"] if a["customer_id"] in mine]
    assert identity(first) == identity(from_full)
