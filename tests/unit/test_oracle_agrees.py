"""The batch oracle (``tests/oracle.py``) and the engine agree on generated histories,
and the comparison the reliability tests rely on can fail.

The engine side runs in-process what the customer agent does per message (decode,
reject, apply, period figures, watermark, ticks), over several partitions, and the
report is built by the replay's own ``build_report``. The oracle reads the file
itself and shares no code with it.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.partition import PartitionState
from retention.apply import apply, id_hash, money
from retention.calendar import Calendar
from retention.periods import PeriodEngine
from retention.state import CustomerState
from retention.timeutil import DAY, SECOND, to_micros
from schemas.decode import EventDecoder, Rejected
from schemas.events import EVENT_TYPES, Event, EventType, Feedback, Purchase
from streams import topics
from streams.generator import write_history
from streams.inputs import Format, read_events
from streams.report import build_report
from streams.settings import Settings
from tests import oracle
from tests.oracle import Expected, expected, facts_of

END = datetime(2025, 7, 1, tzinfo=UTC)
INPUTS = len(topics.INPUT_TOPICS)


@dataclass
class EngineRun:
    states: dict[str, CustomerState]
    partitions: list[PartitionState]
    rejected: Counter[str]
    report: dict[str, Any]
    rolling: dict[str, Any]


def run_engine(
    path: Path,
    as_of: int,
    *,
    partitions: int = 3,
    period: str = "month",
    window_days: int | None = 90,
    fmt: Format = "jsonl",
) -> EngineRun:
    """The customer agent's per-message steps, without Faust, as a replay feeds them:
    records dated at or after ``as_of`` are not published, a first tick at the
    earliest time opens the periods, a final one at ``as_of`` plus the lateness
    closes them."""
    base = Settings(
        period=period,  # type: ignore[arg-type]
        activity_window="none" if window_days is None else f"{window_days}d",
    )
    decoder = EventDecoder(base.max_event_bytes)
    calendar = Calendar(base.period)
    engine = PeriodEngine(calendar, base.window, base.lateness)
    records = [r for r in read_events(path, fmt) if r.occurred_at is None or r.occurred_at < as_of]
    parts = [PartitionState(partition=n) for n in range(partitions)]
    times = [r.occurred_at for r in records if r.occurred_at is not None]
    future_limit = round(datetime.now(UTC).timestamp() * SECOND) + DAY

    def tick(moment: int) -> None:
        for part in parts:
            part.tick(moment)
            engine.extend(part.periods, moment)
            engine.close(part.periods, part.watermark)

    if times:
        tick(min(times))
    states: dict[str, CustomerState] = {}
    rejected: Counter[str] = Counter()
    for record in records:
        part = parts[0 if record.key is None else zlib.crc32(record.key) % partitions]
        book = part.periods
        part.consumed += 1
        decoded = decoder.decode(topics.INPUT_TOPICS[record.topic], record.key, record.value)
        if not isinstance(decoded, Rejected) and to_micros(decoded.occurred_at) > future_limit:
            decoded = Rejected("future_time", "occurred_at is more than a day ahead")
        if isinstance(decoded, Rejected):
            part.deadletter += 1
            rejected[decoded.reason] += 1
            continue
        at = to_micros(decoded.occurred_at)
        state = states.get(decoded.customer_id)
        part.customers += state is None
        engine.extend(book, at)
        before = engine.snapshot(book, state)
        applied = apply(state, decoded, part.watermark or at, base.policy)
        states[decoded.customer_id] = applied.state
        if applied.duplicate:
            part.duplicates += 1
        else:
            part.valid += 1
            part.late += applied.late
            engine.update(book, before, applied.state, at)
            if isinstance(decoded, Feedback):
                engine.feedback(book, at, decoded.kind, decoded.score, part.watermark or at)
            elif isinstance(decoded, Purchase) and decoded.cost_to_serve is not None:
                engine.cost(book, at, money(decoded.cost_to_serve))
        part.observe(record.topic, at, INPUTS)
        engine.close(book, part.watermark)
    final = as_of + base.lateness
    tick(final)
    totals = {name: sum(getattr(p, name) for p in parts)
              for name in ("consumed", "valid", "deadletter", "duplicates", "late")}  # fmt: skip
    report = build_report(parts, as_of, len(states), totals, calendar)
    day = final // DAY
    feedback = [0] * 5
    statuses: Counter[str] = Counter()
    for part in parts:
        for index, count in enumerate(part.periods.rolling_feedback(day)):
            feedback[index] += count
        statuses.update(part.periods.statuses)
    rolling = {
        "active": sum(p.periods.active_on(day) for p in parts),
        "feedback": feedback,
        "statuses": {k: v for k, v in statuses.items() if v},
    }
    return EngineRun(states, parts, rejected, report, rolling)


def mismatches(want: Expected, got: EngineRun) -> list[str]:
    """Every difference between the oracle and the engine, empty when they agree."""
    out: list[str] = []
    facts = {cid: facts_of(state) for cid, state in got.states.items()}
    for cid in sorted(facts.keys() | want.customers.keys()):
        mine, theirs = facts.get(cid), want.customers.get(cid)
        if mine is None or theirs is None:
            out.append(f"customer {cid}: engine {mine is not None}, oracle {theirs is not None}")
        elif mine != theirs:
            diff = {k: (mine[k], theirs[k]) for k in theirs if mine[k] != theirs[k]}
            out.append(f"customer {cid} (engine, oracle): {diff}")
    out.extend(want.compare_periods(got.partitions))
    lines = [p.line() for p in want.periods]
    if got.report["periods"] != lines:
        out.append(f"report periods: {got.report['periods']} != {lines}")
    if got.report["cohorts"] != want.cohorts:
        out.append(f"report cohorts: {got.report['cohorts']} != {want.cohorts}")
    events = got.report["events"]
    for name in ("consumed", "valid", "deadletter", "duplicates"):
        if events[name] != want.counts[name]:
            out.append(f"count {name}: engine {events[name]}, oracle {want.counts[name]}")
    if got.rejected != Counter(want.rejected_by_reason):
        out.append(f"rejected by reason: engine {got.rejected}, oracle {want.rejected_by_reason}")
    day = (want.as_of + 6 * 3600 * SECOND) // DAY
    truth = oracle.rolling(want.events, want.window, day)
    truth["statuses"] = {k: v for k, v in truth["statuses"].items() if v}
    if got.rolling != truth:
        out.append(f"rolling views: engine {got.rolling}, oracle {truth}")
    return out


def history(tmp_path: Path, seed: int, customers: int = 300, days: int = 120) -> Path:
    path = tmp_path / f"history-{seed}.jsonl"
    stats = write_history(path, customers, days, seed, END)
    assert stats.duplicates and stats.malformed and stats.events["cancellation"]
    return path


CASES = [
    # seed, days of history, as_of (days before its end), period, activity window (days)
    (1, 120, 0, "month", 90),
    (2, 120, 17.2, "month", 90),  # cut mid-history: later records are not published
    (3, 120, 0, "week", 30),
    (4, 300, 0, "quarter", None),
    (5, 120, 40.5, "day", 90),
]


@pytest.mark.parametrize(("seed", "days", "cut", "period", "window"), CASES)
def test_oracle_equals_engine_on_generated_history(
    tmp_path: Path, seed: int, days: int, cut: float, period: str, window: int | None
) -> None:
    path = history(tmp_path, seed, days=days)
    as_of = to_micros(END - timedelta(days=cut))
    got = run_engine(path, as_of, period=period, window_days=window)
    want = expected(path, as_of, window_days=window, period=period)
    assert got.report["events"]["late"] == 0  # else closed periods may rightly differ
    assert mismatches(want, got) == []
    # The comparison covered something: customers of every kind, several periods,
    # rejected records of several reasons, duplicates and (with a cut) skipped lines.
    assert len(want.customers) > 150
    assert len(want.periods) >= 3
    assert sum(f["cancellations"] > 0 for f in want.customers.values()) > 5
    assert len(want.rejected_by_reason) >= 2
    assert want.counts["duplicates"] > 0
    assert (want.counts["skipped"] > 0) == (cut > 0)


Pick = Callable[[dict[str, Any]], bool]
#: The changed record: bytes replace it, a dict is inserted before it, None drops it.
Change = Callable[[dict[str, Any]], Any]


def _edit(path: Path, pick: Pick, change: Change) -> Path:
    """A copy of ``path`` with the first valid record ``pick`` accepts changed."""
    lines = path.read_bytes().splitlines()
    for index, line in enumerate(lines):
        try:
            body = json.loads(line)
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("event_id", "").startswith("c") and pick(body):
            replaced = change(body)
            if replaced is None:
                del lines[index]
            elif isinstance(replaced, bytes):
                lines[index] = replaced
            else:
                lines.insert(index, json.dumps(replaced).encode())
            break
    else:
        raise AssertionError("no record to change")
    out = path.with_name("mutated.jsonl")
    out.write_bytes(b"\n".join(lines) + b"\n")
    return out


def _set(**changes: Any) -> Callable[[dict[str, Any]], bytes]:
    return lambda body: json.dumps({**body, **changes}).encode()


def _later(body: dict[str, Any]) -> bytes:
    moment = datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00"))
    return json.dumps({**body, "occurred_at": (moment - timedelta(days=35)).isoformat()}).encode()


#: name: (which record, what change, what the comparison must then report)
MUTATIONS: dict[str, tuple[Pick, Change, str]] = {
    "amount": (
        lambda b: b["type"] == "purchase",
        lambda b: _set(amount=b["amount"] + 1)(b),
        "spend",
    ),
    "time": (lambda b: b["type"] == "purchase", _later, "first_purchase_at"),
    "lost signup": (lambda b: b["type"] == "signup", lambda b: None, "count valid"),
    "nps score": (
        lambda b: b.get("kind") == "nps",
        lambda b: _set(score=10 - b["score"] if b["score"] != 5 else 9)(b),
        "'nps'",
    ),
    "reason code": (
        lambda b: b["type"] == "cancellation",
        _set(reason_code="moved"),
        "cancel_reason",
    ),
    "fee": (
        lambda b: b["type"] == "signup" and b["monthly_fee"] > 0,
        _set(monthly_fee=0.0),
        "'fee'",
    ),
    "corrupted": (lambda b: b["type"] == "purchase", _set(amount=-1), "rejected by reason"),
    "duplicated": (lambda b: b["type"] == "feedback", lambda b: b, "count duplicates"),
    "cost to serve": (
        lambda b: b["type"] == "purchase" and b.get("cost_to_serve"),
        lambda b: _set(cost_to_serve=b["cost_to_serve"] + 1)(b),
        "'cost_to_serve'",
    ),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_comparison_detects_a_changed_input(tmp_path: Path, name: str) -> None:
    """One record changed in the oracle's input only: the comparison must say where."""
    path = history(tmp_path, 11)
    as_of = to_micros(END)
    got = run_engine(path, as_of)
    assert mismatches(expected(path, as_of), got) == []
    pick, change, where = MUTATIONS[name]
    found = mismatches(expected(_edit(path, pick, change), as_of), got)
    assert any(where in line for line in found), found


