"""The customers a batch touches: each loaded once, folded with its aligned events
in order (``retention.apply``, idempotent), its risk assessed as it goes.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from processor.arrival import Arrival
from processor.intake import Counts
from processor.partition import PartitionState
from retention.alerts import Alert, Lifecycle
from retention.apply import Applied, Policy, apply, money
from retention.partition import RiskSummary
from retention.periods import PeriodEngine, Snapshot
from retention.segment_book import SegmentBook
from retention.segments import Segments, last_open
from retention.state import CustomerState, decode_state
from retention.timeutil import Micros
from schemas.events import Feedback, Purchase, Signup
from streams import topics


@dataclass(frozen=True)
class Rules:
    """What a worker folds events with."""

    policy: Policy
    lifecycle: Lifecycle
    periods: PeriodEngine
    lateness: Micros
    #: One engine per dimension (retention.segments.DIMENSIONS): segments, plans.
    dimensions: tuple[Segments, ...]


def summary(state: CustomerState | None) -> RiskSummary | None:
    if state is None or state.risk is None:
        return None
    mark = state.risk
    bucket = "churned" if mark.status == "churned" else mark.tier
    return (bucket, mark.value_at_risk, mark.clv)


class Touched:
    """Customers of one partition's batch: their new states (``states``, written by
    the commit plan), their risk summaries before the batch (``before``), and the
    alerts the batch raised with the message that raised each (``alerts``)."""

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table
        self.states: dict[bytes, CustomerState] = {}
        self.before: dict[bytes, RiskSummary | None] = {}
        #: (segment, plan) before the batch, for the risk sums by segment and plan.
        self.home_before: dict[bytes, tuple[str | None, str | None]] = {}
        self.alerts: list[tuple[Alert, Any]] = []

    def stored(self, key: bytes) -> CustomerState | None:
        """The customer's state as of now in the batch: touched, or as stored."""
        state = self.states.get(key)
        if state is None:
            raw = self.table.get(key)
            state = None if raw is None else decode_state(raw)
        return state

    def note_before(self, key: bytes, state: CustomerState | None) -> None:
        if key not in self.before:
            self.before[key] = summary(state)
            self.home_before[key] = (None, None) if state is None else state.home_signup()

    def move_risk(self, pstate: PartitionState, dimensions: tuple[Segments, ...]) -> None:
        """Keep the partition's sums by tier exact, and its segments' and plans' (a
        customer due for re-assessment only is not in ``before``: it did not move)."""
        main = pstate.periods
        for key, state in self.states.items():
            old = self.before.get(key)
            new = summary(state)
            pstate.move_risk(old, new)
            names = self.home_before.get(key, state.home_signup())
            for index, engine in enumerate(dimensions):
                book = engine.book_of(pstate)
                if book is None:
                    continue
                engine.move_risk(
                    book,
                    None if old is None else (engine.bucket(book, main, names[index]), old),
                    None if new is None else (engine.of(book, main, state), new),
                )


def fold(
    rules: Rules, pstate: PartitionState, ready: list[Arrival], counts: Counts, touched: Touched
) -> int:
    """Apply ``ready`` (in order) to the customers; returns how many assessments."""
    periods = rules.periods
    book = pstate.periods
    # The dimensions this partition keeps (a record of an older release: none).
    kept = [(e, b) for e in rules.dimensions if (b := e.book_of(pstate)) is not None]
    buckets: list[str] = []
    lifecycle = rules.lifecycle
    assessed = 0
    for arrival in ready:
        message = arrival.message
        decoded = arrival.event
        redelivered = arrival.redelivered
        at = arrival.order[0]
        key = message.key
        assert key is not None  # the decoder rejects keyless messages
        state = touched.states.get(key)
        if state is None:
            raw = touched.table.get(key)
            if raw is None:
                if not redelivered:
                    pstate.customers += 1
            else:
                state = decode_state(raw)
        touched.note_before(key, state)
        if state is not None and state.risk is not None:
            # Time passed since the customer's last assessment: transitions due
            # before this event happen first, with the state they were due in.
            for alert in lifecycle.catch_up(state, at):
                touched.alerts.append((alert, message))
        if not redelivered:
            last = last_open(book)
            periods.extend(book, at)
            before = periods.snapshot(book, state, isinstance(decoded, Purchase | Signup))
            opened = last_open(book) != last  # segment books open periods with ``book``
            for engine, kept_book in kept:
                if opened:
                    engine.extend(kept_book, at)
            buckets = [engine.of(kept_book, book, state) for engine, kept_book in kept]
        watermark = arrival.watermark or at
        applied = apply(state, decoded, watermark, rules.policy, at=at, tie=arrival.order[1])
        touched.states[key] = applied.state
        if not applied.duplicate:
            current = applied.state
            moment = at if current.risk is None else max(at, current.risk.at)
            change = lifecycle.step(current, moment)
            assessed += 1
            if change is not None:
                touched.alerts.append((change, message))
        if redelivered:
            continue
        # Period figures, like counters, take each message once: a redelivered one
        # was counted in the partition record that is stored before its customers.
        if not applied.duplicate:
            _periods(rules, pstate, kept, buckets, before, applied, arrival)
        _count(pstate, counts, topics.INPUT_TOPICS[message.topic], applied)
    return assessed


def _periods(
    rules: Rules,
    pstate: PartitionState,
    kept: list[tuple[Segments, SegmentBook]],
    buckets: list[str],
    before: Snapshot,
    applied: Applied,
    arrival: Arrival,
) -> None:
    """The period figures of one applied (not duplicate, not redelivered) event: the
    partition's, and its customer's segment's and plan's (``buckets``: theirs before
    it, one per book ``kept``)."""
    periods = rules.periods
    book = pstate.periods
    at = arrival.order[0]
    decoded = arrival.event
    watermark = arrival.watermark or at
    after = periods.update(book, before, applied.state, at)
    cost = None
    if isinstance(decoded, Feedback):
        periods.feedback(book, at, decoded.kind, decoded.score, watermark)
    elif isinstance(decoded, Purchase) and decoded.cost_to_serve is not None:
        cost = money(decoded.cost_to_serve)
        periods.cost(book, at, cost)
    for (engine, seg), old in zip(kept, buckets, strict=True):
        bucket = engine.update(seg, book, old, before, after, applied.state, at)
        if isinstance(decoded, Feedback):
            engine.feedback(seg, bucket, at, decoded.kind, decoded.score, watermark)
        elif cost is not None:
            engine.cost(seg, bucket, at, cost)


def _count(pstate: PartitionState, counts: Counts, kind: str, applied: Applied) -> None:
    if applied.duplicate:
        pstate.duplicates += 1
        counts["duplicate", kind] += 1
    else:
        pstate.valid += 1
        counts["valid", kind] += 1
        if applied.late:
            pstate.late += 1
            counts["late", kind] += 1
