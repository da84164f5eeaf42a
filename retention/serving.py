"""What a customer-success manager sees of one customer: the serving view.

It is a function of the stored state alone (the last assessment kept in
``state.risk``, reasons recomputed at that same instant), so the view in Redis,
the one served from a worker's table and the one ``redis-rebuild`` writes are the
same bytes for the same state, and a comparison key by key is meaningful.
"""

from __future__ import annotations

from typing import Final

import msgspec

from retention.alerts import OPEN, Lifecycle, dedup_key
from retention.risk import RANK, quick_assess
from retention.state import MONEY_UNIT, CustomerState
from retention.timeutil import Micros, from_micros

#: Tiers listed in the overall at-risk queue (low is "not at risk").
AT_RISK_FROM: Final = RANK["medium"]


class ViewReason(msgspec.Struct, frozen=True):
    code: str
    value: float
    threshold: float


class OpenAlert(msgspec.Struct, frozen=True, kw_only=True):
    dedup_key: str
    status: str  # firing | escalated
    sequence: int
    tier: str | None
    starts_at: str


class CustomerView(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    version: tuple[int, Micros]  # (distinct events applied, time of the assessment)
    assessed_at: str | None
    status: str  # active | at_risk | churned | new
    tier: str | None
    risk_score: float | None
    reasons: list[ViewReason]
    value_at_risk: float
    clv: float
    purchases: int
    spend: float
    last_purchase: str | None
    last_activity: str | None
    segment: str | None
    plan: str | None
    alert: OpenAlert | None

    @property
    def queue_tier(self) -> str | None:
        """The tier whose queue lists this customer (None once churned)."""
        return None if self.status == "churned" else self.tier

    @property
    def at_risk(self) -> bool:
        return self.queue_tier is not None and RANK[self.queue_tier] >= AT_RISK_FROM


def _time(moment: Micros | None) -> str | None:
    return None if moment is None else from_micros(moment).isoformat().replace("+00:00", "Z")


def customer_view(state: CustomerState, lifecycle: Lifecycle) -> CustomerView:
    mark = state.risk
    reasons: list[ViewReason] = []
    if mark is not None:
        quick = quick_assess(state, mark.at, lifecycle.config, lifecycle.model, lifecycle.window)
        if quick is not None:
            reasons = [ViewReason(r.code, r.value, r.threshold) for r in quick.reasons]
    alert = None
    if mark is not None and mark.status in OPEN and mark.episode is not None:
        alert = OpenAlert(
            dedup_key=dedup_key(state.customer_id, mark.episode),
            status=mark.status,
            sequence=mark.sequence,
            tier=mark.alerted_tier,
            starts_at=_time(mark.episode) or "",
        )
    if mark is None or state.last_activity_at is None:
        status = "new"
    elif mark.status == "churned":
        status = "churned"
    elif RANK[mark.tier] >= AT_RISK_FROM:
        status = "at_risk"
    else:
        status = "active"
    assessed = mark is not None and state.last_activity_at is not None
    return CustomerView(
        customer_id=state.customer_id,
        version=state.version,
        assessed_at=_time(mark.at) if assessed and mark else None,
        status=status,
        tier=mark.tier if assessed and mark else None,
        risk_score=round(mark.score, 6) if assessed and mark else None,
        reasons=reasons,
        value_at_risk=mark.value_at_risk / 100 if mark else 0.0,
        clv=mark.clv / 100 if mark else 0.0,
        purchases=state.purchases,
        spend=state.spend / MONEY_UNIT,
        last_purchase=_time(state.last_purchase_at),
        last_activity=_time(state.last_activity_at),
        segment=state.segment,
        plan=state.plan,
        alert=alert,
    )
