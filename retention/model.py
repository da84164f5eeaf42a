"""The probabilistic customer model: BG/NBD for purchasing, Gamma-Gamma for spend.

Every formula reproduces the ``lifetimes`` library (0.11) term for term, so that a
figure the stream computes per customer can be checked against the reference
implementation analysts already trust. The scalar functions are what the stream
calls per event: they use ``math`` on plain floats, because numpy's per-call
overhead on scalars costs more than the arithmetic, and call ``scipy.special.hyp2f1``
only for the one term that has no closed form. The ``*_array`` variants are the
same formulas over numpy arrays, for fitting and for checking whole populations.

Time is in days (``time_unit``): ``t_x`` and ``T`` must be in the unit the model
was fitted in, and ``alpha`` depends on it, so a model file says which it is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt
from scipy.special import expit, hyp2f1

FloatArray = npt.NDArray[np.float64]

TIME_UNIT: Final = "days"
# exp() of more than this overflows a double; math.exp raises instead of giving inf.
_EXP_MAX: Final = 709.0
# Near a == 1 the expectation is 0 * inf in floating point (the singularity of
# (a + b + x - 1) / (a - 1) is removable only analytically).
_A_NOT_ONE: Final = 1e-6


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""


class BgNbd(msgspec.Struct, frozen=True):
    """BG/NBD: purchase rates ~ Gamma(r, alpha), dropout probabilities ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


class GammaGamma(msgspec.Struct, frozen=True):
    """Gamma-Gamma: a customer's mean spend per purchase, shrunk towards the population's."""

    p: float
    q: float
    v: float


class Model(msgspec.Struct, frozen=True, kw_only=True):
    """A fitted model and enough provenance to tell which data it describes.

    ``gamma_gamma`` is None when the data had no repeat spend to fit it on; then
    there is no spend or CLV figure, only purchase behaviour.
    """

    bgnbd: BgNbd
    gamma_gamma: GammaGamma | None = None
    time_unit: str = TIME_UNIT
    as_of: str | None = None  # RFC 3339: the end of the observation window
    customers: int = 0
    repeat_customers: int = 0
    spend_customers: int = 0  # repeat customers with positive spend: Gamma-Gamma's data
    log_likelihood: float | None = None  # BG/NBD, summed over customers, time in days
    spend_log_likelihood: float | None = None  # Gamma-Gamma, summed over spend_customers
    gamma_gamma_error: str | None = None  # why gamma_gamma is None, when it is
    events: int = 0  # events folded into the summaries
    rejected_events: int = 0  # events the decoder rejected (not in the fit)


# --- per-customer figures (scalars, for the stream) -------------------------------


def _expit(z: float) -> float:
    # The two branches keep exp() from overflowing for large |z|.
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def p_alive(m: BgNbd, x: int, t_x: float, T: float) -> float:
    """Probability that the customer has not dropped out (Fader-Hardie note 021).

    In log space so that long-silent, frequent customers (odds past 1e308) come out
    as 0 rather than as an overflow.
    """
    if x == 0:
        return 1.0
    log_div = (m.r + x) * math.log((m.alpha + T) / (m.alpha + t_x)) + math.log(
        m.a / (m.b + max(x, 1) - 1)
    )
    return _expit(-log_div)


def _log_hyp_term(a_: float, b_: float, c_: float, z: float) -> float:
    h = float(hyp2f1(a_, b_, c_, z))
    if math.isfinite(h) and h > 0.0:
        return math.log(h)
    # Euler's transformation: 2F1(a, b; c; z) = (1 - z)^(c-a-b) 2F1(c-a, c-b; c; z),
    # finite where the direct series overflows (lifetimes switches on inf; we also
    # switch on nan, where lifetimes would return nan).
    alt = float(hyp2f1(c_ - a_, c_ - b_, c_, z))
    if not (math.isfinite(alt) and alt > 0.0):
        return math.nan
    return math.log(alt) + (c_ - a_ - b_) * math.log1p(-z)


def expected_purchases(m: BgNbd, t: float, x: int, t_x: float, T: float) -> float:
    """Expected repeat purchases in the next ``t`` days (BG/NBD paper, equation 10)."""
    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    if t == 0:
        return 0.0
    c_ = a + b + x - 1
    z = t / (alpha + T + t)
    ln_hyp = _log_hyp_term(r + x, b + x, c_, z)
    first = (a + b + x - 1) / (a - 1)
    exponent = ln_hyp + (r + x) * math.log((alpha + T) / (alpha + t + T))
    second = 1.0 - math.exp(min(exponent, _EXP_MAX))
    numerator = first * second
    if x == 0:
        return numerator
    log_odds = math.log(a / (b + x - 1)) + (r + x) * math.log((alpha + T) / (alpha + t_x))
    if log_odds > _EXP_MAX:  # the denominator is inf: the customer is gone
        return 0.0 if math.isfinite(numerator) else math.nan
    return numerator / (1.0 + math.exp(log_odds))


