"""``churnwatch backtest``: how well the streamed risk scores find who leaves.

The calibration period goes through the real pipeline (``streams.replay``: broker,
workers, changelog); the scores are the workers' state assessed at the cut-off.
The outcome, read from the same file, is whether each customer bought nothing in
[calibration end, holdout end). Baselines use the same customers and state: days
since the last purchase, and BG/NBD expected purchases over the holdout.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retention.alerts import Lifecycle
from retention.evaluation import precision_at, precision_recall, roc_auc
from retention.model import Model, dump_model, expected_purchases, load_model
from retention.risk import TIERS, load_risk_config
from retention.timeutil import DAY, Micros, iso
from streams.fitting import fit_file
from streams.history import fold_file
from streams.inputs import Format
from streams.replay import replay
from streams.risk_view import risk_fields
from streams.settings import Settings

TOP_SHARE = 0.10


def _ranking(labels: list[bool], scores: list[float]) -> dict[str, float | None]:
    return {
        "roc_auc": roc_auc(labels, scores),
        "precision_top_10pct": precision_at(labels, scores, TOP_SHARE),
    }


def backtest(
    path: Path,
    fmt: Format,
    calibration_end: Micros,
    holdout_end: Micros,
    *,
    model_path: Path | None = None,
    risk_path: Path | None = None,
    partitions: int = 4,
    workers: int = 1,
    embedded: str = "tansu",
    base: Settings | None = None,
    stage: Callable[[str], None] = lambda _: None,
    keep_alerts: bool = False,
) -> dict[str, Any]:
    """The backtest figures; with ``keep_alerts`` also every alert record emitted."""
    if holdout_end <= calibration_end:
        raise ValueError("--holdout-end must be after --calibration-end")
    base = base or Settings.from_env()
    config = load_risk_config(risk_path or (base.risk or None))
    with tempfile.TemporaryDirectory(prefix="churnwatch-backtest-") as tmp:
        workdir = Path(tmp)
        model: Model
        if model_path is not None:
            model = load_model(model_path)
            model_source = str(model_path)
        else:
            stage("fitting BG/NBD and Gamma-Gamma on the calibration period")
            model = fit_file(path, fmt, calibration_end, settings=base)
            model_path = workdir / "model.json"
            model_path.write_bytes(dump_model(model))
            model_source = "fitted on the calibration period"
        settings = base.replace(model=str(model_path), risk=str(risk_path or base.risk or ""))
        result = replay(
            path,
            calibration_end,
            fmt=fmt,
            partitions=partitions,
            workers=workers,
            embedded=embedded,
            base=settings,
            workdir=workdir / "replay",
            stage=stage,
        )
    stage("reading the holdout outcomes")
    outcomes = fold_file(path, fmt, calibration_end, base)
    lifecycle = Lifecycle(config, model, base.window)
    ids = sorted(cid for cid, state in result.customers.items() if state.days)
    labels: list[bool] = []
    risk: list[float] = []
    value: list[float] = []
    recency: list[float] = []
    expected: list[float] = []
    tiers: list[str] = []
    holdout_days = (holdout_end - calibration_end) / DAY
    for cid in ids:
        state = result.customers[cid]
        fields = risk_fields(state, calibration_end, lifecycle)
        labels.append(not outcomes.bought_between(cid, calibration_end, holdout_end))
        risk.append(fields["risk_score"])
        value.append(fields["value_at_risk"])
        tiers.append(fields["tier"])
        assert state.last_purchase_at is not None
        recency.append((calibration_end - state.last_purchase_at) / DAY)
        days = state.days
        expected.append(
            -expected_purchases(
                model.bgnbd,
                holdout_days,
                len(days) - 1,
                float(days[-1].day - days[0].day),
                (calibration_end - days[0].day * DAY) / DAY,
            )
        )
    by_tier: dict[str, Any] = {}
    for tier in TIERS:
        exact = [t == tier for t in tiers]
        at_least = [TIERS.index(t) >= TIERS.index(tier) for t in tiers]
        precision, recall = precision_recall(labels, exact)
        cumulative_precision, cumulative_recall = precision_recall(labels, at_least)
        by_tier[tier] = {
            "customers": sum(exact),
            "precision": precision,
            "recall": recall,
            "at_or_above": {
                "customers": sum(at_least),
                "precision": cumulative_precision,
                "recall": cumulative_recall,
            },
        }
    churners = sum(labels)
    return {
        "file": str(path),
        "calibration_end": iso(calibration_end),
        "holdout_end": iso(holdout_end),
        "customers": len(ids),
        "churners": churners,
        "churn_share": churners / len(ids) if ids else None,
        "model": {"source": model_source, "bgnbd": model.bgnbd, "gamma_gamma": model.gamma_gamma},
        "risk_config": str(risk_path or base.risk or "defaults"),
        "risk_score": {
            **_ranking(labels, risk),
            "precision_top_10pct_by_value_at_risk": precision_at(labels, value, TOP_SHARE),
            "tiers": by_tier,
        },
        "baselines": {
            "recency_days": _ranking(labels, recency),
            "bgnbd_expected_purchases": _ranking(labels, expected),
        },
        "alerts": len(result.alerts),
        **({"alert_records": result.alerts} if keep_alerts else {}),
        "pipeline": {
            "events": result.events,
            "processing_seconds": round(result.processing_seconds, 2),
            "events_per_second": round(result.rate, 1),
        },
    }