def test_cdnow_input(tmp_path: Path) -> None:
    """The CDNOW purchase log, read by both sides: identical rows are two purchases."""
    rnd = random.Random(7)
    rows = ["customer_id date cds dollars"]
    for _ in range(400):
        day = datetime(1997, 1, 1) + timedelta(days=rnd.randrange(540))
        rows.append(f"{rnd.randrange(1, 60):05d} {day:%Y%m%d} {rnd.randrange(1, 5)} "
                    f"{rnd.choice(['0.00', '12.77', '31.5', '112.00'])}")  # fmt: skip
    rows += [rows[5], rows[5]]
    path = tmp_path / "cdnow.txt"
    path.write_text("\n".join(rows) + "\n")
    as_of = to_micros(datetime(1998, 7, 1, tzinfo=UTC))
    got = run_engine(path, as_of, fmt="cdnow")
    want = expected(path, as_of, fmt="cdnow")
    assert mismatches(want, got) == []
    assert want.counts["valid"] == 402 and len(want.periods) == 18


# ------------------------------------------------------------------ validation

_TIMES = [
    "2024-03-01T10:00:00Z", "2024-03-01t10:00:00z", "2024-03-01 10:00:00+02:00",
    "2024-03-01T10:00:00.1234567-0130", "2024-03-01T23:59:59.9999995Z", "2024-02-30T00:00:00Z",
    "2024-03-01T10:00:00", "2024-03-01T24:00:00Z", "2024-03-01T10:00:60Z", "2024-03-01",
    "1899-12-31T23:59:59Z", "1900-01-01T00:30:00+01:00", "2199-12-31T23:00:00-01:00",
    "2024-03-01T10:00:00+24:00", "2024-03-01T10:00Z", " 2024-03-01T10:00:00Z",
    "2024-03-01T10:00:00.Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59.9999999Z",
    "2999-12-31T23:30:00-01:00", "2999-12-31T23:59:59.9999999Z",
]  # fmt: skip
_NASTY: list[Any] = [
    None, True, 0, -0.0, -1, 5, 9, 11, 2.5, 1e12, 1e13, 10**30, "", "x", "c1", "USD", "usd", "US",
    "nps", "csat", "support", "bad", "resolved", "a\x00b", "a\u0085", "\u00e9t\u00e9", "😀" * 40,
    "x" * 65, "x" * 129, [], [1], {}, {"a": [{}]}, *_TIMES,
]  # fmt: skip
_VALID: dict[str, dict[str, Any]] = {
    "signup": {"segment": "smb", "plan": "pro", "monthly_fee": 49.0, "channel": "paid"},
    "purchase": {"amount": 12.5, "currency": "USD", "order_id": "o-1", "cost_to_serve": 1.25},
    "cancellation": {"reason_code": "price", "reason": "too dear", "monthly_fee": 19.0},
    "feedback": {"kind": "nps", "score": 7, "outcome": "resolved", "comment": "fine"},
}


