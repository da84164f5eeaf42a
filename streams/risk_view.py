"""A customer's churn risk as of an instant, for replay output and the backtest.

The workers keep, per customer, the last assessment and the alert lifecycle; an
assessment is made at each event and whenever a due time passes. A replay that
asks "as of T" gets the assessment at exactly T from the same function and the same
model and configuration the workers used, with the tier continued from the
worker's last tier (so hysteresis is respected) and the worker's alert state.
"""

from __future__ import annotations

from typing import Any

from retention.alerts import Lifecycle
from retention.model import expected_purchases
from retention.risk import tier_with_hysteresis
from retention.state import CustomerState
from retention.timeutil import DAY, Micros

EXPECTED_DAYS = 90  # the horizon of the published ``expected_purchases_90d``


def risk_fields(state: CustomerState, as_of: Micros, lifecycle: Lifecycle) -> dict[str, Any]:
    assessment = lifecycle.assess(state, as_of)
    mark = state.risk
    if assessment is None:
        return {
            "p_alive": None,
            "expected_purchases_90d": None,
            "predicted_clv": None,
            "risk_score": None,
            "tier": None,
            "reasons": [],
            "value_at_risk": None,
            "alert_status": None if mark is None else mark.status,
            "alert_sequence": 0 if mark is None else mark.sequence,
        }
    previous = "low" if mark is None else mark.tier
    tier = tier_with_hysteresis(assessment.score, previous, lifecycle.config)
    expected = None
    model = lifecycle.model
    if model is not None and state.days:
        days = state.days
        expected = expected_purchases(
            model.bgnbd,
            EXPECTED_DAYS,
            len(days) - 1,
            float(days[-1].day - days[0].day),
            (as_of - days[0].day * DAY) / DAY,
        )
    return {
        "p_alive": assessment.p_alive,
        "expected_purchases_90d": expected,
        "predicted_clv": round(assessment.clv, 4),
        "risk_score": round(assessment.score, 6),
        "tier": tier,
        "reasons": [
            {"code": r.code, "value": r.value, "threshold": r.threshold} for r in assessment.reasons
        ],
        "value_at_risk": round(assessment.value_at_risk, 4),
        "alert_status": None if mark is None else mark.status,
        "alert_sequence": 0 if mark is None else mark.sequence,
    }
