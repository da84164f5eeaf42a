"""Churn risk: a score in [0, 1], tiers with hysteresis, and the evidence behind them.

The score is a logistic model of the probability that the customer makes no
purchase in the next ``horizon_days``. Its inputs are few and readable (days since
last activity, repeat purchases, total spend, BG/NBD expected purchases, recent
drops against the customer's own baseline, recent bad experiences), so every
weight can be fitted on data (``retention.calibrate``) and every reason shown to a
customer-success manager is a measured value next to the threshold it crossed.

Reasons and score are deliberately separate: the weights decide ranking, the
thresholds decide what is worth saying. A one-time buyer, whom BG/NBD calls alive
with probability 1, still scores high once overdue: recency carries most of the
weight and is measured against a population rhythm when the customer has none.

All times are integer microseconds passed in by the caller; nothing here reads a
clock.
"""

from __future__ import annotations

import bisect
import functools
import math
from typing import Final

import msgspec
from mypy_extensions import mypyc_attr

from retention import history
from retention.model import Model, clv, expected_purchases, p_alive

# The configuration's names, re-exported: callers import them from here.
from retention.risk_config import (
    DEFAULTS_PATH as DEFAULTS_PATH,
)
from retention.risk_config import (
    FEATURES as FEATURES,
)
from retention.risk_config import (
    RANK as RANK,
)
from retention.risk_config import (
    TIERS as TIERS,
)
from retention.risk_config import (
    RiskConfig as RiskConfig,
)
from retention.risk_config import (
    RiskConfigError as RiskConfigError,
)
from retention.risk_config import (
    Thresholds as Thresholds,
)
from retention.risk_config import (
    Tier as Tier,
)
from retention.risk_config import (
    TierCuts as TierCuts,
)
from retention.risk_config import (
    Weights as Weights,
)
from retention.risk_config import (
    dump_risk_config as dump_risk_config,
)
from retention.risk_config import (
    load_risk_config as load_risk_config,
)
from retention.state import MONEY_UNIT, CustomerState, day_of
from retention.timeutil import DAY, Micros

#: ``interval`` not given: work it out from the state (None is a valid interval).
UNKNOWN: Final = -1.0
EXPECTED_FLOOR: Final = 0.01  # log(expected purchases + floor): finite for zero


@mypyc_attr(native_class=False)
class Reason(msgspec.Struct, frozen=True):
    code: str
    value: float
    threshold: float


@mypyc_attr(native_class=False)
class Evidence(msgspec.Struct, kw_only=True):
    """What the score and reasons are computed from, as of one instant."""

    recency_days: float
    rhythm_days: float  # own typical interval, or the configured default
    own_rhythm: bool
    x: int  # repeat purchase days
    spend: float  # total, currency units
    frequency_ratio: float | None  # recent purchase days / baseline expectation
    spend_ratio: float | None  # recent mean spend per purchase day / baseline
    experiences: int  # bad experiences in the recent window
    bad_support: int
    nps: int | None
    csat: int | None
    p_alive: float | None
    expected: float | None  # expected purchases in the horizon (BG/NBD)
    cancelled: bool
    lapsed: bool
    age_days: float


@mypyc_attr(native_class=False)
class Assessment(msgspec.Struct, kw_only=True):
    score: float
    raw_tier: Tier
    reasons: list[Reason]
    p_alive: float | None
    expected: float | None
    clv: float
    value_at_risk: float
    cancelled: bool
    lapsed: bool