@st.composite
def records(draw: st.DrawFn) -> tuple[EventType, bytes]:
    kind: EventType = draw(st.sampled_from(EVENT_TYPES))
    body: dict[str, Any] = {
        "event_id": "e-1", "customer_id": "c1", "occurred_at": draw(st.sampled_from(_TIMES[:5])),
        **_VALID[kind],
    }  # fmt: skip
    names = [*body, "type", "extra"]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(names))
        if draw(st.booleans()):
            body[name] = draw(st.sampled_from([*_NASTY, kind, "refund"]))
        else:
            body.pop(name, None)
    items = list(body.items())
    order = draw(st.permutations(range(len(items))))
    text = (
        "{" + ",".join(f"{json.dumps(items[i][0])}:{json.dumps(items[i][1])}" for i in order) + "}"
    )
    if draw(st.integers(0, 4)) == 0:  # a syntax error somewhere
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from(["", "x", ",", "]", "1.", "NaN", '"\\ud800"']))
            + (text[at + draw(st.integers(0, 3)) :] if draw(st.booleans()) else "")
        )
    return kind, text.encode()


def _from_struct(event: Event) -> oracle.Event:
    """What the oracle should make of a record the decoder accepted."""

    def get(name: str) -> Any:
        return getattr(event, name, None)

    def cash(name: str) -> int | None:
        return None if get(name) is None else money(get(name))

    return oracle.Event(
        type=str(event.__struct_config__.tag),
        event_id=event.event_id,
        customer_id=event.customer_id,
        at=to_micros(event.occurred_at),
        tie=id_hash(event.event_id),
        amount=cash("amount") or 0,
        cost=cash("cost_to_serve"),
        fee=cash("monthly_fee"),
        segment=get("segment"),
        plan=get("plan"),
        channel=get("channel"),
        reason_code=get("reason_code"),
        kind=get("kind"),
        score=get("score"),
        outcome=get("outcome"),
    )


