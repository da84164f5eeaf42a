"""Maximum-likelihood fits of BG/NBD and Gamma-Gamma, agreeing with ``lifetimes``.

The likelihoods are those of ``lifetimes`` (Fader, Hardie and Lee 2005; Hardie's
note 025) with analytic gradients, maximised over log-parameters so that every
step stays in the positive orthant. Customers with the same (x, t_x, T) are one
row with a count: purchase histories in days repeat a lot, and the fit then costs
the same for a million customers as for a few thousand distinct histories.

As in ``lifetimes``, time is rescaled so that the oldest customer is 1 during the
BG/NBD fit (and spend by its mean during Gamma-Gamma's): only ``alpha`` (``v``)
depends on the unit, and well-scaled parameters let the optimiser's tolerances
mean the same on every data set. L-BFGS-B does the descent; BFGS from its optimum
then polishes to a tight gradient, so the result does not depend on where a
loose stopping rule happened to halt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

from retention.model import BgNbd, GammaGamma, Model, model_problems

FloatArray = npt.NDArray[np.float64]
Objective = Callable[[FloatArray], tuple[float, FloatArray]]

MIN_CUSTOMERS: Final = 50
MIN_REPEAT_CUSTOMERS: Final = 10
# Log-parameters beyond this mean the data push a parameter to 0 or infinity,
# i.e. they do not identify it; the bound also keeps exp() finite.
_LOG_BOUND: Final = 25.0
_GRAD_TOL: Final = 1e-6  # of the mean negative log-likelihood per customer
# A log-parameter known only to within e^10 (a factor of 22,000) is not estimated.
_MAX_LOG_SE: Final = 10.0


class FitError(ValueError):
    """The data cannot support a fit; the message says why."""


class CustomerRow(NamedTuple):
    """One customer's summary: repeat-purchase days, days from first to last
    purchase day, days from first purchase day to the cut-off, mean repeat spend
    (0 without repeat purchases)."""

    x: int
    t_x: float
    T: float
    mean_repeat_spend: float


def _aggregate(
    columns: tuple[FloatArray, ...], weights: FloatArray
) -> tuple[list[FloatArray], FloatArray]:
    """The distinct rows of ``columns`` and the summed weight of each."""
    unique, inverse = np.unique(np.column_stack(columns), axis=0, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=weights, minlength=len(unique))
    return [unique[:, i] for i in range(unique.shape[1])], summed.astype(np.float64)


def _minimise(
    objective: Objective, start: FloatArray, what: str, names: str, customers: float
) -> FloatArray:
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(start)
    with np.errstate(all="ignore"):
        first = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-10},
        )
        best = first.x
        if np.all(np.abs(best) < _LOG_BOUND - 1):
            polish = minimize(
                objective, best, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 10_000}
            )
            if np.isfinite(polish.fun) and polish.fun <= first.fun:
                best = polish.x
        value, grad = objective(best)
    if not (np.isfinite(value) and np.all(np.isfinite(best))):
        raise FitError(f"{what}: the optimiser ended on a non-finite likelihood")
    params = names.split()
    runaway = [params[i] for i in np.flatnonzero(np.abs(best) >= _LOG_BOUND - 1)]
    if runaway:
        raise FitError(
            f"{what}: {', '.join(runaway)} ran off to 0 or infinity; "
            "the data do not identify the model"
        )
    if not (np.all(np.isfinite(grad)) and np.max(np.abs(grad)) < _GRAD_TOL):
        raise FitError(
            f"{what}: the optimiser did not converge (gradient {np.max(np.abs(grad)):.2e}, "
            f"{first.message})"
        )
    _check_identified(objective, best, what, params, customers)
    return np.asarray(best, dtype=np.float64)


def _check_identified(
    objective: Objective, best: FloatArray, what: str, names: list[str], customers: float
) -> None:
    """Refuse an optimum the data do not pin down: a flat or saddle-shaped likelihood
    (few repeat buyers, or too short a history to see anyone drop out) has an
    "optimum" anywhere along a ridge, whose parameters then mean nothing."""
    step = 1e-5
    size = len(best)
    hessian = np.empty((size, size))
    with np.errstate(all="ignore"):
        for i in range(size):
            delta = np.zeros(size)
            delta[i] = step
            hessian[:, i] = (objective(best + delta)[1] - objective(best - delta)[1]) / (2 * step)
    hessian = (hessian + hessian.T) / 2 * customers
    if not np.all(np.isfinite(hessian)) or np.linalg.eigvalsh(hessian).min() <= 0:
        raise FitError(
            f"{what}: the likelihood has no proper maximum (it is flat in some direction); "
            "the data do not identify the model"
        )
    errors = np.sqrt(np.diag(np.linalg.inv(hessian)))
    worst = int(np.argmax(errors))
    if not errors[worst] <= _MAX_LOG_SE:
        raise FitError(
            f"{what}: the data do not identify {names[worst]} (the standard error of its "
            f"logarithm is {errors[worst]:.3g}); more customers or a longer history are needed"
        )


# --- BG/NBD ------------------------------------------------------------------------


def bgnbd_log_likelihood(
    params: BgNbd, x: FloatArray, t_x: FloatArray, T: FloatArray, weights: FloatArray
) -> float:
    """The summed log-likelihood (time in the unit of ``t_x``, ``T`` and ``alpha``)."""
    value, _ = _bgnbd_objective(x, t_x, T, weights)(
        np.log([params.r, params.alpha, params.a, params.b])
    )
    return -value * float(weights.sum())


def _bgnbd_objective(x: FloatArray, t_x: FloatArray, T: FloatArray, w: FloatArray) -> Objective:
    total = float(w.sum())
    repeat = x > 0
    x1 = np.maximum(x, 1.0)

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = np.exp(log_params)
        log_alpha_T = np.log(alpha + T)
        log_alpha_tx = np.log(alpha + t_x)
        a1 = gammaln(r + x) - gammaln(r) + r * math.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
        a3 = -(r + x) * log_alpha_T
        a4 = math.log(a) - np.log(b + x1 - 1) - (r + x) * log_alpha_tx
        top = np.where(repeat, np.maximum(a3, a4), a3)
        e3 = np.exp(a3 - top)
        e4 = np.where(repeat, np.exp(a4 - top), 0.0)
        ll = a1 + a2 + np.log(e3 + e4) + top
        w3 = e3 / (e3 + e4)
        w4 = 1.0 - w3
        d_r = digamma(r + x) - digamma(r) + math.log(alpha) - w3 * log_alpha_T - w4 * log_alpha_tx
        d_alpha = r / alpha - (r + x) * (w3 / (alpha + T) + w4 / (alpha + t_x))
        d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
        d_b = digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x)
        d_b = d_b - w4 / (b + x1 - 1)
        grad = np.array(
            [
                r * np.dot(w, d_r),
                alpha * np.dot(w, d_alpha),
                a * np.dot(w, d_a),
                b * np.dot(w, d_b),
            ]
        )
        return -float(np.dot(w, ll)) / total, -grad / total

    return objective


def fit_bgnbd(
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
) -> tuple[BgNbd, float]:
    """BG/NBD by maximum likelihood; returns the parameters and the summed log-likelihood."""
    xs = np.asarray(x, dtype=np.float64).ravel()
    txs = np.asarray(t_x, dtype=np.float64).ravel()
    ages = np.asarray(T, dtype=np.float64).ravel()
    w = np.ones_like(xs) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not (len(xs) == len(txs) == len(ages) == len(w)):
        raise FitError("x, t_x, T and weights must have the same length")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(txs)) and np.all(np.isfinite(ages))):
        raise FitError("x, t_x and T must be finite")
    if np.any(xs < 0) or np.any(xs != np.round(xs)):
        raise FitError("x must be whole numbers of repeat purchases, at least 0")
    if np.any(txs < 0) or np.any(txs > ages):
        raise FitError("need 0 <= t_x <= T for every customer")
    if np.any(txs[xs == 0] != 0):
        raise FitError("t_x must be 0 for customers without repeat purchases")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise FitError("weights must be finite and non-negative")
    customers = float(w.sum())
    if customers < MIN_CUSTOMERS:
        raise FitError(f"too few customers to fit BG/NBD: {customers:g} (need {MIN_CUSTOMERS})")
    oldest = float(ages.max())
    if oldest <= 0:
        raise FitError("every customer has age T == 0: there is no time to observe")
    repeaters = float(w[xs > 0].sum())
    if repeaters < MIN_REPEAT_CUSTOMERS:
        raise FitError(
            f"too few repeat buyers to fit BG/NBD: {repeaters:g} of {customers:g} customers "
            f"made a second purchase (need {MIN_REPEAT_CUSTOMERS})"
        )
    keep = w > 0
    (xs, txs, ages), weighted = _aggregate((xs[keep], txs[keep], ages[keep]), w[keep])
    scale = 1.0 / oldest
    objective = _bgnbd_objective(xs, txs * scale, ages * scale, weighted)
    # lifetimes' start (log-parameters 0.1), in the same scaled time.
    best = _minimise(objective, np.full(4, 0.1), "BG/NBD", "r alpha a b", customers)
    r, alpha, a, b = (float(v) for v in np.exp(best))
    params = BgNbd(r=r, alpha=alpha / scale, a=a, b=b)
    return params, bgnbd_log_likelihood(params, xs, txs, ages, weighted)


# --- Gamma-Gamma -------------------------------------------------------------------


def gamma_gamma_log_likelihood(
    params: GammaGamma, x: FloatArray, mean_spend: FloatArray, weights: FloatArray
) -> float:
    value, _ = _gamma_gamma_objective(x, mean_spend, weights)(
        np.log([params.p, params.q, params.v])
    )
    return -value * float(weights.sum())


def _gamma_gamma_objective(x: FloatArray, m: FloatArray, w: FloatArray) -> Objective:
    total = float(w.sum())
    log_m = np.log(m)
    log_x = np.log(x)

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        p, q, v = np.exp(log_params)
        px = p * x
        log_xm_v = np.log(x * m + v)
        ll = (
            gammaln(px + q)
            - gammaln(px)
            - gammaln(q)
            + q * math.log(v)
            + (px - 1) * log_m
            + px * log_x
            - (px + q) * log_xm_v
        )
        psi = digamma(px + q)
        d_p = x * (psi - digamma(px) + log_m + log_x - log_xm_v)
        d_q = psi - digamma(q) + math.log(v) - log_xm_v
        d_v = q / v - (px + q) / (x * m + v)
        grad = np.array([p * np.dot(w, d_p), q * np.dot(w, d_q), v * np.dot(w, d_v)])
        return -float(np.dot(w, ll)) / total, -grad / total

    return objective


def fit_gamma_gamma(x: npt.ArrayLike, mean_spend: npt.ArrayLike) -> GammaGamma:
    """Gamma-Gamma on the repeat buyers (x > 0) with positive mean spend, as ``lifetimes``
    is fitted (it rejects non-positive spend; customers without repeat purchases
    carry no spend information under the model)."""
    params, _, _ = _fit_gamma_gamma(x, mean_spend)
    return params


def _fit_gamma_gamma(x: npt.ArrayLike, mean_spend: npt.ArrayLike) -> tuple[GammaGamma, float, int]:
    xs = np.asarray(x, dtype=np.float64).ravel()
    ms = np.asarray(mean_spend, dtype=np.float64).ravel()
    if len(xs) != len(ms):
        raise FitError("x and mean_spend must have the same length")
    keep = (xs > 0) & np.isfinite(ms) & (ms > 0)
    xs, ms = xs[keep], ms[keep]
    if len(xs) < MIN_CUSTOMERS:
        raise FitError(
            f"too few repeat buyers with positive spend to fit Gamma-Gamma: {len(xs)} "
            f"(need {MIN_CUSTOMERS})"
        )
    if np.all(ms == ms[0]):
        raise FitError("every repeat buyer has the same mean spend: Gamma-Gamma is not identified")
    (xs, ms), counts = _aggregate((xs, ms), np.ones_like(xs))
    scale = 1.0 / float(np.average(ms, weights=counts))
    objective = _gamma_gamma_objective(xs, ms * scale, counts)
    best = _minimise(objective, np.full(3, 0.1), "Gamma-Gamma", "p q v", float(counts.sum()))
    p, q, v = (float(val) for val in np.exp(best))
    params = GammaGamma(p=p, q=q, v=v / scale)
    return params, gamma_gamma_log_likelihood(params, xs, ms, counts), int(counts.sum())


# --- both --------------------------------------------------------------------------


def fit_model(
    rows: Iterable[tuple[int, float, float, float | None]],
    as_of: str | None = None,
    *,
    events: int = 0,
    rejected_events: int = 0,
) -> Model:
    """BG/NBD on every customer, Gamma-Gamma on repeat spend when there is enough.

    A data set whose spend cannot support Gamma-Gamma still gets a purchase model
    (``gamma_gamma`` None); one whose purchases cannot support BG/NBD is an error.
    """
    table = np.array(
        [(x, t_x, T, 0.0 if spend is None else spend) for x, t_x, T, spend in rows],
        dtype=np.float64,
    ).reshape(-1, 4)
    x, t_x, T, spend = table.T
    bgnbd, log_likelihood = fit_bgnbd(x, t_x, T)
    gamma_gamma: GammaGamma | None = None
    spend_ll: float | None = None
    spend_error: str | None = None
    spend_customers = int(np.count_nonzero((x > 0) & (spend > 0)))
    try:
        gamma_gamma, spend_ll, spend_customers = _fit_gamma_gamma(x, spend)
    except FitError as exc:
        spend_error = str(exc)
    if gamma_gamma is not None and gamma_gamma.q <= 1:
        # The population mean spend p v / (q - 1) would be negative or infinite.
        spend_error = f"Gamma-Gamma: fitted q = {gamma_gamma.q:.4g} <= 1 has no mean spend"
        gamma_gamma, spend_ll = None, None
    model = Model(
        bgnbd=bgnbd,
        gamma_gamma=gamma_gamma,
        as_of=as_of,
        customers=len(x),
        repeat_customers=int(np.count_nonzero(x > 0)),
        spend_customers=spend_customers,
        log_likelihood=log_likelihood,
        spend_log_likelihood=spend_ll,
        gamma_gamma_error=spend_error,
        events=events,
        rejected_events=rejected_events,
    )
    problems = model_problems(model)
    if problems:
        raise FitError("the fitted model cannot be used: " + "; ".join(problems))
    return model
