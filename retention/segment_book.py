"""The per-segment figures' stored state for one partition (DESIGN section 10):
one ``PeriodBook`` per segment bucket over the same open periods as the
partition's own book, and the risk sums by segment. The operations are in
``retention/segments.py``; kept apart because it is encoded in the partition record.
"""

from __future__ import annotations

from typing import Final

import msgspec

from retention.period_book import PeriodBook

#: The bucket of customers without a signup that carries a segment.
NONE: Final = "none"
#: The bucket of customers whose segment came after the cap was reached.
OTHER: Final = "other"
#: Closed periods kept per segment (the partition's own book keeps 240): the record
#: holds up to cap + 2 books and is written with every batch.
SEGMENT_KEEP: Final = 36


class RiskSums(msgspec.Struct, kw_only=True):
    """Customers by tier, value at risk by tier and predicted CLV, in cents, as
    ``PartitionFigures`` keeps them for the whole partition."""

    tiers: dict[str, int] = msgspec.field(default_factory=dict)
    value_at_risk: dict[str, int] = msgspec.field(default_factory=dict)
    clv: int = 0


class SegmentBook(msgspec.Struct, kw_only=True):
    """Per-segment figures of one partition.

    ``tracked``: segment names in the order the partition first met each as a
    customer's segment, at most the cap; every other name counts under OTHER, and
    a name's bucket never changes once decided (retention/segments.py, ``bucket``).
    ``books`` and ``risk`` are keyed by bucket: a tracked name, NONE or OTHER.
    """

    tracked: list[str] = msgspec.field(default_factory=list)
    books: dict[str, PeriodBook] = msgspec.field(default_factory=dict)
    risk: dict[str, RiskSums] = msgspec.field(default_factory=dict)
