"""``churnwatch backtest``: how well the streamed risk scores find who leaves.

The calibration period goes through the real pipeline (``streams.replay``: broker,
workers, changelog); the scores are the workers' state assessed at the cut-off.
The outcome, read from the same file, is whether each customer bought nothing in
[calibration end, holdout end). Baselines use the same customers and state: days
since the last purchase, and BG/NBD expected purchases over the holdout.

A calibration period too small for BG/NBD (``FitError``: too few customers or
repeat buyers, or a likelihood that does not identify the parameters) is still
one the workers can score: without a model they use the model-free weights. The
backtest then does the same, says so (``fallback_line``, and ``model.fitted``
false with the fit's reason in the report), and drops only the BG/NBD baseline,
which has no parameters to compute it from; the recency baseline stays.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from retention.alerts import Lifecycle
from retention.evaluation import precision_at, precision_recall, roc_auc
from retention.fit import FitError
from retention.model import Model, dump_model, expected_purchases, load_model
from retention.risk import TIERS, load_risk_config
from retention.state import CustomerState
from retention.timeutil import DAY, Micros, iso
from streams.fitting import fit_file
from streams.history import History, fold_file
from streams.inputs import Format
from streams.replay import replay
from streams.risk_view import risk_fields
from streams.settings import Settings

TOP_SHARE = 0.10


def fallback_line(reason: str) -> str:
    """What the backtest says when it scores without a model (``reason``: the fit's)."""
    return (
        f"BG/NBD not fitted: {reason}; scoring model-free, as workers without a model do "
        "(no BG/NBD baseline)"
    )


class _ModelUsed(NamedTuple):
    model: Model | None  # None: the workers score model-free
    path: Path | None  # the file the workers load; None exactly when model is None
    report: dict[str, Any]  # the report's "model" section


def _choose_model(
    path: Path,
    fmt: Format,
    calibration_end: Micros,
    model_path: Path | None,
    base: Settings,
    workdir: Path,
    stage: Callable[[str], None],
) -> _ModelUsed:
    if model_path is not None:
        # A model the user names must load: an unusable file is their error, not
        # a reason to score as if they had named none.
        model = load_model(model_path)
        source = str(model_path)
    else:
        stage("fitting BG/NBD and Gamma-Gamma on the calibration period")
        try:
            model = fit_file(path, fmt, calibration_end, settings=base)
        except FitError as exc:
            reason = str(exc)
            stage(fallback_line(reason))
            section = {"fitted": False, "reason": reason, "scoring": "model-free"}
            # No parameters rather than made-up ones: nothing was estimated.
            return _ModelUsed(
                None, None, {**section, "source": None, "bgnbd": None, "gamma_gamma": None}
            )
        model_path = workdir / "model.json"
        model_path.write_bytes(dump_model(model))
        source = "fitted on the calibration period"
    section = {"fitted": True, "reason": None, "scoring": "model", "source": source}
    return _ModelUsed(
        model, model_path, {**section, "bgnbd": model.bgnbd, "gamma_gamma": model.gamma_gamma}
    )


@dataclass
class _Scored:
    """Per customer, in one order: the outcome and every ranking of it."""

    labels: list[bool] = field(default_factory=list)  # True: bought nothing in the holdout
    risk: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    recency: list[float] = field(default_factory=list)
    expected: list[float] = field(default_factory=list)  # negated; empty without a model
    tiers: list[str] = field(default_factory=list)


def _score(
    customers: dict[str, CustomerState],
    outcomes: History,
    lifecycle: Lifecycle,
    calibration_end: Micros,
    holdout_end: Micros,
) -> _Scored:
    """Customers with a purchase in the calibration period, in id order."""
    model = lifecycle.model
    holdout_days = (holdout_end - calibration_end) / DAY
    out = _Scored()
    for cid in sorted(cid for cid, state in customers.items() if state.days):
        state = customers[cid]
        fields = risk_fields(state, calibration_end, lifecycle)
        out.labels.append(not outcomes.bought_between(cid, calibration_end, holdout_end))
        out.risk.append(fields["risk_score"])
        out.value.append(fields["value_at_risk"])
        out.tiers.append(fields["tier"])
        assert state.last_purchase_at is not None
        out.recency.append((calibration_end - state.last_purchase_at) / DAY)
        if model is not None:
            days = state.days
            out.expected.append(
                -expected_purchases(
                    model.bgnbd,
                    holdout_days,
                    len(days) - 1,
                    float(days[-1].day - days[0].day),
                    (calibration_end - days[0].day * DAY) / DAY,
                )
            )
    return out


def _ranking(labels: list[bool], scores: list[float]) -> dict[str, float | None]:
    return {
        "roc_auc": roc_auc(labels, scores),
        "precision_top_10pct": precision_at(labels, scores, TOP_SHARE),
    }


def _by_tier(labels: list[bool], tiers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tier in TIERS:
        exact = [t == tier for t in tiers]
        at_least = [TIERS.index(t) >= TIERS.index(tier) for t in tiers]
        precision, recall = precision_recall(labels, exact)
        cumulative_precision, cumulative_recall = precision_recall(labels, at_least)
        out[tier] = {
            "customers": sum(exact),
            "precision": precision,
            "recall": recall,
            "at_or_above": {
                "customers": sum(at_least),
                "precision": cumulative_precision,
                "recall": cumulative_recall,
            },
        }
    return out


def _risk_section(scored: _Scored) -> dict[str, Any]:
    return {
        **_ranking(scored.labels, scored.risk),
        "precision_top_10pct_by_value_at_risk": precision_at(
            scored.labels, scored.value, TOP_SHARE
        ),
        "tiers": _by_tier(scored.labels, scored.tiers),
    }


def _baselines(scored: _Scored, fitted: bool) -> dict[str, Any]:
    baselines = {"recency_days": _ranking(scored.labels, scored.recency)}
    if fitted:  # without parameters there is no BG/NBD expectation to rank by
        baselines["bgnbd_expected_purchases"] = _ranking(scored.labels, scored.expected)
    return baselines


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
        used = _choose_model(path, fmt, calibration_end, model_path, base, workdir, stage)
        # model="" when none was fitted: the workers then run without a model, not
        # with one CHURNWATCH_MODEL may name, so they score as the report says.
        model = "" if used.path is None else str(used.path)
        settings = base.replace(model=model, risk=str(risk_path or base.risk or ""))
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
    lifecycle = Lifecycle(config, used.model, base.window)
    scored = _score(result.customers, outcomes, lifecycle, calibration_end, holdout_end)
    customers, churners = len(scored.labels), sum(scored.labels)
    return {
        "file": str(path),
        "calibration_end": iso(calibration_end),
        "holdout_end": iso(holdout_end),
        "customers": customers,
        "churners": churners,
        "churn_share": churners / customers if customers else None,
        "model": used.report,
        "risk_config": str(risk_path or base.risk or "defaults"),
        "risk_score": _risk_section(scored),
        "baselines": _baselines(scored, used.model is not None),
        "alerts": len(result.alerts),
        **({"alert_records": result.alerts} if keep_alerts else {}),
        "pipeline": {
            "events": result.events,
            "processing_seconds": round(result.processing_seconds, 2),
            "events_per_second": round(result.rate, 1),
        },
    }
