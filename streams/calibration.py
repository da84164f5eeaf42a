"""``churnwatch calibrate``: fit the risk score's weights on a transaction file.

The label is the one the score predicts: no purchase in the ``horizon_days`` after
the cut-off. Features are taken exactly as a worker would at the cut-off, from
states folded with the workers' own code (``streams.history``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from retention.calibrate import CalibrationError, fit_weights
from retention.evaluation import roc_auc
from retention.model import Model
from retention.risk import FEATURES, RiskConfig, Weights, evidence, features, score
from retention.timeutil import DAY, Micros, iso
from streams.history import History, fold_file
from streams.inputs import Format
from streams.settings import Settings

BEHAVIOUR = ("recency", "frequency", "spend")


def training_rows(
    history: History,
    config: RiskConfig,
    model: Model | None,
    window: Micros | None,
) -> tuple[list[tuple[float, ...]], list[bool], list[str]]:
    as_of = history.as_of
    end = as_of + round(config.horizon_days * DAY)
    rows: list[tuple[float, ...]] = []
    labels: list[bool] = []
    ids: list[str] = []
    for customer_id in sorted(history.states):
        state = history.states[customer_id]
        ev = evidence(state, as_of, config, model, window)
        if ev is None:
            continue
        rows.append(features(ev, config))
        labels.append(not history.bought_between(customer_id, as_of, end))
        ids.append(customer_id)
    return rows, labels, ids


def calibrate(
    history: History,
    base: RiskConfig,
    fit: Sequence[str],
    model: Model | None,
    settings: Settings,
    source: str,
) -> RiskConfig:
    """A copy of ``base`` with the named weights fitted (both weight sets when a model
    is given, the model-free set otherwise)."""
    window = settings.window
    changes: dict[str, Any] = {}
    steps: list[dict[str, Any]] = list(base.provenance.get("steps", []))
    if "recency" in fit:
        intervals = [s.typical_interval_days() for s in history.states.values() if len(s.days) >= 2]
        if intervals:
            changes["default_interval_days"] = round(
                statistics.median(i for i in intervals if i is not None), 2
            )
    targets: list[tuple[str, Model | None]] = [("plain", None)]
    if model is not None:
        targets.append(("with_model", model))
    fit_intercept = "intercept" in fit
    names = [name for name in fit if name != "intercept"]
    for target, used in targets:
        chosen = [n for n in names if used is not None or n != "expected"]
        rows, labels, _ = training_rows(history, base, used, window)
        current: Weights = getattr(base, target)
        weights, stats = fit_weights(rows, labels, chosen, current, fit_intercept)
        changes[target] = weights
        trial = msgspec.structs.replace(base, **{target: weights})
        scores = [
            score(ev, trial)
            for ev in (
                evidence(history.states[i], history.as_of, trial, used, window)
                for i in sorted(history.states)
            )
            if ev is not None
        ]
        steps.append(
            {
                "weights": target,
                "fitted": (["intercept"] if fit_intercept else []) + chosen,
                "data": source,
                "as_of": iso(history.as_of),
                "horizon_days": base.horizon_days,
                **stats,
                "roc_auc": roc_auc(labels, scores),
            }
        )
    changes["provenance"] = {**base.provenance, "steps": steps}
    return msgspec.structs.replace(base, **changes)


def calibrate_file(
    path: Path,
    fmt: Format,
    as_of: Micros,
    base: RiskConfig,
    fit: Sequence[str],
    model: Model | None,
    settings: Settings,
    progress: Callable[[int], None] | None = None,
) -> RiskConfig:
    unknown = sorted(set(fit) - set(FEATURES) - {"intercept"})
    if unknown:
        raise CalibrationError(
            f"unknown features {unknown}; known: intercept, {', '.join(FEATURES)}"
        )
    history = fold_file(path, fmt, as_of, settings, progress)
    return calibrate(history, base, fit, model, settings, path.name)
