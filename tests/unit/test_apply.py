"""``retention.apply``: the final state depends on the set of events, not on their
arrival order or on how often each was delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.apply import DEFAULT_POLICY, Policy, apply, money
from retention.state import CustomerState, decode_state, encode_state
from retention.summary import customer_summary
from retention.timeutil import DAY, parse_time, to_micros
from schemas.events import Cancellation, Event, Feedback, Purchase, Signup

START = datetime(2024, 1, 1, tzinfo=UTC)


def at(days: float) -> datetime:
    return START + timedelta(days=days)


@st.composite
def events(draw: st.DrawFn) -> Event:
    n = draw(st.integers(0, 10**9))
    when = at(draw(st.floats(0, 400, allow_nan=False)))
    common = {"event_id": f"e{n}", "customer_id": "c1", "occurred_at": when}
    kind = draw(st.sampled_from(["signup", "purchase", "purchase", "cancellation", "feedback"]))
    if kind == "signup":
        return Signup(
            **common,
            segment=draw(st.sampled_from(["smb", "consumer", None])),
            plan=draw(st.sampled_from(["pro", "basic", None])),
            monthly_fee=draw(st.sampled_from([None, 0.0, 19.99, 49.0])),
        )
    if kind == "purchase":
        return Purchase(
            **common,
            amount=draw(st.decimals(0, 5000, places=2).map(float)),
            cost_to_serve=draw(st.sampled_from([None, 1.5])),
        )
    if kind == "cancellation":
        return Cancellation(**common, reason_code="price", monthly_fee=19.99)
    feedback = draw(st.sampled_from(["nps", "csat", "support"]))
    if feedback == "support":
        return Feedback(
            **common, kind="support", outcome=draw(st.sampled_from(["resolved", "bad"]))
        )
    low, high = (0, 10) if feedback == "nps" else (1, 5)
    return Feedback(**common, kind=feedback, score=draw(st.integers(low, high)))


def unique(items: list[Event]) -> list[Event]:
    seen: dict[str, Event] = {}
    for item in items:
        seen.setdefault(item.event_id, item)
    return list(seen.values())


def fold(items: list[Event], policy: Policy = DEFAULT_POLICY) -> CustomerState | None:
    state: CustomerState | None = None
    now = 0
    for item in items:
        now = max(now, to_micros(item.occurred_at))
        state = apply(state, item, now, policy).state
    return state


history = st.lists(events(), min_size=1, max_size=24).map(unique)


@settings(max_examples=300, deadline=None)
@given(history, st.randoms(use_true_random=False))
def test_final_state_ignores_arrival_order(items: list[Event], rnd: object) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert fold(items) == fold(shuffled)


@settings(max_examples=300, deadline=None)
@given(history, st.data())
def test_duplicates_change_nothing(items: list[Event], data: st.DataObject) -> None:
    repeats = data.draw(st.lists(st.sampled_from(items), max_size=20))
    delivered = data.draw(st.permutations(items + repeats))
    assert fold(delivered) == fold(items)


@settings(max_examples=200, deadline=None)
@given(history)
def test_state_survives_encoding(items: list[Event]) -> None:
    state = fold(items)
    assert state is not None
    assert decode_state(encode_state(state)) == state


def test_duplicate_is_reported_and_not_applied() -> None:
    purchase = Purchase(event_id="p1", customer_id="c1", occurred_at=at(1), amount=10.0)
    first = apply(None, purchase, 0)
    again = apply(first.state, purchase, 0)
    assert not first.duplicate and again.duplicate
    assert again.state.purchases == 1 and again.state.spend == money(10.0)


def test_dedup_window_is_bounded_by_event_time() -> None:
    """A duplicate older than the remembered ids is applied again: the documented bound."""
    policy = Policy(dedup_ids=2)
    old = Purchase(event_id="old", customer_id="c1", occurred_at=at(1), amount=1.0)
    newer = [
        Purchase(event_id=f"n{i}", customer_id="c1", occurred_at=at(10 + i), amount=1.0)
        for i in range(2)
    ]
    state = fold([old, *newer], policy)
    assert state is not None and len(state.seen) == 2
    assert not apply(state, old, 0, policy).duplicate


def test_late_flag_uses_watermark_minus_lateness() -> None:
    purchase = Purchase(event_id="p", customer_id="c1", occurred_at=at(0), amount=1.0)
    policy = Policy(lateness=DAY)
    assert not apply(None, purchase, to_micros(at(0.5)), policy).late
    assert apply(None, purchase, to_micros(at(2)), policy).late


def test_purchase_days_and_bgnbd_inputs() -> None:
    items: list[Event] = [
        Purchase(event_id="a", customer_id="c1", occurred_at=at(0.1), amount=10.0),
        Purchase(event_id="b", customer_id="c1", occurred_at=at(0.9), amount=5.0),  # same day
        Purchase(event_id="c", customer_id="c1", occurred_at=at(3.5), amount=7.0),
        Purchase(event_id="d", customer_id="c1", occurred_at=at(10.2), amount=9.0),
    ]
    state = fold(items)
    assert state is not None
    line = customer_summary(state, parse_time("2024-01-21T12:00:00Z"), 90 * DAY)
    assert (line["x"], line["t_x"]) == (2, 10)
    assert line["T"] == pytest.approx(20.5)
    assert line["purchases"] == 4
    assert line["total_spend"] == pytest.approx(31.0)
    assert line["mean_repeat_spend"] == pytest.approx(8.0)  # (7 + 9) / 2, first day excluded
    assert line["typical_interval_days"] == 5.0  # gaps 3 and 7
    assert line["acquired_at"] == "2024-01-01T02:24:00Z"


def test_active_follows_design_definition() -> None:
    window = 30 * DAY
    signup = Signup(event_id="s", customer_id="c1", occurred_at=at(0), monthly_fee=10.0)
    state = fold([signup])
    assert state is not None
    assert state.active_at(to_micros(at(29)), window)
    assert not state.active_at(to_micros(at(31)), window)
    assert state.active_at(to_micros(at(1000)), None)
    assert state.subscribed
    cancel = Cancellation(event_id="x", customer_id="c1", occurred_at=at(5))
    state = apply(state, cancel, 0).state
    assert not state.active_at(to_micros(at(6)), window)
    assert not state.subscribed
    assert state.lapse_at(window) is None
    back = Purchase(event_id="p", customer_id="c1", occurred_at=at(7), amount=3.0)
    state = apply(state, back, 0).state
    assert state.active_at(to_micros(at(8)), window)
    assert state.lapse_at(window) == to_micros(at(37))


def test_latest_signup_decides_profile_and_fee() -> None:
    early = Signup(event_id="s1", customer_id="c1", occurred_at=at(0), segment="a", monthly_fee=5)
    late = Signup(event_id="s2", customer_id="c1", occurred_at=at(9), segment="b", monthly_fee=9)
    for order in ([early, late], [late, early]):
        state = fold(order)
        assert state is not None
        assert state.segment == "b" and state.monthly_fee == money(9)
        assert state.acquired_at == to_micros(at(0))


def test_negative_experiences_are_bounded() -> None:
    items: list[Event] = [
        Feedback(event_id=f"f{i}", customer_id="c1", occurred_at=at(i), kind="nps", score=2)
        for i in range(20)
    ]
    state = fold(items)
    assert state is not None
    assert len(state.negatives) == DEFAULT_POLICY.negatives
    assert state.negatives[-1].at == to_micros(at(19))
    assert state.nps is not None and state.nps.value == 2 and state.nps_responses == 20


def test_watermark_is_the_slowest_topic_or_the_clock() -> None:
    from processor.partition import PartitionState

    part = PartitionState(partition=0)
    part.observe("purchases", 100, inputs=2)
    assert part.watermark is None  # the other topic has not delivered yet
    part.observe("purchases", 500, inputs=2)
    part.observe("feedback", 200, inputs=2)
    assert part.watermark == 200  # the slower topic decides
    part.observe("purchases", 900, inputs=2)
    assert part.watermark == 200
    part.observe("feedback", 800, inputs=2)
    assert part.watermark == 800
    part.observe("feedback", 300, inputs=2)  # an old event never moves it back
    assert part.watermark == 800
    part.tick(2000)
    assert part.watermark == 2000 and part.clock == 2000
    part.observe("feedback", 2500, inputs=2)
    assert part.watermark == 2000