class Purchasing:
    """``p_alive`` and ``expected_purchases`` (horizon ``t``) of one customer (``x``,
    ``t_x``) at many ages ``T``: what does not depend on ``T`` computed once, the rest
    operation for operation as those functions, so the same floats. Their shared
    log odds, ``(r + x) log((alpha + T) / (alpha + t_x)) + log(a / (b + x - 1))``,
    is computed once per age: the two functions add its terms in opposite orders,
    and floating-point addition is commutative (only its association is not).
    """

    def __init__(self, m: BgNbd, t: float, x: int, t_x: float) -> None:
        self.m, self.t, self.x = m, t, x
        self.rx = m.r + x
        self.bx = m.b + x
        self.c = m.a + m.b + x - 1
        self.first = (m.a + m.b + x - 1) / (m.a - 1)
        self.alpha_tx = m.alpha + t_x
        self.alpha_t = m.alpha + t
        # max(x, 1) as p_alive: b + x - 1 only for a repeat buyer (x > 0).
        self.log_ab = math.log(m.a / (m.b + x - 1)) if x else 0.0

    def at(self, T: float) -> tuple[float, float]:
        """``(p_alive(m, x, t_x, T), expected_purchases(m, t, x, t_x, T))``."""
        m, t, x, rx = self.m, self.t, self.x, self.rx
        alpha_T = m.alpha + T
        log_odds = 0.0
        alive = 1.0
        if x:
            log_odds = rx * math.log(alpha_T / self.alpha_tx) + self.log_ab
            alive = _expit(-log_odds)
        if t == 0:
            return alive, 0.0
        z = t / (alpha_T + t)
        ln_hyp = _log_hyp_term(rx, self.bx, self.c, z)
        exponent = ln_hyp + rx * math.log(alpha_T / (self.alpha_t + T))
        numerator = self.first * (1.0 - math.exp(min(exponent, _EXP_MAX)))
        if x == 0:
            return alive, numerator
        if log_odds > _EXP_MAX:
            return alive, 0.0 if math.isfinite(numerator) else math.nan
        return alive, numerator / (1.0 + math.exp(log_odds))


def expected_spend(g: GammaGamma, x: int, mean_spend: float) -> float:
    """Expected mean spend per future purchase (Gamma-Gamma note 025, equation 5).

    A weighted average of the customer's own mean and the population mean
    ``p v / (q - 1)``; with no repeat purchase (``x == 0``) the weight on the
    customer's own mean is zero, so the result is the population mean.
    """
    weight = g.p * x / (g.p * x + g.q - 1)
    population = g.v * g.p / (g.q - 1)
    return (1 - weight) * population + weight * mean_spend


def clv(
    m: BgNbd,
    g: GammaGamma,
    x: int,
    t_x: float,
    T: float,
    mean_spend: float,
    months: int = 12,
    discount_rate: float = 0.01,
    freq_days: float = 30.0,
) -> float:
    """Discounted expected spend over ``months`` months of ``freq_days`` days each.

    As ``lifetimes.GammaGammaFitter.customer_lifetime_value`` with ``freq="D"``:
    each month's expected purchases (a difference of cumulative expectations) times
    the expected spend per purchase, discounted at ``discount_rate`` per month.
    """
    spend = expected_spend(g, x, mean_spend)
    total = 0.0
    before = expected_purchases(m, 0.0, x, t_x, T)
    for step in range(1, months + 1):
        now = expected_purchases(m, step * freq_days, x, t_x, T)
        total += (spend * (now - before)) / (1 + discount_rate) ** step
        before = now
    return total


# --- the same figures over arrays --------------------------------------------------


def p_alive_array(m: BgNbd, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> FloatArray:
    xs = np.asarray(x, dtype=np.float64)
    log_div = (m.r + xs) * np.log((m.alpha + np.asarray(T)) / (m.alpha + np.asarray(t_x)))
    log_div = log_div + np.log(m.a / (m.b + np.maximum(xs, 1) - 1))
    return np.asarray(np.where(xs == 0, 1.0, expit(-log_div)), dtype=np.float64)


def expected_purchases_array(
    m: BgNbd, t: float, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> FloatArray:
    """Per customer through the scalar function: the hypergeometric fallback is
    decided customer by customer, exactly as the stream decides it."""
    xs = np.asarray(x, dtype=np.float64)
    ts, ages = np.asarray(t_x, dtype=np.float64), np.asarray(T, dtype=np.float64)
    return np.array(
        [expected_purchases(m, t, int(xi), ti, Ti) for xi, ti, Ti in zip(xs, ts, ages, strict=True)]
    )


# --- model files -------------------------------------------------------------------

_DECODER: Final = msgspec.json.Decoder(Model)


def dump_model(model: Model) -> bytes:
    return msgspec.json.format(msgspec.json.encode(model), indent=2) + b"\n"


def model_problems(model: Model) -> list[str]:
    """Why ``model`` cannot be used by the scalar functions above (empty if it can)."""
    problems: list[str] = []
    if model.time_unit != TIME_UNIT:
        problems.append(f"time_unit is {model.time_unit!r}; only {TIME_UNIT!r} is supported")
    params: dict[str, float] = {
        f"bgnbd.{k}": getattr(model.bgnbd, k) for k in ("r", "alpha", "a", "b")
    }
    if model.gamma_gamma is not None:
        params.update({f"gamma_gamma.{k}": getattr(model.gamma_gamma, k) for k in ("p", "q", "v")})
    for name, value in params.items():
        if not (math.isfinite(value) and value > 0):
            problems.append(f"{name} must be a finite positive number, got {value!r}")
    if not problems:
        if abs(model.bgnbd.a - 1) < _A_NOT_ONE:
            problems.append(
                f"bgnbd.a is {model.bgnbd.a!r}: expected purchases divide by a - 1, "
                "which must not be 0"
            )
        if model.gamma_gamma is not None and model.gamma_gamma.q <= 1:
            problems.append(
                f"gamma_gamma.q is {model.gamma_gamma.q!r}: the population mean spend "
                "p * v / (q - 1) needs q > 1"
            )
    return problems


def load_model(path: str | Path) -> Model:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    try:
        model = _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ModelError(f"model file {path} is not a valid model: {exc}") from None
    problems = model_problems(model)
    if problems:
        raise ModelError(f"model file {path} cannot be used: " + "; ".join(problems))
    return model
