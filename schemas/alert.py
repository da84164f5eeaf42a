"""The alert record on churnwatch.alerts (DESIGN section 9), keyed by customer_id.

Consumers upsert on (dedup_key, sequence): ``dedup_key`` names one episode of one
customer and is the same in every replay of the same input; ``sequence`` grows with
every alert of that customer, so the latest state of an episode is the highest
sequence seen. Processing is at-least-once: an alert may arrive twice, saying the
same, and differing at most in ``observed_at`` and ``source`` (after a crash, a
re-read batch may raise it again while processing another message).
"""

from __future__ import annotations

from typing import Final, Literal

from msgspec import Struct

from schemas.events import Timestamp

ALERT_SCHEMA_VERSION: Final = 1
AlertStatus = Literal["firing", "escalated", "resolved", "churned"]
AlertTier = Literal["low", "medium", "high", "critical"]


class AlertReason(Struct, frozen=True, kw_only=True):
    code: str
    value: float
    threshold: float


class AlertSource(Struct, frozen=True, kw_only=True):
    """The input message whose processing made the transition (a clock tick when the
    customer did nothing and time alone raised the risk)."""

    topic: str
    partition: int
    offset: int
    event_id: str | None


class AlertRecord(Struct, frozen=True, kw_only=True):
    schema_version: int = ALERT_SCHEMA_VERSION
    alert_id: str
    dedup_key: str
    sequence: int
    status: AlertStatus
    customer_id: str
    tier: AlertTier
    risk_score: float
    reasons: list[AlertReason]
    value_at_risk: float
    clv: float
    segment: str | None
    # Always aware (UTC): the published schema then says RFC 3339 ``date-time``.
    starts_at: Timestamp
    at: Timestamp
    observed_at: Timestamp
    source: AlertSource
