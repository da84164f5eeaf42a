"""The period engine equals a batch recomputation of DESIGN section 6, whatever the
arrival order within the allowed lateness."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.partition import PartitionState
from retention.apply import Policy, apply
from retention.calendar import Calendar
from retention.periods import PeriodBook, PeriodEngine
from retention.state import CustomerState
from retention.timeutil import DAY, HOUR, to_micros
from schemas.events import Cancellation, Event, Feedback, Purchase, Signup
from tests import oracle
from tests.oracle import batch, customers, events_from, facts_of, figures_of, rolling

START = datetime(2024, 1, 1, tzinfo=UTC)
LATENESS = 6 * HOUR


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


@st.composite
def histories(draw: st.DrawFn, days: int) -> list[Event]:
    events: list[Event] = []
    for c in range(draw(st.integers(1, 8))):
        cid = f"c{c}"
        for n in range(draw(st.integers(1, 8))):
            when = at(draw(st.integers(0, 24 * days)) + draw(st.sampled_from([0, 0.5])))
            common = {"event_id": f"{cid}-{n}", "customer_id": cid, "occurred_at": when}
            kind = draw(st.sampled_from(["signup", "purchase", "purchase", "purchase",
                                         "cancellation", "nps", "csat"]))  # fmt: skip
            if kind == "signup":
                fee = draw(st.sampled_from([None, 0.0, 10.0, 25.0]))
                events.append(Signup(**common, monthly_fee=fee))
            elif kind == "purchase":
                events.append(Purchase(**common, amount=draw(st.sampled_from([1.25, 10.0, 99.99]))))
            elif kind == "cancellation":
                events.append(Cancellation(**common))
            else:
                low, high = (0, 10) if kind == "nps" else (1, 5)
                events.append(Feedback(**common, kind=kind, score=draw(st.integers(low, high))))
    return events


def as_lines(events: list[Event]) -> list[oracle.Event]:
    """The events as the oracle reads them: JSON lines it validates itself."""
    return events_from(msgspec.json.encode(e) for e in events)


def arrival(events: list[Event], rnd: random.Random) -> list[Event]:
    """Event-time order, each event delayed by up to the allowed lateness."""
    jitter = {e.event_id: rnd.uniform(0, LATENESS * 0.999) for e in events}
    return sorted(events, key=lambda e: to_micros(e.occurred_at) + jitter[e.event_id])


def stream(
    events: list[Event], calendar: Calendar, window: int | None, until: int
) -> tuple[PeriodBook, dict[str, CustomerState]]:
    """What the customer agent does per event, without Faust."""
    engine = PeriodEngine(calendar, window, LATENESS)
    policy = Policy(lateness=LATENESS)
    book = PeriodBook()
    part = PartitionState(partition=0)
    states: dict[str, CustomerState] = {}
    for event in events:
        moment = to_micros(event.occurred_at)
        engine.extend(book, moment)
        state = states.get(event.customer_id)
        before = engine.snapshot(book, state)
        applied = apply(state, event, part.watermark or moment, policy)
        states[event.customer_id] = applied.state
        if not applied.duplicate:
            engine.update(book, before, applied.state, moment)
            if isinstance(event, Feedback):
                engine.feedback(book, moment, event.kind, event.score, part.watermark or moment)
        part.observe("input", moment, inputs=1)
        engine.close(book, part.watermark)
    final = until + LATENESS  # the replay's final tick
    engine.extend(book, final)
    part.tick(final)
    engine.close(book, part.watermark)
    return book, states


SPANS = {"day": 20, "week": 70, "month": 150}


@pytest.mark.parametrize("kind", list(SPANS))
@settings(max_examples=300, deadline=None)
@given(data=st.data(), seed=st.integers(0, 1000), window_days=st.sampled_from([3, 30, None]))
def test_engine_matches_batch(
    kind: str, data: st.DataObject, seed: int, window_days: int | None
) -> None:
    events = data.draw(histories(SPANS[kind]))
    calendar = Calendar(kind)  # type: ignore[arg-type]
    window = None if window_days is None else window_days * DAY
    until = calendar.start_of(to_micros(at(24 * (SPANS[kind] + 10))))
    book, states = stream(arrival(events, random.Random(seed)), calendar, window, until)
    lines = as_lines(events)
    # Simultaneous events are common here: "latest" facts rely on the tie-break.
    assert {cid: facts_of(s) for cid, s in states.items()} == customers(lines)
    truth = batch(lines, kind, window, until)
    first = calendar.start_of(book.first_event_at or 0)
    got = [p for p in book.closed if p.start >= first and p.end <= until]
    assert [(p.label, p.start, p.end) for p in got] == [(t.label, t.start, t.end) for t in truth]
    for period, expected in zip(got, truth, strict=True):
        assert figures_of(period.figures) == expected.figures, period.label


def test_duplicates_and_order_do_not_change_closed_periods() -> None:
    rnd = random.Random(3)
    events: list[Event] = []
    for n in range(300):
        when = at(rnd.uniform(0, 24 * 90))
        cid = f"c{n % 40}"
        events.append(Purchase(event_id=f"p{n}", customer_id=cid, occurred_at=when, amount=5.0))
    calendar = Calendar("month")
    until = calendar.start_of(to_micros(at(24 * 100)))
    ordered, _ = stream(sorted(events, key=lambda e: e.occurred_at), calendar, 30 * DAY, until)
    noisy = arrival(events + rnd.sample(events, 60), rnd)
    shuffled, _ = stream(noisy, calendar, 30 * DAY, until)
    assert [p.figures for p in ordered.closed] == [p.figures for p in shuffled.closed]
    assert ordered.cohorts == shuffled.cohorts


@settings(max_examples=200, deadline=None)
@given(data=st.data(), seed=st.integers(0, 1000), window_days=st.sampled_from([3, 30, None]))
def test_rolling_views_match_batch(data: st.DataObject, seed: int, window_days: int | None) -> None:
    events = data.draw(histories(150))
    calendar = Calendar("month")
    window = None if window_days is None else window_days * DAY
    until = calendar.start_of(to_micros(at(24 * 160)))
    book, _ = stream(arrival(events, random.Random(seed)), calendar, window, until)
    day = (until + LATENESS) // DAY  # the final tick's day
    truth = rolling(as_lines(events), window, day)
    assert book.active_on(day) == truth["active"]
    assert book.rolling_feedback(day) == truth["feedback"]
    statuses = {k: v for k, v in book.statuses.items() if v}
    assert statuses == {k: v for k, v in truth["statuses"].items() if v}
