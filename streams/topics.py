"""Topic names and which event each input topic carries (DESIGN section 2)."""

from __future__ import annotations

from typing import Final

from schemas.events import EventType

SIGNUPS: Final = "customer.signups"
PURCHASES: Final = "customer.purchases"
CANCELLATIONS: Final = "customer.cancellations"
FEEDBACK: Final = "customer.feedback"
CLOCK: Final = "churnwatch.clock"
DEADLETTER: Final = "churnwatch.deadletter"
ALERTS: Final = "churnwatch.alerts"
#: Input events read on a partition other than the one their key hashes to, sent on
#: to that one, and every partition's read progress (streams/routing.py).
REPARTITION: Final = "churnwatch.repartition"

INPUT_TOPICS: Final[dict[str, EventType]] = {
    SIGNUPS: "signup",
    PURCHASES: "purchase",
    CANCELLATIONS: "cancellation",
    FEEDBACK: "feedback",
}
TOPIC_FOR_TYPE: Final[dict[EventType, str]] = {kind: name for name, kind in INPUT_TOPICS.items()}

#: Topics the worker consumes together; they must share one partition count so that
#: a customer's events and its clock ticks land on the same worker.
CONSUMED_TOPICS: Final = (*INPUT_TOPICS, CLOCK, REPARTITION)
#: Every topic churnwatch expects to exist, for provisioning.
ALL_TOPICS: Final = (*CONSUMED_TOPICS, DEADLETTER, ALERTS)

CUSTOMERS_TABLE: Final = "customers"


def changelog_topic(app_id: str, table: str = CUSTOMERS_TABLE) -> str:
    """Faust's changelog topic name for a table of this app."""
    return f"{app_id}-{table}-changelog"
