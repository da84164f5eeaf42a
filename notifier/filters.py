"""Which alerts a destination is shown, and in what role.

Filters select *episodes* (one ``dedup_key``: firing → escalated … → resolved or
churned), not single records: a team told of an episode must hear how it ends,
whatever the tier of the closing record (a ``resolved`` alert carries the lower
tier the customer fell back to, which a ``tiers: [high, critical]`` filter would
otherwise drop). So:

- an alert of an episode the destination was *told* of is a **follow-up**: sent
  when its status is among the destination's statuses, never counted against the
  capacity;
- an alert of any other episode is an **opening** candidate when it passes every
  filter (tiers, segments, statuses, minimum value at risk) and is not ``resolved``
  (nothing to act on in an episode one never heard of); openings compete for the
  daily capacity (capacity.py). An escalation of an episode whose firing was held
  back is thus a new chance for it: it now competes at its higher value at risk.
"""

from __future__ import annotations

from enum import Enum

from notifier.config import Filters
from schemas.alert import AlertRecord


class Role(Enum):
    SKIP = "skip"
    OPENING = "opening"
    FOLLOW_UP = "follow_up"


def passes(filters: Filters, alert: AlertRecord) -> bool:
    """Whether ``alert`` passes every filter (a None filter passes everything)."""
    if filters.statuses is not None and alert.status not in filters.statuses:
        return False
    if filters.tiers is not None and alert.tier not in filters.tiers:
        return False
    if filters.segments is not None and (alert.segment or "none") not in filters.segments:
        return False
    return filters.min_value_at_risk is None or alert.value_at_risk >= filters.min_value_at_risk


def role(filters: Filters, alert: AlertRecord, told: bool) -> Role:
    """The alert's role for a destination that was (``told``) or was not told of its
    episode."""
    if told:
        wanted = filters.statuses is None or alert.status in filters.statuses
        return Role.FOLLOW_UP if wanted else Role.SKIP
    if alert.status == "resolved" or not passes(filters, alert):
        return Role.SKIP
    return Role.OPENING
