"""The serving view: keys, versions and per-partition sums (``retention.serving``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.partition import PartitionState
from retention.alerts import Lifecycle
from retention.apply import DEFAULT_POLICY, apply
from retention.partition import RiskSummary
from retention.risk import load_risk_config
from retention.serving import customer_view
from retention.state import CustomerState
from retention.timeutil import DAY, to_micros
from schemas.events import Feedback, Purchase
from streams.redis_view import escape_id

START = datetime(2024, 1, 1, tzinfo=UTC)
LIFECYCLE = Lifecycle(load_risk_config(None), None, 90 * DAY)


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_escaped_ids_are_safe_and_distinct(a: str, b: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_.%\-]+", escape_id(a))
    assert (escape_id(a) == escape_id(b)) == (a == b)


summaries = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from(["low", "medium", "high", "critical", "churned"]),
        st.integers(-(10**6), 10**8),
        st.integers(0, 10**8),
    ),
)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 5), summaries), max_size=60))
def test_partition_sums_equal_a_recount(moves: list[tuple[int, RiskSummary | None]]) -> None:
    """However customers move between tiers, the sums are those of a recount."""
    pstate = PartitionState(partition=0)
    current: dict[int, RiskSummary | None] = {}
    for customer, summary in moves:
        pstate.move_risk(current.get(customer), summary)
        current[customer] = summary
    tiers: dict[str, int] = {}
    value: dict[str, int] = {}
    clv = 0
    for summary in current.values():
        if summary is None:
            continue
        bucket, var, lifetime = summary
        tiers[bucket] = tiers.get(bucket, 0) + 1
        if bucket != "churned":
            value[bucket] = value.get(bucket, 0) + var
            clv += lifetime
    assert pstate.tiers == tiers
    assert {k: v for k, v in pstate.value_at_risk.items() if v} == {
        k: v for k, v in value.items() if v
    }
    assert pstate.clv == clv


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 300, allow_nan=False), st.booleans(), st.integers(0, 10)),
        min_size=1,
        max_size=15,
    ),
    st.lists(st.floats(0, 400, allow_nan=False), max_size=5),
)
def test_every_change_of_the_view_raises_its_version(
    events: list[tuple[float, bool, int]], idle: list[float]
) -> None:
    """The Redis guard keeps the greater version: it must grow with every change."""
    state: CustomerState | None = None
    seen: dict[tuple[int, int], object] = {}
    clock = 0
    for n, (day, is_purchase, score) in enumerate(sorted(events)):
        at = START + timedelta(days=day)
        event = (
            Purchase(event_id=f"e{n}", customer_id="c", occurred_at=at, amount=10.0 + score)
            if is_purchase
            else Feedback(
                event_id=f"e{n}", customer_id="c", occurred_at=at, kind="nps", score=score
            )
        )
        moment = to_micros(at)
        state = apply(state, event, moment, DEFAULT_POLICY).state
        clock = max(clock, moment, state.risk.at if state.risk else 0)
        LIFECYCLE.step(state, clock)
        view = customer_view(state, LIFECYCLE)
        assert seen.setdefault(view.version, view) == view
    assert state is not None
    for extra in sorted(idle):
        LIFECYCLE.catch_up(state, clock + round(extra * DAY))
        view = customer_view(state, LIFECYCLE)
        assert seen.setdefault(view.version, view) == view
