"""What one customer looks like as of an instant: the replay's per-customer line.

x, t_x and T follow DESIGN section 8 exactly (days, one purchase per UTC day), so
the same numbers feed BG/NBD here and in ``lifetimes``.
"""

from __future__ import annotations

from typing import Any

from retention.state import MONEY_UNIT, CustomerState
from retention.timeutil import DAY, Micros, iso


def customer_summary(state: CustomerState, as_of: Micros, window: Micros | None) -> dict[str, Any]:
    days = state.days
    x: int | None = None
    t_x: int | None = None
    age: float | None = None
    mean_repeat_spend: float | None = None
    if days:
        x = len(days) - 1
        t_x = days[-1].day - days[0].day
        age = (as_of - days[0].day * DAY) / DAY
        if x:
            mean_repeat_spend = (state.spend - days[0].spend) / x / MONEY_UNIT
    return {
        "customer_id": state.customer_id,
        "segment": state.segment,
        "plan": state.plan,
        "acquired_at": iso(state.acquired_at),
        "last_activity_at": iso(state.last_activity_at),
        "last_purchase_at": iso(state.last_purchase_at),
        "purchases": state.purchases,
        "x": x,
        "t_x": t_x,
        "T": age,
        "total_spend": state.spend / MONEY_UNIT,
        "mean_repeat_spend": mean_repeat_spend,
        "typical_interval_days": state.typical_interval_days(),
        "active": state.active_at(as_of, window),
        "subscribed": state.subscribed,
        "monthly_fee": state.monthly_fee / MONEY_UNIT,
        "last_cancel_at": iso(state.last_cancel_at),
        "nps": None if state.nps is None else state.nps.value,
        "csat": None if state.csat is None else state.csat.value,
        "support": None if state.support is None else state.support.value,
        "bad_experiences": len(state.negatives),
    }
