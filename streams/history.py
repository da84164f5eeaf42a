"""A transaction file folded into customer states in-process, for offline work.

``fit``, ``calibrate`` and ``backtest`` need the same per-customer state the workers
build, at a cut-off time, and who bought afterwards. They get it here with the
workers' own decoder and ``retention.apply``, so an offline figure and a streamed
one can never disagree on a definition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from retention.apply import apply
from retention.state import CustomerState
from retention.timeutil import Micros, to_micros
from schemas.decode import EventDecoder, Rejected
from schemas.events import Purchase
from streams import topics
from streams.inputs import Format, read_events
from streams.settings import Settings


@dataclass
class History:
    """States as of ``as_of`` and, per customer, purchase times at or after it."""

    as_of: Micros
    states: dict[str, CustomerState]
    later_purchases: dict[str, list[Micros]] = field(default_factory=dict)
    events: int = 0  # valid events before as_of, folded into state
    rejected: int = 0  # failed validation, as the worker would dead-letter them
    duplicates: int = 0
    after_as_of: int = 0  # valid but at or after as_of: not observed yet

    def bought_between(self, customer_id: str, start: Micros, end: Micros) -> bool:
        return any(start <= t < end for t in self.later_purchases.get(customer_id, ()))


def fold_file(
    path: Path,
    fmt: Format,
    as_of: Micros,
    settings: Settings | None = None,
    progress: Callable[[int], None] | None = None,
) -> History:
    """Apply every valid event before ``as_of``; remember later purchases."""
    settings = settings or Settings()
    decoder = EventDecoder(settings.max_event_bytes)
    policy = settings.policy
    history = History(as_of=as_of, states={})
    states = history.states
    watermark: Micros | None = None
    count = 0
    for count, record in enumerate(read_events(path, fmt), 1):
        if progress is not None and count % 10_000 == 0:
            progress(count)
        kind = topics.INPUT_TOPICS[record.topic]
        event = decoder.decode(kind, record.key, record.value)
        if isinstance(event, Rejected):
            history.rejected += 1
            continue
        at = to_micros(event.occurred_at)
        if at >= as_of:
            history.after_as_of += 1
            if isinstance(event, Purchase):
                history.later_purchases.setdefault(event.customer_id, []).append(at)
            continue
        watermark = at if watermark is None else max(watermark, at)
        applied = apply(states.get(event.customer_id), event, watermark, policy)
        states[event.customer_id] = applied.state
        if applied.duplicate:
            history.duplicates += 1
        else:
            history.events += 1
    if progress is not None:
        progress(count)
    return history
