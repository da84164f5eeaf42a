"""A customer's segment is their earliest signup's (DESIGN section 10), in any arrival
order; the cap bounds the segments a partition tracks; a customer record without a
second signup is the bytes it always was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.apply import apply, id_hash
from retention.calendar import Calendar
from retention.period_book import PeriodBook
from retention.periods import PeriodEngine
from retention.segment_book import NONE, OTHER, SegmentBook
from retention.segments import Segments
from retention.state import CustomerState, decode_state, encode_state
from retention.timeutil import DAY, to_micros
from schemas.events import Purchase, Signup

START = datetime(2025, 1, 1, tzinfo=UTC)


def signup(n: int, hours: int, segment: str | None, plan: str | None = "pro") -> Signup:
    return Signup(
        event_id=f"s{n}",
        customer_id="c1",
        occurred_at=START + timedelta(hours=hours),
        segment=segment,
        plan=plan,
    )


signups = st.lists(
    st.tuples(
        st.integers(0, 5), st.sampled_from(["a", "b", "c", None]), st.sampled_from(["x", "y"])
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(drawn=signups, data=st.data())
def test_the_home_signup_is_the_earliest_in_any_order(
    drawn: list[tuple[int, str | None, str]], data: st.DataObject
) -> None:
    events = [signup(n, hours, segment, plan) for n, (hours, segment, plan) in enumerate(drawn)]
    order = data.draw(st.permutations(events))
    state: CustomerState | None = None
    for event in order:
        state = apply(state, event, 0).state
    assert state is not None
    earliest = min(events, key=lambda e: (to_micros(e.occurred_at), id_hash(e.event_id)))
    assert state.home_signup() == (earliest.segment, earliest.plan)
    # Applying any of them again changes nothing (duplicates), nor does a round trip.
    again = apply(decode_state(encode_state(state)), order[0], 0)
    assert again.duplicate and again.state.home_signup() == state.home_signup()


def test_one_signup_leaves_the_record_as_it_was() -> None:
    state = apply(None, signup(1, 0, "smb"), 0).state
    fields = msgspec.msgpack.decode(encode_state(state))
    assert len(fields) == len(CustomerState.__struct_fields__) - 1  # no ``home``
    assert state.home is None and state.home_signup() == ("smb", "pro")
    state = apply(state, signup(2, -1, "enterprise", "basic"), 0).state
    assert state.home is not None and state.home_signup() == ("enterprise", "basic")
    assert decode_state(encode_state(state)) == state


def test_no_signup_is_none() -> None:
    state = apply(
        None, Purchase(event_id="p", customer_id="c1", occurred_at=START, amount=3.0), 0
    ).state
    assert state.home_signup() == (None, None)
    engine = Segments(PeriodEngine(Calendar("month"), 90 * DAY, 0), cap=1)
    assert engine.of(SegmentBook(), PeriodBook(), state) == NONE


def test_the_cap_keeps_the_first_names_and_never_moves_one() -> None:
    engine = Segments(PeriodEngine(Calendar("month"), 90 * DAY, 0), cap=2)
    book = SegmentBook()
    main = PeriodBook()
    got = [engine.bucket(book, main, name) for name in ["b", "a", "c", "b", None, "d", "a", "c"]]
    assert got == ["b", "a", OTHER, "b", NONE, OTHER, "a", OTHER]
    assert book.tracked == ["b", "a"]
    assert set(book.books) == {"a", "b", OTHER, NONE}


def test_ten_thousand_names_leave_cap_plus_two_books() -> None:
    engine = Segments(PeriodEngine(Calendar("month"), 90 * DAY, 0), cap=50)
    book = SegmentBook()
    for n in range(10_000):
        engine.bucket(book, PeriodBook(), f"segment-{n}")
    engine.bucket(book, PeriodBook(), None)
    assert len(book.tracked) == 50 and len(book.books) == 52
