"""Folding one validated event into a customer's state.

``apply`` is the only writer of ``CustomerState``. It is idempotent for events it
has recently seen (by ``event_id``) and commutative otherwise, which is what lets
the worker run at-least-once and accept events of one customer arriving out of
order across topics.
"""

from __future__ import annotations

import bisect
import operator
from dataclasses import dataclass
from hashlib import blake2b
from typing import Final

from retention.state import (
    MONEY_UNIT,
    CustomerState,
    Home,
    Latest,
    Mark,
    Negative,
    PurchaseDay,
    Seen,
    day_of,
    earliest,
    latest,
)
from retention.timeutil import DAY, Micros, to_micros
from schemas.events import Cancellation, Event, Feedback, Purchase, Signup

DETRACTOR_MAX: Final = 6  # NPS 0-6
PROMOTER_MIN: Final = 9  # NPS 9-10
LOW_CSAT_MAX: Final = 2  # CSAT 1-2 counts as a bad experience


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of ``apply``; defaults documented in the README's configuration table.

    ``dedup_ids`` bounds how many event ids a customer remembers per event type;
    0 (the default) remembers them all. Redeliveries after a worker restart and
    producer retries are recent, but a source that re-sends its whole history (a
    connector reset, a replay into a live topic) is not: only remembering every id
    makes any duplicate harmless, at about 30 bytes per event of state. With a bound,
    a duplicate is recognised while its original is among the customer's
    ``dedup_ids`` most recent events of its type (by event time).
    """

    dedup_ids: int = 0
    negatives: int = 8
    marks: int = 8  # signups and cancellations remembered for period figures
    lateness: Micros = 6 * 3600 * 1_000_000


DEFAULT_POLICY: Final = Policy()


@dataclass(frozen=True, slots=True)
class Applied:
    state: CustomerState
    duplicate: bool
    late: bool


def id_hash(event_id: str) -> int:
    """A stable 63-bit digest of an event id (Python's ``hash`` is salted per process)."""
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


def money(amount: float) -> int:
    return round(amount * MONEY_UNIT)


def new_state(customer_id: str) -> CustomerState:
    return CustomerState(customer_id=customer_id)


def apply(
    state: CustomerState | None,
    event: Event,
    now: Micros,
    policy: Policy = DEFAULT_POLICY,
    *,
    at: Micros | None = None,
    tie: int | None = None,
) -> Applied:
    """Fold ``event`` into ``state`` (which it takes over and may modify in place).

    ``now`` is the partition's event-time watermark: an event older than
    ``now - policy.lateness`` is still applied but reported as late, so the
    caller can leave closed periods alone. ``at`` and ``tie``, the event's time and
    ``id_hash``, save working them out again when the caller has them.
    """
    if state is None:
        state = new_state(event.customer_id)
    if at is None:
        at = to_micros(event.occurred_at)
    if tie is None:
        tie = id_hash(event.event_id)
    seen = state.seen
    for item in seen:
        if item.id_hash == tie:
            return Applied(state, duplicate=True, late=False)
    _remember(seen, Seen(at, tie, str(event.__struct_config__.tag)), policy.dedup_ids)
    state.events += 1
    late = at < now - policy.lateness
    if isinstance(event, Purchase):
        _purchase(state, event, at)
    elif isinstance(event, Signup):
        _signup(state, event, at, tie, policy)
    elif isinstance(event, Cancellation):
        _cancellation(state, event, at, tie, policy)
    elif isinstance(event, Feedback):
        _feedback(state, event, at, tie, policy)
    else:  # pragma: no cover - the decoder only produces the four kinds
        raise TypeError(f"unknown event {type(event).__name__}")
    return Applied(state, duplicate=False, late=late)


# Sort keys as attrgetters, which build the (time, tie) tuples in C.
_SEEN_ORDER: Final = operator.attrgetter("at", "id_hash")
_ORDER: Final = operator.attrgetter("at", "tie")


def _remember(seen: list[Seen], item: Seen, capacity: int) -> None:
    # Keep, per event type, the ``capacity`` greatest (time, hash): a set independent
    # of arrival order. Per type, because a worker may read one input topic far ahead
    # of another (in a replay, days ahead): a shared bound would let a customer's
    # purchases push out the id of a feedback event whose duplicate is still coming.
    bisect.insort(seen, item, key=_SEEN_ORDER)
    if not capacity:
        return
    same = [s for s in seen if s.kind == item.kind]
    if len(same) > capacity:
        seen.remove(same[0])


def _newer(current: Latest | None, at: Micros, tie: int) -> bool:
    return current is None or (at, tie) > (current.at, current.tie)


def _purchase(state: CustomerState, event: Purchase, at: Micros) -> None:
    spend = money(event.amount)
    state.purchases += 1
    state.spend += spend
    if event.cost_to_serve is not None:
        state.cost_to_serve += money(event.cost_to_serve)
    state.first_purchase_at = earliest(state.first_purchase_at, at)
    state.last_purchase_at = latest(state.last_purchase_at, at)
    day = at // DAY
    days = state.days
    index = bisect.bisect_left(days, day, key=day_of)
    if index < len(days) and days[index].day == day:
        days[index].count += 1
        days[index].spend += spend
        days[index].last = max(days[index].last, at)
    else:
        days.insert(index, PurchaseDay(day, 1, spend, at))


def _mark(marks: list[Mark], mark: Mark, capacity: int) -> None:
    bisect.insort(marks, mark, key=_ORDER)
    if len(marks) > capacity:
        del marks[0]


def _signup(state: CustomerState, event: Signup, at: Micros, tie: int, policy: Policy) -> None:
    state.first_signup_at = earliest(state.first_signup_at, at)
    state.last_signup_at = latest(state.last_signup_at, at)
    fee = None if event.monthly_fee is None else money(event.monthly_fee)
    _mark(state.signups, Mark(at, tie, fee), policy.marks)
    _home(state, event, at, tie)
    if _newer(state.profile, at, tie):
        state.profile = Latest(at, tie, None)
        state.segment, state.plan, state.channel = event.segment, event.plan, event.channel
    if event.monthly_fee is not None and _newer(state.fee, at, tie):
        state.fee = Latest(at, tie, money(event.monthly_fee))


def _home(state: CustomerState, event: Signup, at: Micros, tie: int) -> None:
    """Keep the earliest signup by (time, id hash). Called before ``profile`` moves:
    while ``home`` is None the customer's only signup so far is ``profile``."""
    current = state.home
    if current is None:
        profile = state.profile
        if profile is None:
            return  # the first signup: the earliest is ``profile`` itself
        current = Home(profile.at, profile.tie, state.segment, state.plan)
    if (at, tie) < (current.at, current.tie):
        current = Home(at, tie, event.segment, event.plan)
    state.home = current


def _cancellation(
    state: CustomerState, event: Cancellation, at: Micros, tie: int, policy: Policy
) -> None:
    state.cancellations += 1
    fee = None if event.monthly_fee is None else money(event.monthly_fee)
    _mark(state.cancels, Mark(at, tie, fee), policy.marks)
    state.last_cancel_at = latest(state.last_cancel_at, at)
    if _newer(state.cancel, at, tie):
        state.cancel = Latest(at, tie, event.reason_code)
        state.cancelled_fee = None if event.monthly_fee is None else money(event.monthly_fee)


def _feedback(state: CustomerState, event: Feedback, at: Micros, tie: int, policy: Policy) -> None:
    negative: str | None = None
    if event.kind == "nps":
        state.nps_responses += 1
        if _newer(state.nps, at, tie):
            state.nps = Latest(at, tie, event.score)
        if event.score is not None and event.score <= DETRACTOR_MAX:
            negative = "detractor"
    elif event.kind == "csat":
        state.csat_responses += 1
        if _newer(state.csat, at, tie):
            state.csat = Latest(at, tie, event.score)
        if event.score is not None and event.score <= LOW_CSAT_MAX:
            negative = "low_csat"
    else:
        state.support_contacts += 1
        if _newer(state.support, at, tie):
            state.support = Latest(at, tie, event.outcome)
        if event.outcome in ("bad", "unresolved"):
            negative = "bad_support"
    if negative is not None:
        negatives = state.negatives
        bisect.insort(negatives, Negative(at, tie, negative), key=_ORDER)
        if len(negatives) > policy.negatives:
            del negatives[0]