def evidence(
    state: CustomerState,
    now: Micros,
    config: RiskConfig,
    model: Model | None,
    window: Micros | None,
    interval: float | None = UNKNOWN,
) -> Evidence | None:
    """None for a customer with no signup or purchase yet (nothing to be at risk of).

    ``interval`` is ``state.typical_interval_days()`` when the caller has it: an
    assessment needs it for the score and again for the due search.
    """
    last = history.last_activity_at(state)
    if last is None:
        return None
    recency = max(0.0, (now - last) / DAY)
    days = state.days
    if interval == UNKNOWN:
        interval = history.typical_interval_days(state)
    x = max(len(days) - 1, 0)
    recent_from = now - round(config.recent_days * DAY)
    frequency_ratio = spend_ratio = None
    if days:
        split = bisect.bisect_left(days, -(-recent_from // DAY), key=day_of)
        base, recent = days[:split], days[split:]
        span = (recent_from - days[0].day * DAY) / DAY
        # Only for a customer still buying: one who stopped altogether is recency's
        # case, and counting them here too would let the weight of a slowdown
        # (fitted on customers who slow down) rank them against one-time buyers.
        if recent and len(base) >= 2 and span >= config.recent_days:
            expected_recent = len(base) / span * config.recent_days
            frequency_ratio = len(recent) / expected_recent
        if base and recent:
            base_mean = sum(d.spend for d in base) / len(base)
            if base_mean > 0:
                spend_ratio = sum(d.spend for d in recent) / len(recent) / base_mean
    experiences = bad_support = 0
    for negative in reversed(state.negatives):
        if negative.at <= recent_from:
            break
        if negative.at <= now:
            experiences += 1
            bad_support += negative.code == "bad_support"
    alive = expected = None
    age = 0.0
    if days:
        age = (now - days[0].day * DAY) / DAY
        if model is not None:
            t_x = float(days[-1].day - days[0].day)
            alive = p_alive(model.bgnbd, x, t_x, age)
            expected = expected_purchases(model.bgnbd, config.horizon_days, x, t_x, age)
    cancel = state.last_cancel_at
    return Evidence(
        recency_days=recency,
        rhythm_days=interval if interval else config.default_interval_days,
        own_rhythm=interval is not None,
        x=x,
        spend=state.spend / MONEY_UNIT,
        frequency_ratio=frequency_ratio,
        spend_ratio=spend_ratio,
        experiences=experiences,
        bad_support=bad_support,
        nps=None if state.nps is None else _int(state.nps.value),
        csat=None if state.csat is None else _int(state.csat.value),
        p_alive=alive,
        expected=expected,
        cancelled=cancel is not None and cancel >= last,
        lapsed=window is not None and now >= last + window,
        age_days=age,
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def features(ev: Evidence, config: RiskConfig) -> tuple[float, ...]:
    """The model's inputs, in FEATURES order."""
    th = config.thresholds
    return (
        math.log1p(ev.recency_days),
        math.log1p(ev.x),
        math.log1p(ev.spend),
        math.log((ev.expected or 0.0) + EXPECTED_FLOOR),
        0.0 if ev.frequency_ratio is None else max(0.0, 1.0 - ev.frequency_ratio),
        0.0 if ev.spend_ratio is None else max(0.0, 1.0 - ev.spend_ratio),
        math.log1p(ev.experiences),
        float(ev.nps is not None and ev.nps <= th.detractor_nps),
        float(ev.csat is not None and ev.csat <= th.low_csat),
    )


def weights_for(ev: Evidence, config: RiskConfig) -> Weights:
    return config.with_model if ev.expected is not None else config.plain


def score(ev: Evidence, config: RiskConfig) -> float:
    if ev.cancelled:
        return 1.0
    weights = weights_for(ev, config)
    z = weights.intercept
    for w, f in zip(_vector(weights), features(ev, config), strict=True):
        z += w * f
    return _sigmoid(z)


@functools.lru_cache(maxsize=64)
def _vector(weights: Weights) -> tuple[float, ...]:
    """Weights in FEATURES order, computed once per weight set (scores run per event)."""
    return weights.vector()


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def reasons(ev: Evidence, config: RiskConfig, window: Micros | None) -> list[Reason]:
    th = config.thresholds
    out: list[Reason] = []
    if ev.cancelled:
        out.append(Reason("cancelled", 1.0, 1.0))
    if ev.lapsed and window is not None:
        out.append(Reason("lapsed", _r(ev.recency_days), _r(window / DAY)))
    overdue = ev.recency_days / ev.rhythm_days
    if overdue >= th.overdue_ratio:
        out.append(Reason("overdue", _r(overdue), th.overdue_ratio))
    if ev.frequency_ratio is not None and ev.frequency_ratio <= th.frequency_ratio:
        out.append(Reason("frequency_drop", _r(ev.frequency_ratio), th.frequency_ratio))
    if ev.spend_ratio is not None and ev.spend_ratio <= th.spend_ratio:
        out.append(Reason("spend_drop", _r(ev.spend_ratio), th.spend_ratio))
    if ev.nps is not None and ev.nps <= th.detractor_nps:
        out.append(Reason("detractor", ev.nps, th.detractor_nps))
    if ev.csat is not None and ev.csat <= th.low_csat:
        out.append(Reason("low_csat", ev.csat, th.low_csat))
    if ev.bad_support >= th.bad_support:
        out.append(Reason("bad_support", ev.bad_support, th.bad_support))
    if ev.experiences >= th.bad_experiences:
        out.append(Reason("bad_experiences", ev.experiences, th.bad_experiences))
    if ev.p_alive is not None and ev.x > 0 and ev.p_alive < th.p_alive:
        out.append(Reason("p_alive", _r(ev.p_alive), th.p_alive))
    if ev.expected is not None and ev.expected < th.expected_purchases:
        out.append(Reason("expected_purchases", _r(ev.expected), th.expected_purchases))
    return out


def _r(value: float) -> float:
    return round(value, 4)


def raw_tier(value: float, config: RiskConfig) -> Tier:
    return TIERS[bisect.bisect_right(config.tiers.cuts(), value)]


def tier_with_hysteresis(value: float, previous: str, config: RiskConfig) -> Tier:
    """Up as soon as a cut is reached; down only ``hysteresis`` below it."""
    up = raw_tier(value, config)
    if RANK[up] >= RANK[previous]:
        return up
    down = TIERS[bisect.bisect_right(config.tiers.lowered(), value)]
    return down if RANK[down] < RANK[previous] else TIERS[RANK[previous]]


@functools.lru_cache(maxsize=256)
def annuity(months: int, rate: float) -> float:
    """Present value of 1 per month for ``months`` months at a monthly ``rate``."""
    return sum((1.0 + rate) ** -i for i in range(1, months + 1))


def predicted_clv(
    state: CustomerState, ev: Evidence, config: RiskConfig, model: Model | None
) -> float:
    """Discounted value of the next ``clv_months`` months: purchases + subscription.

    With a model, purchases follow BG/NBD and Gamma-Gamma (as ``lifetimes``); without
    one, the customer's own spend per month so far continues.
    """
    return _lifetime(state, ev.x, ev.age_days, config, model)


def _lifetime(
    state: CustomerState, x: int, age_days: float, config: RiskConfig, model: Model | None
) -> float:
    """``predicted_clv`` from the two figures of the evidence it needs (``x``, the
    repeat purchase days, and ``age_days``), so the lifecycle can value a customer
    without building the whole evidence."""
    months, rate = config.clv_months, config.discount_rate
    days = state.days
    value = 0.0
    if days:
        if model is not None and model.gamma_gamma is not None:
            mean = (state.spend - days[0].spend) / x / MONEY_UNIT if x else 0.0
            t_x = float(days[-1].day - days[0].day)
            value = clv(model.bgnbd, model.gamma_gamma, x, t_x, age_days, mean, months, rate)
        else:
            spend = state.spend / MONEY_UNIT
            value = spend / max(age_days / 30.0, 1.0) * annuity(months, rate)
    if state.subscribed:
        value += state.monthly_fee / MONEY_UNIT * annuity(months, rate)
    return value


def forward_cost(state: CustomerState, ev: Evidence, config: RiskConfig) -> float:
    """Cost to serve over the CLV horizon, at the customer's own cost per month so far."""
    return _cost(state, ev.age_days, config)


def _cost(state: CustomerState, age_days: float, config: RiskConfig) -> float:
    if not state.cost_to_serve:
        return 0.0
    per_month = state.cost_to_serve / MONEY_UNIT / max(age_days / 30.0, 1.0)
    return per_month * annuity(config.clv_months, config.discount_rate)


def value_figures(
    state: CustomerState,
    risk: float,
    x: int,
    age_days: float,
    config: RiskConfig,
    model: Model | None,
) -> tuple[float, float]:
    """CLV and value at risk of a customer scored ``risk``: ``complete``'s figures
    (it calls this), from the evidence's ``x`` and ``age_days`` alone."""
    lifetime = _lifetime(state, x, age_days, config, model)
    return lifetime, risk * lifetime - _cost(state, age_days, config)


@mypyc_attr(native_class=False)
class Quick(msgspec.Struct, kw_only=True):
    """Score and reasons without the value figures (CLV costs ~100x more)."""

    evidence: Evidence
    score: float
    reasons: list[Reason]


def quick_assess(
    state: CustomerState,
    now: Micros,
    config: RiskConfig,
    model: Model | None,
    window: Micros | None,
    interval: float | None = UNKNOWN,
) -> Quick | None:
    ev = evidence(state, now, config, model, window, interval)
    if ev is None:
        return None
    return Quick(evidence=ev, score=score(ev, config), reasons=reasons(ev, config, window))


def complete(
    state: CustomerState, quick: Quick, config: RiskConfig, model: Model | None
) -> Assessment:
    ev = quick.evidence
    lifetime, at_risk = value_figures(state, quick.score, ev.x, ev.age_days, config, model)
    return Assessment(
        score=quick.score,
        raw_tier=raw_tier(quick.score, config),
        reasons=quick.reasons,
        p_alive=ev.p_alive,
        expected=ev.expected,
        clv=lifetime,
        value_at_risk=at_risk,
        cancelled=ev.cancelled,
        lapsed=ev.lapsed,
    )


def assess(
    state: CustomerState,
    now: Micros,
    config: RiskConfig,
    model: Model | None,
    window: Micros | None,
) -> Assessment | None:
    quick = quick_assess(state, now, config, model, window)
    return None if quick is None else complete(state, quick, config, model)


def quick_score(
    state: CustomerState,
    now: Micros,
    config: RiskConfig,
    model: Model | None,
    window: Micros | None,
) -> tuple[float, bool, bool] | None:
    """Score, whether the customer has churned (cancelled or lapsed), and whether any
    reason holds: what the due search needs, without the value figures."""
    ev = evidence(state, now, config, model, window)
    if ev is None:
        return None
    return score(ev, config), ev.cancelled or ev.lapsed, bool(reasons(ev, config, window))
