"""Questions about one customer's history, asked several times per event.

``CustomerState``'s methods of the same names call these; the hot modules (the
period engine, the scorer, the lifecycle) call them directly, so that compiled
(``retention/compiled.py``) they run as C calls rather than Python methods of a
msgspec Struct, which mypyc cannot compile. Operation for operation what the
methods did, so results are unchanged.
"""

from __future__ import annotations

import bisect
import operator
from typing import TYPE_CHECKING

from retention.timeutil import DAY, Micros

if TYPE_CHECKING:
    from retention.state import CustomerState

_day = operator.attrgetter("day")


def earliest(a: int | None, b: int | None) -> int | None:
    """The earlier of two optional times."""
    if a is None:
        return b
    return a if b is None or a <= b else b


def latest(a: int | None, b: int | None) -> int | None:
    """The later of two optional times."""
    if a is None:
        return b
    return a if b is None or a >= b else b


def acquired_at(state: CustomerState) -> Micros | None:
    """The earliest activity (signup or purchase): when the customer was acquired."""
    return earliest(state.first_signup_at, state.first_purchase_at)


def last_activity_at(state: CustomerState) -> Micros | None:
    return latest(state.last_signup_at, state.last_purchase_at)


def last_activity_before(state: CustomerState, moment: Micros) -> Micros | None:
    """Latest signup or purchase strictly before ``moment`` (a UTC midnight)."""
    last = None
    for mark in reversed(state.signups):
        if mark.at < moment:
            last = mark.at
            break
    days = state.days
    index = bisect.bisect_left(days, moment // DAY, key=_day)
    if index:
        purchase = days[index - 1].last
        if last is None or purchase > last:
            last = purchase
    return last


def active_before(state: CustomerState, moment: Micros, window: Micros | None) -> bool:
    """DESIGN section 6's "active at ``moment``", from history (``moment`` a midnight)."""
    last = last_activity_before(state, moment)
    if last is None or (window is not None and last < moment - window):
        return False
    for mark in reversed(state.cancels):
        if mark.at < moment:
            return mark.at < last
    return True


def fee_at(state: CustomerState, moment: Micros) -> int:
    """Monthly fee of the subscription running at ``moment`` (0 if none)."""
    fee: int | None = None
    start: Micros = 0
    for mark in reversed(state.signups):
        if mark.at < moment and mark.fee is not None:
            fee = mark.fee
            start = mark.at
            break
    if not fee:
        return 0
    for cancel in state.cancels:
        if start <= cancel.at < moment:
            return 0
    return fee


def typical_interval_days(state: CustomerState) -> float | None:
    """Median gap between distinct purchase days: the customer's own rhythm."""
    days = state.days
    if len(days) < 2:
        return None
    numbers = [d.day for d in days]
    gaps = sorted(map(operator.sub, numbers[1:], numbers))
    mid = len(gaps) // 2
    return float(gaps[mid]) if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2
