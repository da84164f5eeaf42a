"""Per-customer state: everything later rules need, in a compact, mergeable form.

Every field is either a monotone aggregate (min/max of event times, sums and counts
guarded by de-duplication) or "latest by event time" with a deterministic
tie-break, so the same set of events gives the same state in any arrival order.
Money is kept in integer micro-units of the event currency: sums of floats depend
on the order they are added in, sums of integers do not.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Final

import msgspec

from retention import history
from retention.timeutil import Micros

MONEY_UNIT: Final = 1_000_000  # micro-units per currency unit


class PurchaseDay(msgspec.Struct, array_like=True, gc=False):
    """Purchases on one UTC day: the unit of BG/NBD frequency (one per day).

    ``last`` is the day's latest purchase time: period boundaries fall on
    midnights, so it is all the period engine needs to know the latest purchase
    before any boundary.
    """

    day: int
    count: int
    spend: int
    last: Micros


class Seen(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A recently applied event: event time, a 63-bit hash of its id, its type."""

    at: Micros
    id_hash: int
    kind: str


class Latest(msgspec.Struct, array_like=True, gc=False):
    """A value that the event with the greatest (time, id hash) decides."""

    at: Micros
    tie: int
    value: str | int | None


class Mark(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A signup or cancellation kept for history, with the monthly fee it carried."""

    at: Micros
    tie: int
    fee: int | None


class Negative(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """One bad experience (detractor score, low CSAT, bad or unresolved support)."""

    at: Micros
    tie: int
    code: str


class RiskMark(msgspec.Struct, array_like=True, kw_only=True):
    """A customer's last assessment and alert state, kept in CustomerState.risk."""

    at: Micros = 0  # time of the last assessment
    score: float = 0.0
    tier: str = "low"  # low | medium | high | critical
    status: str | None = None  # of the latest alert: firing|escalated|resolved|churned
    episode: Micros | None = None  # starts_at of the latest episode
    alerted_tier: str | None = None  # highest tier alerted in the open episode
    sequence: int = 0  # of the latest alert
    quiet_until: Micros | None = None  # end of the cooldown after a resolution
    due: Micros | None = None  # next time something can change without an event
    # Of the last assessment, in cents: exact integer sums per partition and tier.
    value_at_risk: int = 0
    clv: int = 0


class Home(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """The earliest signup by (time, id hash): the customer's segment and plan for
    life (DESIGN section 10)."""

    at: Micros
    tie: int
    segment: str | None
    plan: str | None


class CustomerState(msgspec.Struct, array_like=True, kw_only=True):
    customer_id: str
    # Activity: signups and purchases.
    first_signup_at: Micros | None = None
    last_signup_at: Micros | None = None
    profile: Latest | None = None  # value: [segment, plan, channel] of the latest signup
    first_purchase_at: Micros | None = None
    last_purchase_at: Micros | None = None
    purchases: int = 0
    spend: int = 0
    cost_to_serve: int = 0
    days: list[PurchaseDay] = msgspec.field(default_factory=list)
    # Subscription: the fee of the latest signup that carried one; cancellations.
    fee: Latest | None = None
    last_cancel_at: Micros | None = None
    cancel: Latest | None = None  # value: reason_code of the latest cancellation
    cancelled_fee: int | None = None  # micro-units, from the latest cancellation
    cancellations: int = 0
    # Recent signups and cancellations (bounded), for figures at past boundaries.
    signups: list[Mark] = msgspec.field(default_factory=list)
    cancels: list[Mark] = msgspec.field(default_factory=list)
    # Feedback.
    nps: Latest | None = None
    csat: Latest | None = None
    support: Latest | None = None
    nps_responses: int = 0
    csat_responses: int = 0
    support_contacts: int = 0
    negatives: list[Negative] = msgspec.field(default_factory=list)
    # De-duplication: the most recent event ids by event time, bounded.
    seen: list[Seen] = msgspec.field(default_factory=list)
    # Signup attributes, denormalised from ``profile`` for readers.
    segment: str | None = None
    plan: str | None = None
    channel: str | None = None
    # Churn risk: the last assessment and the alert lifecycle (retention.alerts).
    risk: RiskMark | None = None
    #: Distinct events applied. With ``risk.at`` it orders any two versions of a
    #: customer (both only grow), which is what guards the serving view's writes.
    events: int = 0
    #: The earliest signup, once the customer has two (``home_signup``): with one,
    #: the earliest is the latest (``profile``), so it is not stored twice. New
    #: fields go after this one, with defaults.
    home: Home | None = None

    def home_signup(self) -> tuple[str | None, str | None]:
        """(segment, plan) of the earliest signup; (None, None) without a signup."""
        if self.home is not None:
            return self.home.segment, self.home.plan
        if self.profile is None:
            return None, None
        return self.segment, self.plan

    @property
    def version(self) -> tuple[int, Micros]:
        return (self.events, 0 if self.risk is None else self.risk.at)

    @property
    def acquired_at(self) -> Micros | None:
        """The earliest activity (signup or purchase): when the customer was acquired."""
        return history.acquired_at(self)

    @property
    def last_activity_at(self) -> Micros | None:
        return history.last_activity_at(self)

    @property
    def monthly_fee(self) -> int:
        """Monthly fee (micro-units) of the current subscription, 0 if none."""
        return int(self.fee.value) if self.fee is not None and self.fee.value else 0

    @property
    def subscribed(self) -> bool:
        """A paid subscription is running: its latest fee-bearing signup is after any cancel."""
        if self.fee is None or not self.fee.value:
            return False
        return self.last_cancel_at is None or self.last_cancel_at < self.fee.at

    def active_at(self, moment: Micros, window: Micros | None) -> bool:
        """DESIGN section 6, for a state holding only events before ``moment``.

        Active iff there is an activity L, L >= moment - window, and no cancellation
        at or after L.
        """
        last = self.last_activity_at
        if last is None:
            return False
        if window is not None and last < moment - window:
            return False
        return self.last_cancel_at is None or self.last_cancel_at < last

    def lapse_at(self, window: Micros | None) -> Micros | None:
        """The instant this customer stops being active if nothing else happens."""
        last = self.last_activity_at
        if last is None or window is None:
            return None
        if self.last_cancel_at is not None and self.last_cancel_at >= last:
            return None  # already churned by cancellation
        return last + window

    def last_activity_before(self, moment: Micros) -> Micros | None:
        """Latest signup or purchase strictly before ``moment`` (a UTC midnight)."""
        return history.last_activity_before(self, moment)

    def active_before(self, moment: Micros, window: Micros | None) -> bool:
        """DESIGN section 6's "active at ``moment``", from history (``moment`` a midnight)."""
        return history.active_before(self, moment, window)

    def fee_at(self, moment: Micros) -> int:
        """Monthly fee of the subscription running at ``moment`` (0 if none)."""
        return history.fee_at(self, moment)

    def typical_interval_days(self) -> float | None:
        """Median gap between distinct purchase days: the customer's own rhythm."""
        return history.typical_interval_days(self)


#: Sort key of ``CustomerState.days`` (bisect's ``key``): an attrgetter runs in C,
#: where a function costs a Python call per comparison, several per event.
day_of: Final[Callable[[PurchaseDay], int]] = operator.attrgetter("day")


earliest = history.earliest
latest = history.latest


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(CustomerState)


#: msgpack array headers (array 16) of a record with and without its last field.
_FIELDS: Final = len(CustomerState.__struct_fields__)
_WITH_HOME: Final = b"\xdc" + _FIELDS.to_bytes(2, "big")
_WITHOUT_HOME: Final = b"\xdc" + (_FIELDS - 1).to_bytes(2, "big")
if CustomerState.__struct_fields__[-1] != "home":
    raise RuntimeError("encode_state leaves out the last field, home: keep it last")


def encode_state(state: CustomerState) -> bytes:
    """A record whose ``home`` is None (a customer with at most one signup) leaves
    the field out, which msgspec reads back as its default: such a record is byte
    for byte what releases before ``home`` wrote (their customer records and hashes
    stay the same). msgspec cannot omit an array_like struct's trailing defaults
    itself, so the header is rewritten and the final nil (one byte) dropped."""
    data = _ENCODER.encode(state)
    if state.home is None and data.startswith(_WITH_HOME):
        return _WITHOUT_HOME + data[3:-1]
    return data


def decode_state(data: bytes) -> CustomerState:
    return _DECODER.decode(data)
