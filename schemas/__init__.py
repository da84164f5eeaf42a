"""Wire contracts: the events churnwatch consumes and the records it produces.

Everything here is plain data with strict validation, so that producers, the
worker and downstream consumers agree on one definition (and on the JSON Schema
files generated from it into ``schemas/json/``).
"""

from schemas.deadletter import DeadLetter, RejectReason
from schemas.decode import Decoded, EventDecoder, Rejected
from schemas.events import (
    EVENT_TYPES,
    Cancellation,
    ClockTick,
    Event,
    EventType,
    Feedback,
    Purchase,
    Signup,
)

__all__ = [
    "EVENT_TYPES",
    "Cancellation",
    "ClockTick",
    "DeadLetter",
    "Decoded",
    "Event",
    "EventDecoder",
    "EventType",
    "Feedback",
    "Purchase",
    "RejectReason",
    "Rejected",
    "Signup",
]
