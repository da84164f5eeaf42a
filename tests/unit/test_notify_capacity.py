"""Ranking by value at risk, the window, the ledger that makes a restart decide the
same, the offsets that may be committed, and the filters."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.capacity import Candidate, Window, day_of, rank
from notifier.config import Filters
from notifier.filters import Role, passes, role
from notifier.ledger import CLOSED_DAYS, OPEN_DAYS, Ledger, known
from notifier.offsets import Offsets
from schemas.alert import AlertRecord
from tests.notify_support import episodes, record

ALERTS: list[AlertRecord] = [record(a) for h in episodes(seed=5, customers=40) for a in h]


def _candidate(alert: AlertRecord, value: float | None = None) -> Candidate[int]:
    if value is not None:
        alert = msgspec.structs.replace(alert, value_at_risk=value)
    return Candidate(alert.dedup_key, [(alert, 0)])


values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=40)


@given(values=values, room=st.integers(-2, 45), seed=st.integers(0, 2**32))
def test_rank_admits_the_highest_values_whatever_the_order(
    values: list[float], room: int, seed: int
) -> None:
    firings = [a for a in ALERTS if a.status == "firing"][: len(values)]
    candidates = [_candidate(a, v) for a, v in zip(firings, values, strict=False)]
    admitted, withheld = rank(candidates, room)
    shuffled = candidates[:]
    random.Random(seed).shuffle(shuffled)
    again, _ = rank(shuffled, room)
    assert [c.dedup_key for c in again] == [c.dedup_key for c in admitted]
    assert len(admitted) == min(max(room, 0), len(candidates))
    assert len(admitted) + len(withheld) == len(candidates)
    if admitted and withheld:
        lowest_in = min(c.latest.value_at_risk for c in admitted)
        assert all(c.latest.value_at_risk <= lowest_in for c in withheld)


def test_an_episode_ranks_by_its_newest_value() -> None:
    history = next(h for h in episodes(seed=5, customers=40) if len(h) >= 2)
    first, second = (record(a) for a in history[:2])
    first = msgspec.structs.replace(first, value_at_risk=0.0)
    second = msgspec.structs.replace(second, value_at_risk=1e9)
    rising = Candidate(first.dedup_key, [(first, 0), (second, 1)])
    other = _candidate(next(a for a in ALERTS if a.dedup_key != first.dedup_key), 1.0)
    assert rising.latest == second and rising.opening == first
    (top,), (rest,) = rank([other, rising], 1)
    assert top is rising and rest is other


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_window_groups_episodes_and_closes_after_hold() -> None:
    clock = Clock()
    window: Window[int] = Window(30.0, clock)
    assert not window.due() and window.remaining() == 0.0
    a, b = ALERTS[0], ALERTS[1]
    window.add(a, 1)
    clock.now += 10
    window.add(b, 2)
    assert a.dedup_key in window and window.remaining() == 20.0 and not window.due()
    clock.now += 20
    assert window.due()
    taken = window.take()
    assert sum(len(c.alerts) for c in taken) == 2 and len(window) == 0 and not window.due()
    clock.now += 1000  # the next window opens with its first candidate, not before
    window.add(a, 3)
    assert window.remaining() == 30.0


def test_the_day_is_the_zones_calendar_day() -> None:
    moment = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    assert day_of(moment, ZoneInfo("UTC")) == "2026-03-01"
    assert day_of(moment, ZoneInfo("Europe/Berlin")) == "2026-03-02"
    assert day_of(moment, ZoneInfo("America/New_York")) == "2026-03-01"


def _reload(ledger: Ledger, written: list[tuple[bytes, bytes | None]]) -> Ledger:
    """What a restart reads: the last value per key of what was written."""
    latest: dict[bytes, bytes | None] = {}
    for key, value in written:
        latest[key] = value
    fresh = Ledger()
    fresh.load(latest)
    return fresh


@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 30), st.booleans())))
def test_the_ledger_reads_back_what_it_decided(moves: list[tuple[str, int, bool]]) -> None:
    ledger = Ledger()
    written: list[tuple[bytes, bytes | None]] = []
    day = "2026-12-04"
    for destination, index, close in moves:
        alert = ALERTS[index]
        if close:
            closed = ledger.close(destination, alert.dedup_key)
            if closed is not None:
                written.append(closed)
        elif ledger.entry(destination, alert.dedup_key) is None:
            written.append(
                ledger.admit(destination, alert.dedup_key, alert.sequence, day, counted=True)
            )
    restarted = _reload(ledger, written)
    for destination in ("a", "b"):
        assert restarted.used(destination, day) == ledger.used(destination, day)
        for alert in ALERTS[:31]:
            assert restarted.entry(destination, alert.dedup_key) == ledger.entry(
                destination, alert.dedup_key
            )


def test_a_readmitted_opening_is_not_counted_twice_and_later_ones_follow() -> None:
    ledger = Ledger()
    alert = ALERTS[0]
    ledger.admit("a", alert.dedup_key, alert.sequence, "2026-12-04", counted=True)
    ledger.admit("a", alert.dedup_key, alert.sequence, "2026-12-04", counted=True)
    assert ledger.used("a", "2026-12-04") == 1
    seen = known(ledger.entry("a", alert.dedup_key), alert.sequence)
    assert seen is not None and seen.is_opening and not seen.follows
    later = known(ledger.entry("a", alert.dedup_key), alert.sequence + 1)
    earlier = known(ledger.entry("a", alert.dedup_key), alert.sequence - 1)
    assert later is not None and later.follows and not later.is_opening
    assert earlier is not None and not earlier.follows and not earlier.is_opening
    assert known(ledger.entry("b", alert.dedup_key), alert.sequence) is None


def test_entries_expire_closed_after_a_week_open_after_a_long_time() -> None:
    ledger = Ledger()
    ledger.admit("a", "open", 1, "2026-01-01", counted=True)
    ledger.admit("a", "shut", 1, "2026-01-01", counted=True)
    ledger.close("a", "shut")
    assert ledger.expire("2026-01-01") == []
    gone = ledger.expire(f"2026-01-{1 + CLOSED_DAYS + 1:02d}")
    assert [key for key, value in gone if value is None] == [b"told/a/shut"]
    assert ledger.entry("a", "open") is not None and ledger.used("a", "2026-01-01") == 1
    assert len(ledger.expire("2027-12-31")) == 1 and OPEN_DAYS < 730
    assert ledger.used("a", "2026-01-01") == 0 and len(ledger) == 0


def test_the_ledger_ignores_records_it_does_not_know() -> None:
    ledger = Ledger()
    assert ledger.load({b"other/x": b"{}", b"told/a/k": b"not json", b"told/a/z": None}) == 0


@settings(max_examples=200)
@given(
    st.dictionaries(st.integers(0, 3), st.integers(1, 30), min_size=1),
    st.randoms(use_true_random=False),
)
def test_offsets_never_pass_an_unfinished_record(sizes: dict[int, int], rng: random.Random) -> None:
    offsets: Offsets[int] = Offsets()
    read = [(p, o) for p, n in sizes.items() for o in range(10, 10 + n)]
    for partition, offset in read:
        offsets.read(partition, offset)
    order = read[:]
    rng.shuffle(order)
    finished: set[tuple[int, int]] = set()
    for item in order:
        offsets.finish(*item)
        finished.add(item)
        for partition, commit in offsets.committable().items():
            # Every record before the committed offset is finished ...
            assert all((partition, o) in finished for o in range(10, commit))
            # ... and the committed offset is the first that is not (or the end).
            assert (partition, commit) not in finished or commit == 10 + sizes[partition]
    assert offsets.committable() == {p: 10 + n for p, n in sizes.items()}
    assert offsets.pending() == 0


def test_offsets_refuse_going_back_and_forget_revoked_partitions() -> None:
    offsets: Offsets[str] = Offsets()
    offsets.read("p", 5)
    try:
        offsets.read("p", 4)
    except ValueError:
        pass
    else:
        raise AssertionError("an offset read after a later one must be refused")
    offsets.forget(["p"])
    offsets.finish("p", 5)  # a late finish of a revoked partition changes nothing
    assert offsets.committable() == {}


def test_filters_select_episodes_and_follow_ups_need_only_the_status() -> None:
    firing = next(a for a in ALERTS if a.status == "firing")
    resolved = next(a for a in ALERTS if a.status == "resolved")
    high_only = Filters(tiers=frozenset({"high", "critical"}), min_value_at_risk=0)
    assert passes(high_only, firing) and not passes(high_only, resolved)  # medium tier
    assert role(high_only, firing, told=False) is Role.OPENING
    assert role(high_only, resolved, told=False) is Role.SKIP
    assert role(high_only, resolved, told=True) is Role.FOLLOW_UP  # told: hears how it ends
    no_resolutions = Filters(statuses=frozenset({"firing", "escalated"}))
    assert role(no_resolutions, resolved, told=True) is Role.SKIP
    rich = Filters(min_value_at_risk=firing.value_at_risk + 0.01)
    assert role(rich, firing, told=False) is Role.SKIP
    segment = Filters(segments=frozenset({"none"}))
    assert passes(segment, msgspec.structs.replace(firing, segment=None))
    assert not passes(segment, msgspec.structs.replace(firing, segment="enterprise"))