@settings(max_examples=1500, deadline=None)
@given(record=records())
def test_validation_agrees_with_the_decoder(record: tuple[EventType, bytes]) -> None:
    """Same verdict and reason as the worker's decoder, same content when valid."""
    kind, value = record
    decoded = EventDecoder().decode(kind, b"c1", value)
    try:
        event = oracle.validate(kind, b"c1", value)
    except oracle.Invalid as invalid:
        assert isinstance(decoded, Rejected), (value, invalid)
        assert decoded.reason == invalid.reason, (value, decoded, invalid)
        return
    assert not isinstance(decoded, Rejected), (value, event, decoded)
    assert event == _from_struct(decoded)


@pytest.mark.parametrize(
    "value",
    [b"", b" ", b"[1,", b"01", b"1.5e", b"0x", b'"abc', b"true0", b"{", b"{,}", b'{"amount":[1,',
     b'{"type":[', b'{"amount":-1 x', b'{"amount":-1.}', b"\xef\xbb\xbf{}", b"\xff", b"x" * 70_000,
     b"[" * 3000, b'{"x":' + b"[" * 3000 + b"]" * 3000 + b"}", b'{"x":"\\udc00"}', b"1e400",
     b"1" * 400, b'{"amount":1e13.', b'{"occurred_at":"9999-12-31T23:59:59.9999999Z",',
     b'{"event_id":"a\\u0000","customer_id":"c1","occurred_at":"2024-03-01T10:00:00Z",'
     b'"amount":1}x'],
)  # fmt: skip
def test_validation_of_broken_documents_agrees(value: bytes) -> None:
    decoded = EventDecoder().decode("purchase", b"c1", value)
    assert isinstance(decoded, Rejected)
    with pytest.raises(oracle.Invalid) as invalid:
        oracle.validate("purchase", b"c1", value)
    assert invalid.value.reason == decoded.reason
