"""Fitting the risk score's weights to what customers actually did.

The score is a logistic model, so its weights are the maximum-likelihood fit of
"no purchase in the next horizon" on the features of ``retention.risk`` at a
cut-off. A subset of weights can be fitted with the others held fixed: purchase
logs such as CDNOW say nothing about feedback, so those weights are fitted on data
that has feedback while the purchase-behaviour weights stay as fitted on real
purchases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
from scipy.optimize import minimize

from retention.risk import FEATURES, Weights

#: The direction each feature may move the risk. Fits are constrained to it, as in
#: credit scoring: a weight of the wrong sign (say, bad experiences *lowering* risk
#: because in one data set complainers are also the most engaged buyers) would
#: produce reasons that contradict the score.
SIGNS: Final = {
    "recency": 1,
    "frequency": -1,
    "spend": -1,
    "expected": -1,
    "frequency_drop": 1,
    "spend_drop": 1,
    "experiences": 1,
    "detractor": 1,
    "low_csat": 1,
}

#: A light ridge penalty keeps weights finite for features that never vary in the
#: data (then they stay at their fixed or zero value) and for separable data.
RIDGE = 1e-4


class CalibrationError(ValueError):
    """The data cannot support a fit (too small, one class only, no convergence)."""


def fit_weights(
    rows: Sequence[Sequence[float]],
    labels: Sequence[bool],
    fit: Sequence[str],
    base: Weights | None = None,
    fit_intercept: bool = True,
) -> tuple[Weights, dict[str, float]]:
    """Maximum-likelihood weights for the features named in ``fit``; others from ``base``."""
    base = base or Weights()
    unknown = sorted(set(fit) - set(FEATURES))
    if unknown:
        raise CalibrationError(f"unknown features {unknown}; known: {', '.join(FEATURES)}")
    n = len(rows)
    positives = sum(1 for y in labels if y)
    if n < 100:
        raise CalibrationError(f"only {n} customers; need at least 100 to calibrate")
    if positives == 0 or positives == n:
        raise CalibrationError("every customer has the same outcome; nothing to learn from")
    x = np.asarray(rows, dtype=float)
    y = np.asarray(labels, dtype=float)
    columns = [FEATURES.index(name) for name in FEATURES if name in fit]
    fixed = np.array(base.vector())
    fixed[columns] = 0.0
    offset = x @ fixed + (0.0 if fit_intercept else base.intercept)
    design = x[:, columns]
    if fit_intercept:
        design = np.column_stack([np.ones(n), design])
    scale = design.std(axis=0)
    scale[scale == 0] = 1.0
    if fit_intercept:
        scale[0] = 1.0
    design = design / scale

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = offset + design @ w
        p = 1.0 / (1.0 + np.exp(-z))
        value = float(np.sum(np.logaddexp(0.0, z) - y * z)) / n + RIDGE * float(w @ w)
        grad = design.T @ (p - y) / n + 2 * RIDGE * w
        return value, grad

    start = np.zeros(design.shape[1])
    if fit_intercept:
        rate = positives / n
        start[0] = math.log(rate / (1 - rate)) - float(np.mean(offset))
    bounds: list[tuple[float | None, float | None]] = [(None, None)] if fit_intercept else []
    for index in columns:
        sign = SIGNS[FEATURES[index]]
        bounds.append((0.0, None) if sign > 0 else (None, 0.0))
    result = minimize(
        loss, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 1000}
    )
    if not result.success or not np.all(np.isfinite(result.x)):
        raise CalibrationError(f"the fit did not converge: {result.message}")
    w = result.x / scale
    values = dict(zip(FEATURES, base.vector(), strict=True))
    intercept = base.intercept
    if fit_intercept:
        intercept, w = float(w[0]), w[1:]
    for index, weight in zip(columns, w, strict=True):
        values[FEATURES[index]] = float(weight)
    weights = Weights(intercept=intercept, **values)
    stats = {
        "customers": n,
        "positives": positives,
        "log_loss": float(result.fun - RIDGE * float(result.x @ result.x)),
    }
    return weights, stats
