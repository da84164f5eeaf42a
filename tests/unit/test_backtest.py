"""``churnwatch backtest`` on a calibration period too small for BG/NBD (streams/backtest.py).

The replay (broker and worker processes) is replaced by the agent's batch logic run
in-process (tests/inprocess.py): the worker's decoder, fold and lifecycle, without a
model, as a worker without ``CHURNWATCH_MODEL`` runs. Everything around it (the fit,
the outcomes, the scores, the report and the command's output) is the backtest's own.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from processor.partition import decode_partition
from retention.evaluation import roc_auc
from retention.model import BgNbd, Model, dump_model
from retention.risk import assess, load_risk_config
from retention.timeutil import Micros, parse_time
from streams import backtest as backtest_module
from streams.backtest import backtest, fallback_line
from streams.cli import app
from streams.history import fold_file
from streams.inputs import Format, read_events
from streams.partitions import partition_state_key
from streams.produce import PublishStats
from streams.replay import ReplayResult
from streams.settings import Settings
from tests.inprocess import Run

T1 = parse_time("1997-07-01T00:00:00Z")
T2 = parse_time("1998-01-01T00:00:00Z")
CUSTOMERS = 60  # above the fit's 50 customers, so the repeat buyers are what it lacks
REPEAT_BUYERS = 6  # in the calibration period: below the fit's 10
REASON = "too few repeat buyers to fit BG/NBD: 6 of 60 customers made a second purchase"


def _small_history(path: Path) -> Path:
    """A CDNOW-format log: 60 first purchases in 1997's first two months, a second
    purchase before T1 for 6 of them, and a purchase in the holdout for every third."""
    start = date(1997, 1, 1)
    lines = []
    for n in range(1, CUSTOMERS + 1):
        first = start + timedelta(days=n)
        lines.append((f"{n:05d}", first, 1, 10.0 + n))
        if n <= REPEAT_BUYERS:
            lines.append((f"{n:05d}", first + timedelta(days=40), 2, 20.0))
        if n % 3 == 0:
            lines.append((f"{n:05d}", date(1997, 9, 1) + timedelta(days=n), 1, 15.0))
    path.write_text(
        "".join(f"{cid} {day:%Y%m%d} {cds} {amount:.2f}\n" for cid, day, cds, amount in lines)
    )
    return path


class InProcessReplay:
    """``streams.replay.replay`` without a broker; remembers the model setting the
    workers would have been started with."""

    def __init__(self) -> None:
        self.models: list[str] = []

    def __call__(
        self, path: Path, as_of: Micros, *, fmt: Format, base: Settings, **_: Any
    ) -> ReplayResult:
        self.models.append(base.model)
        # Every line of this history is dated; the replay publishes in event-time order.
        dated = [(r.occurred_at, r) for r in read_events(path, fmt) if r.occurred_at is not None]
        records = [r for at, r in sorted(dated, key=lambda pair: pair[0]) if at < as_of]
        run = Run(records, as_of)
        run.feed(records, [100], random.Random(0))
        return ReplayResult(
            as_of=as_of,
            customers=run.customers(),
            partitions=[decode_partition(run.table[partition_state_key(0)])],
            published=PublishStats(published=len(records)),
            processing_seconds=1.0,
            settings=base,
            alerts=run.alert_records(),
        )


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> InProcessReplay:
    fake = InProcessReplay()
    monkeypatch.setattr(backtest_module, "replay", fake)
    return fake


def test_too_few_repeat_buyers_scores_model_free(tmp_path: Path, workers: InProcessReplay) -> None:
    events = _small_history(tmp_path / "small.txt")
    stages: list[str] = []
    # A model named in the environment is not the one the backtest reports on: without
    # --model it fits its own, and without a fit the workers must run with none.
    base = Settings(model=str(tmp_path / "elsewhere.json"))
    report = backtest(events, "cdnow", T1, T2, base=base, stage=stages.append)

    model = report["model"]
    assert model["fitted"] is False and model["scoring"] == "model-free"
    assert model["reason"].startswith(REASON)
    assert model["bgnbd"] is None and model["gamma_gamma"] is None
    assert fallback_line(model["reason"]) in stages
    assert workers.models == [""]

    assert report["customers"] == CUSTOMERS and report["churners"] == 40
    risk = report["risk_score"]
    assert sum(t["customers"] for t in risk["tiers"].values()) == CUSTOMERS
    # The workers' model-free score: the same ranking as assessing every customer's
    # folded state at T1 without a model.
    fold = fold_file(events, "cdnow", T1, base)
    states = fold.states
    config = load_risk_config(None)
    scores, labels = [], []
    for cid in sorted(states):
        assessment = assess(states[cid], T1, config, None, base.window)
        assert assessment is not None
        scores.append(round(assessment.score, 6))  # as the report's risk_score
        labels.append(not fold.bought_between(cid, T1, T2))
    assert risk["roc_auc"] == pytest.approx(roc_auc(labels, scores))
    assert risk["precision_top_10pct"] is not None

    assert set(report["baselines"]) == {"recency_days"}
    assert report["baselines"]["recency_days"]["roc_auc"] is not None


def test_a_given_model_still_gets_the_bgnbd_baseline(
    tmp_path: Path, workers: InProcessReplay
) -> None:
    events = _small_history(tmp_path / "small.txt")
    params = tmp_path / "model.json"
    params.write_bytes(dump_model(Model(bgnbd=BgNbd(r=0.24, alpha=4.4, a=0.79, b=2.4))))
    report = backtest(events, "cdnow", T1, T2, model_path=params, base=Settings())

    assert report["model"]["fitted"] is True and report["model"]["reason"] is None
    assert report["model"]["source"] == str(params)
    assert report["model"]["bgnbd"] == BgNbd(r=0.24, alpha=4.4, a=0.79, b=2.4)
    assert workers.models == [str(params)]
    assert set(report["baselines"]) == {"recency_days", "bgnbd_expected_purchases"}
    assert report["baselines"]["bgnbd_expected_purchases"]["roc_auc"] is not None


def test_the_command_says_it_scored_model_free(tmp_path: Path, workers: InProcessReplay) -> None:
    events = _small_history(tmp_path / "small.txt")
    out = tmp_path / "out" / "backtest.json"
    args = ["backtest", str(events), "--format", "cdnow", "--out", str(out)]
    times = ["--calibration-end", "1997-07-01T00:00:00Z", "--holdout-end", "1998-01-01T00:00:00Z"]
    result = CliRunner().invoke(app, [*args, *times], env={"CHURNWATCH_MODEL": ""})

    assert result.exit_code == 0, result.output
    assert "backtest failed" not in result.output
    document = json.loads(out.read_text())
    assert document["model"]["fitted"] is False
    line = fallback_line(document["model"]["reason"])
    assert line.startswith(f"BG/NBD not fitted: {REASON}")
    assert line in result.output
    assert "risk score (model-free)" in result.output
    assert "days since last purchase" in result.output
    assert "BG/NBD expected purchases" not in result.output
