"""Batch recomputation of DESIGN section 6 from a list of events, for tests.

It shares nothing with ``retention/``'s period engine: every figure is computed
from scratch per period and customer by the definitions. Only the calendar labels,
the money unit and the documented tie-break for simultaneous signups are common.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from retention.apply import id_hash, money
from retention.calendar import Calendar
from retention.periods import Figures
from retention.timeutil import to_micros
from schemas.events import Cancellation, Event, Feedback, Purchase, Signup


@dataclass
class Truth:
    figures: Figures
    label: str


def batch(events: list[Event], calendar: Calendar, window: int | None, until: int) -> list[Truth]:
    """DESIGN section 6 from scratch, sharing nothing with the engine but the calendar."""
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)

    def times(items: list[Event], kinds: tuple[type, ...], before: int) -> list[int]:
        return [to_micros(e.occurred_at) for e in items if isinstance(e, kinds)
                and to_micros(e.occurred_at) < before]  # fmt: skip

    def active(items: list[Event], t: int) -> bool:
        acts = times(items, (Signup, Purchase), t)
        if not acts:
            return False
        last = max(acts)
        cancels = times(items, (Cancellation,), t)
        return (window is None or last >= t - window) and (not cancels or max(cancels) < last)

    def fee_at(items: list[Event], t: int) -> int:
        # Simultaneous signups: the documented tie-break, a hash of the event id.
        signups = sorted((to_micros(e.occurred_at), id_hash(e.event_id), e) for e in items
                         if isinstance(e, Signup) and e.monthly_fee is not None
                         and to_micros(e.occurred_at) < t)  # fmt: skip
        if not signups or not signups[-1][2].monthly_fee:
            return 0
        since = signups[-1][0]
        if any(since <= c < t for c in times(items, (Cancellation,), t)):
            return 0
        return money(signups[-1][2].monthly_fee)

    first = min(to_micros(e.occurred_at) for e in events)
    start = calendar.start_of(first)
    out = []
    while calendar.next_start(start) <= until:
        end = calendar.next_start(start)
        f = Figures()
        for items in by_customer.values():
            a, b = active(items, start), active(items, end)
            f.active_start += a
            f.active_end += b
            f.retained += a and b
            acquired = min(times(items, (Signup, Purchase), 1 << 62), default=None)
            f.new += acquired is not None and start <= acquired < end
            bought = [e for e in items if isinstance(e, Purchase)
                      and start <= to_micros(e.occurred_at) < end]  # fmt: skip
            f.buyers += len(bought) >= 1
            f.repeat_buyers += len(bought) >= 2
            f.revenue += sum(money(e.amount) for e in bought)
            fee = fee_at(items, start)
            f.mrr_start += fee
            cancelled = any(start <= c < end for c in times(items, (Cancellation,), end))
            f.mrr_churned += fee if cancelled else 0
            for e in items:
                if isinstance(e, Feedback) and start <= to_micros(e.occurred_at) < end:
                    if e.kind == "nps":
                        assert e.score is not None
                        f.nps_promoters += e.score >= 9
                        f.nps_passives += 7 <= e.score <= 8
                        f.nps_detractors += e.score <= 6
                    elif e.kind == "csat":
                        assert e.score is not None
                        f.csat_responses += 1
                        f.csat_satisfied += e.score >= 4
        out.append(Truth(f, calendar.label(start)))
        start = end
    return out


def cohorts(events: list[Event], calendar: Calendar) -> dict[str, list[int]]:
    """Acquisition month x month offset: customers with a purchase in that month."""
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)
    cells: dict[int, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for customer, items in by_customer.items():
        acts = [to_micros(e.occurred_at) for e in items if isinstance(e, (Signup, Purchase))]
        if not acts:
            continue
        acquired = calendar.month_index(min(acts))
        for e in items:
            if isinstance(e, Purchase):
                cells[acquired][calendar.month_index(to_micros(e.occurred_at)) - acquired].add(
                    customer
                )
    out = {}
    for acquired in sorted(cells):
        row = cells[acquired]
        label = f"{acquired // 12:04d}-{acquired % 12 + 1:02d}"
        out[label] = [len(row.get(k, ())) for k in range(max(row) + 1)]
    return out


def rolling(events: list[Event], window: int | None, day: int) -> dict[str, Any]:
    """Active customers on ``day`` (activity window reaching its start), NPS/CSAT over
    the 90 days up to it, and customers by subscription status after all events."""
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)
    start = day * 86_400_000_000
    active = 0
    statuses: dict[str, int] = defaultdict(int)
    for items in by_customer.values():
        acts = [to_micros(e.occurred_at) for e in items if isinstance(e, (Signup, Purchase))]
        cancels = [to_micros(e.occurred_at) for e in items if isinstance(e, Cancellation)]
        if acts:
            last = max(acts)
            lapses = window is None or last + window >= start
            active += lapses and (not cancels or max(cancels) < last)
        signups = [e for e in items if isinstance(e, Signup) and e.monthly_fee is not None]
        fees = sorted(
            (to_micros(e.occurred_at), id_hash(e.event_id), e.monthly_fee) for e in signups
        )
        if fees and fees[-1][2]:
            cancelled = any(c >= fees[-1][0] for c in cancels)
            statuses["cancelled" if cancelled else "subscribed"] += 1
        elif acts or cancels or items:
            statuses["none"] += 1
    feedback = [0] * 5
    for e in events:
        if isinstance(e, Feedback) and e.score is not None:
            d = to_micros(e.occurred_at) // 86_400_000_000
            if day - 90 < d <= day:
                if e.kind == "nps":
                    feedback[0 if e.score >= 9 else 1 if e.score >= 7 else 2] += 1
                elif e.kind == "csat":
                    feedback[3] += e.score >= 4
                    feedback[4] += 1
    return {"active": active, "feedback": feedback, "statuses": dict(statuses)}
