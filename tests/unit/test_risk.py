"""Risk score, reasons, tiers and the alert lifecycle (``retention.risk``, ``.alerts``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.alerts import Lifecycle, dedup_key
from retention.apply import DEFAULT_POLICY, apply
from retention.evaluation import precision_at, precision_recall, roc_auc
from retention.model import BgNbd, GammaGamma, Model
from retention.probe import Probe
from retention.risk import (
    DEFAULTS_PATH,
    RiskConfig,
    RiskConfigError,
    Thresholds,
    TierCuts,
    Weights,
    assess,
    load_risk_config,
    quick_score,
    tier_with_hysteresis,
)
from retention.state import CustomerState
from retention.timeutil import DAY, to_micros
from schemas.events import Cancellation, Event, Feedback, Purchase

START = datetime(2024, 1, 1, tzinfo=UTC)
T0 = to_micros(START)
WINDOW = 180 * DAY
#: Weights of the shape calibration produces: risk grows with recency, falls with
#: repeat purchases, spend and expected purchases, grows with bad experiences.
CONFIG = RiskConfig(
    plain=Weights(
        intercept=-1.0,
        recency=1.0,
        frequency=-0.9,
        spend=-0.1,
        frequency_drop=0.8,
        spend_drop=0.5,
        experiences=0.8,
        detractor=0.6,
        low_csat=0.6,
    ),
    with_model=Weights(intercept=-0.5, recency=0.5, frequency=-0.5, spend=-0.1, expected=-0.6),
    cooldown_days=30,
)
MODEL = Model(
    bgnbd=BgNbd(r=0.25, alpha=33.0, a=0.75, b=2.2), gamma_gamma=GammaGamma(p=6.2, q=3.7, v=15.0)
)


def at(days: float) -> datetime:
    return START + timedelta(days=days)


def micros(days: float) -> int:
    return to_micros(at(days))


def purchase(n: int, days: float, amount: float = 20.0, customer: str = "c1") -> Purchase:
    return Purchase(event_id=f"p{n}", customer_id=customer, occurred_at=at(days), amount=amount)


def build(events: list[Event]) -> CustomerState:
    state: CustomerState | None = None
    for event in events:
        state = apply(state, event, to_micros(event.occurred_at), DEFAULT_POLICY).state
    assert state is not None
    return state


def regular(count: int = 10, every: float = 10.0, amount: float = 20.0) -> CustomerState:
    return build([purchase(n, n * every, amount) for n in range(count)])


def test_score_grows_while_a_customer_does_nothing() -> None:
    state = regular()
    scores = [assess(state, micros(90 + d), CONFIG, None, WINDOW) for d in (0, 10, 30, 60, 120)]
    values = [a.score for a in scores if a is not None]
    assert values == sorted(values) and values[0] < values[-1]
    assert all(0.0 <= v <= 1.0 for v in values)


def test_one_time_buyer_is_not_safe_though_bgnbd_calls_them_alive() -> None:
    state = build([purchase(0, 0)])
    assessment = assess(state, micros(120), CONFIG, MODEL, WINDOW)
    assert assessment is not None
    assert assessment.p_alive == 1.0  # BG/NBD's blind spot
    regular_buyer = assess(regular(), micros(95), CONFIG, MODEL, WINDOW)
    assert regular_buyer is not None and assessment.score > regular_buyer.score
    codes = {r.code: r for r in assessment.reasons}
    # Overdue against the population rhythm, since the customer has none of their own.
    assert codes["overdue"].value == pytest.approx(120 / CONFIG.default_interval_days, rel=1e-3)
    assert "p_alive" not in codes  # p_alive = 1 is no evidence either way


def test_reasons_carry_value_and_threshold() -> None:
    events: list[Event] = [purchase(n, n * 10, 50.0) for n in range(11)]
    events += [purchase(20, 115, 5.0)]  # one small purchase after a long gap
    events += [
        Feedback(event_id="f1", customer_id="c1", occurred_at=at(150), kind="nps", score=3),
        Feedback(event_id="f2", customer_id="c1", occurred_at=at(151), kind="csat", score=1),
        Feedback(
            event_id="f3", customer_id="c1", occurred_at=at(152), kind="support", outcome="bad"
        ),
    ]
    state = build(events)
    config = msgspec.structs.replace(CONFIG, thresholds=Thresholds(expected_purchases=0.5))
    assessment = assess(state, micros(200), config, MODEL, WINDOW)
    assert assessment is not None
    reasons = {r.code: r for r in assessment.reasons}
    assert reasons["detractor"].value == 3 and reasons["detractor"].threshold == 6
    assert reasons["low_csat"].value == 1 and reasons["low_csat"].threshold == 2
    assert reasons["bad_support"].value == 1
    assert reasons["bad_experiences"].value == 3 and reasons["bad_experiences"].threshold == 2
    assert reasons["overdue"].value == pytest.approx(85 / 10, rel=1e-3)
    assert reasons["overdue"].threshold == CONFIG.thresholds.overdue_ratio
    assert reasons["frequency_drop"].value <= CONFIG.thresholds.frequency_ratio
    assert reasons["spend_drop"].value == pytest.approx(0.1, rel=1e-3)
    assert reasons["p_alive"].value < CONFIG.thresholds.p_alive
    assert reasons["expected_purchases"].value == pytest.approx(assessment.expected, abs=1e-4)
    assert reasons["expected_purchases"].threshold == 0.5
    assert reasons["p_alive"].threshold == CONFIG.thresholds.p_alive
    unhappy = assessment.score
    calm = assess(build(events[:12]), micros(200), CONFIG, MODEL, WINDOW)
    assert calm is not None
    # The model-based weights carry no feedback terms in CONFIG: score unchanged,
    # reasons still shown. Without a model the plain weights do count feedback.
    assert calm.score == pytest.approx(unhappy)
    plain_unhappy = assess(state, micros(200), CONFIG, None, WINDOW)
    plain_calm = assess(build(events[:12]), micros(200), CONFIG, None, WINDOW)
    assert plain_unhappy is not None and plain_calm is not None
    assert plain_unhappy.score > plain_calm.score


def test_cancellation_is_certain_churn() -> None:
    state = build(
        [
            purchase(0, 0),
            Cancellation(event_id="x", customer_id="c1", occurred_at=at(5), reason_code="price"),
        ]
    )
    assessment = assess(state, micros(6), CONFIG, None, WINDOW)
    assert assessment is not None
    assert assessment.score == 1.0 and assessment.cancelled
    assert assessment.reasons[0].code == "cancelled"


def test_value_at_risk_puts_unprofitable_customers_last() -> None:
    valuable = build([purchase(n, n * 10, 200.0) for n in range(5)])
    costly = build(
        [
            Purchase(
                event_id=f"q{n}",
                customer_id="c2",
                occurred_at=at(n * 10),
                amount=20.0,
                cost_to_serve=30.0,
            )
            for n in range(5)
        ]
    )
    a = assess(valuable, micros(120), CONFIG, MODEL, WINDOW)
    b = assess(costly, micros(120), CONFIG, MODEL, WINDOW)
    assert a is not None and b is not None
    assert a.value_at_risk > 0 > b.value_at_risk
    assert a.value_at_risk == pytest.approx(a.score * a.clv)


@pytest.mark.parametrize(
    ("score", "previous", "expected"),
    [
        (0.72, "low", "high"),  # up at once, skipping tiers
        (0.68, "high", "high"),  # within the hysteresis band: stays
        (0.64, "high", "medium"),  # below it: down
        (0.30, "critical", "low"),
        (0.83, "critical", "critical"),
        (0.90, "medium", "critical"),
    ],
)
def test_tiers_have_hysteresis(score: float, previous: str, expected: str) -> None:
    assert tier_with_hysteresis(score, previous, CONFIG) == expected


def run_days(lifecycle: Lifecycle, state: CustomerState, until_days: float) -> list[str]:
    return [a.status for a in lifecycle.catch_up(state, micros(until_days))]


def test_lifecycle_fires_in_time_escalates_churns_and_resolves_on_return() -> None:
    lifecycle = Lifecycle(CONFIG, None, WINDOW)
    state = regular()  # purchases on days 0..90, every 10 days
    assert lifecycle.step(state, micros(90)) is None  # a regular buyer: no alert
    assert state.risk is not None and state.risk.tier == "low"
    alerts = lifecycle.catch_up(state, micros(400))
    statuses = [a.status for a in alerts]
    assert statuses[0] == "firing" and statuses[-1] == "churned"
    assert set(statuses[1:-1]) <= {"escalated"}
    assert alerts[-1].at == micros(90) + WINDOW  # churned exactly at the lapse
    assert [a.sequence for a in alerts] == list(range(1, len(alerts) + 1))
    assert len({a.dedup_key for a in alerts}) == 1  # one episode
    # The firing time is the first day the score reached the alerting tier.
    first = alerts[0]
    before = assess(state, first.at - DAY, CONFIG, None, WINDOW)
    assert before is not None and before.score < CONFIG.tiers.high <= first.risk_score
    # Nothing more while nothing happens.
    assert lifecycle.catch_up(state, micros(900)) == []
    # The customer comes back: the episode is resolved.
    state = apply(state, purchase(99, 500), micros(500), DEFAULT_POLICY).state
    back = lifecycle.step(state, micros(500))
    assert back is not None and back.status == "resolved"
    assert back.dedup_key == alerts[0].dedup_key and back.sequence == len(alerts) + 1


def test_cooldown_holds_back_a_second_episode() -> None:
    lifecycle = Lifecycle(msgspec.structs.replace(CONFIG, cooldown_days=60), None, WINDOW)
    state = regular()
    lifecycle.step(state, micros(90))
    alerts = lifecycle.catch_up(state, micros(180))
    assert [a.status for a in alerts] == ["firing"]
    # One small purchase: the tier falls below the alerting tier, the episode resolves.
    state = apply(state, purchase(50, 181), micros(181), DEFAULT_POLICY).state
    resolved = lifecycle.step(state, micros(181))
    assert resolved is not None and resolved.status == "resolved"
    assert state.risk is not None and state.risk.quiet_until == micros(181) + 60 * DAY
    # The score reaches the alerting tier again before the cooldown ends; nobody is
    # paged until it does.
    high_again = next(
        d
        for d in range(182, 400)
        if assess(state, micros(d), CONFIG, None, WINDOW).score >= 0.7  # type: ignore[union-attr]
    )
    assert high_again < 241
    again = lifecycle.catch_up(state, micros(400))
    assert again[0].status == "firing" and again[0].at == micros(241)
    assert again[0].dedup_key != resolved.dedup_key


def test_next_due_is_the_first_day_the_tier_rises() -> None:
    lifecycle = Lifecycle(CONFIG, MODEL, WINDOW)
    state = regular()
    lifecycle.step(state, micros(90))
    due = lifecycle.schedule(state)
    assert state.risk is not None and due is not None
    assert (due - state.risk.at) % DAY == 0  # whole days after the last assessment
    # Brute force: the first whole day at which something changes.
    day = 1
    while not lifecycle.changes_by(state, state.risk, state.risk.at + day * DAY):
        day += 1
    assert due == state.risk.at + day * DAY


def test_replaying_gives_the_same_alerts() -> None:
    def run() -> list[tuple[str, int, str, int]]:
        lifecycle = Lifecycle(CONFIG, MODEL, WINDOW)
        out = []
        state: CustomerState | None = None
        for event in [purchase(n, n * 7) for n in range(6)] + [purchase(9, 200)]:
            if state is not None:
                out += lifecycle.catch_up(state, to_micros(event.occurred_at))
            state = apply(state, event, to_micros(event.occurred_at), DEFAULT_POLICY).state
            alert = lifecycle.step(state, to_micros(event.occurred_at))
            out += [] if alert is None else [alert]
        assert state is not None
        out += lifecycle.catch_up(state, micros(600))
        return [(a.dedup_key, a.sequence, a.status, a.at) for a in out]

    first, second = run(), run()
    assert first == second and first
    assert first[0][0] == dedup_key("c1", first[0][3])


def test_defaults_file_loads_and_documents_its_calibration() -> None:
    config = load_risk_config()
    assert config.plain.recency > 0 and config.plain.frequency < 0
    assert config.with_model.expected < 0
    steps = config.provenance["steps"]
    assert any("CDNOW" in step["data"] for step in steps)
    assert json.loads(DEFAULTS_PATH.read_text())["alert_tier"] == config.alert_tier


def test_bad_risk_configuration_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(RiskConfigError, match="cannot read"):
        load_risk_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"tiers": {"medium": 0.8, "high": 0.7, "critical": 0.9}}')
    with pytest.raises(RiskConfigError, match="increasing"):
        load_risk_config(bad)
    bad.write_text('{"plain": {"recency": "high"}}')
    with pytest.raises(RiskConfigError, match=r"invalid risk configuration .*bad.json"):
        load_risk_config(bad)
    bad.write_text('{"unknown_knob": 1}')
    with pytest.raises(RiskConfigError, match="unknown_knob"):
        load_risk_config(bad)
    with pytest.raises(RiskConfigError):
        RiskConfig(tiers=TierCuts(hysteresis=0.6))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_roc_auc_is_the_pairwise_win_rate(pairs: list[tuple[bool, int]]) -> None:
    labels = [y for y, _ in pairs]
    scores = [float(s) for _, s in pairs]
    pos = [s for y, s in pairs if y]
    neg = [s for y, s in pairs if not y]
    result = roc_auc(labels, scores)
    if not pos or not neg:
        assert result is None
        return
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert result == pytest.approx(wins / (len(pos) * len(neg)))


def test_precision_helpers() -> None:
    labels = [True, False, True, True, False]
    scores = [0.9, 0.8, 0.7, 0.1, 0.0]
    assert precision_at(labels, scores, 0.4) == 0.5
    assert precision_recall(labels, [True, True, False, False, False]) == (0.5, 1 / 3)


def test_alert_records_follow_the_published_schema() -> None:
    from schemas.alert import AlertRecord
    from schemas.jsonschema import JSON_DIR

    schema = json.loads((JSON_DIR / "alert.json").read_text())
    assert set(schema["required"]) >= {"dedup_key", "sequence", "status", "reasons"}
    assert set(msgspec.structs.fields(AlertRecord)[i].name for i in range(3)) <= set(
        schema["properties"]
    )


def probe_event(draw: st.DrawFn, n: int) -> Event:
    day = draw(st.floats(0, 400, allow_nan=False))
    kind = draw(st.sampled_from(["purchase", "purchase", "purchase", "feedback", "cancel"]))
    if kind == "purchase":
        return purchase(n, day, draw(st.floats(0, 500, allow_nan=False)))
    if kind == "cancel":
        return Cancellation(event_id=f"x{n}", customer_id="c1", occurred_at=at(day))
    feedback = draw(st.sampled_from(["nps", "csat", "support"]))
    common = {"event_id": f"f{n}", "customer_id": "c1", "occurred_at": at(day), "kind": feedback}
    if feedback == "support":
        outcome = draw(st.sampled_from(["resolved", "unresolved", "bad"]))
        return Feedback(**common, outcome=outcome)
    return Feedback(
        **common, score=draw(st.integers(0, 10) if feedback == "nps" else st.integers(1, 5))
    )


@st.composite
def histories(draw: st.DrawFn) -> CustomerState:
    count = draw(st.integers(1, 25))
    return build([probe_event(draw, n) for n in range(count)])


@settings(max_examples=150, deadline=None)
@given(histories(), st.lists(st.floats(0, 600, allow_nan=False), min_size=1, max_size=12))
def test_probe_is_quick_score_to_the_bit(state: CustomerState, moments: list[float]) -> None:
    """The due search's precomputed scorer must give the very floats of the full
    path, or due times (and so alerts) would depend on which one ran. Instants are
    after the state's last event, as every assessment is."""
    latest = max(seen.at for seen in state.seen)
    for model in (None, MODEL):
        for window in (None, WINDOW):
            probe = Probe(state, CONFIG, model, window)
            for days in moments:
                now = latest + round(days * DAY)
                assert probe(now) == quick_score(state, now, CONFIG, model, window)


def test_probe_sees_a_lone_bad_support_contact() -> None:
    events: list[Event] = [purchase(n, n * 10.0) for n in range(10)]
    events.append(
        Feedback(event_id="s", customer_id="c1", occurred_at=at(91), kind="support", outcome="bad")
    )
    state = build(events)
    quick = quick_score(state, micros(92), CONFIG, None, WINDOW)
    assert quick is not None and quick[2]  # the only reason: one bad support contact
    assert Probe(state, CONFIG, None, WINDOW)(micros(92)) == quick
