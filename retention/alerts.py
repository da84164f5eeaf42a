"""The alert lifecycle: which assessments become alerts, and when to look again.

An *episode* opens when a customer's tier reaches the alerting tier and at least
one reason holds (``firing``: no alert without evidence, so a new customer whose
score is high only because most new customers never return is not paged on day
one; they are once they are overdue), may rise (``escalated``), and ends either
well (``resolved``: the customer came back and the tier fell below the alerting
tier by the hysteresis) or badly
(``churned``: an explicit cancellation, or no activity for the activity window).
A churned customer who comes back gets the episode ``resolved``. After a
resolution the customer is quiet for ``cooldown_days``: a score that wobbles around
a cut does not page anyone twice.

Alerts are emitted only on transitions, and everything about them is decided by
event time: an alert's ``starts_at`` is the moment the transition happened, either
the event that caused it or, for a customer who simply stops, the instant their
score crossed a cut, found by ``next_due`` from the state alone. So a replay of the
same input makes the same transitions at the same times, hence the same
``dedup_key`` and ``sequence`` values.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from hashlib import blake2b
from typing import Final, Literal

import msgspec
from mypy_extensions import mypyc_attr

from retention import history
from retention.model import Model
from retention.probe import Probe
from retention.risk import (
    RANK,
    UNKNOWN,
    Assessment,
    Reason,
    RiskConfig,
    Tier,
    assess,
    quick_assess,
    tier_with_hysteresis,
    value_figures,
)
from retention.state import CustomerState, RiskMark
from retention.timeutil import DAY, Micros

Status = Literal["firing", "escalated", "resolved", "churned"]
OPEN: Final = ("firing", "escalated")
#: Furthest ahead the due search looks; a customer with nothing due by then is
#: looked at again at that time.
DUE_LIMIT: Final = 730 * DAY


# A msgspec Struct cannot be a mypyc native class (retention/compiled.py).
@mypyc_attr(native_class=False)
class Alert(msgspec.Struct, kw_only=True):
    """An alert as decided in the domain; the agent adds processing time and source."""

    status: Status
    customer_id: str
    tier: Tier
    risk_score: float
    reasons: list[Reason]
    value_at_risk: float
    clv: float
    segment: str | None
    starts_at: Micros  # start of the episode (event time)
    at: Micros  # when this transition happened (event time)
    sequence: int
    dedup_key: str


#: Cents kept per customer are clamped here: summed over a partition they must stay
#: within the 64-bit integers the state is stored in, whatever a model predicts.
MAX_CENTS = 10**15


def cents(amount: float) -> int:
    if amount != amount:  # NaN
        return 0
    return round(max(-MAX_CENTS, min(MAX_CENTS, amount * 100)))


def dedup_key(customer_id: str, episode: Micros) -> str:
    """Stable across replays: the customer and the event time the episode began."""
    digest = blake2b(f"{customer_id}\x00{episode}".encode(), digest_size=16)
    return digest.hexdigest()


class Lifecycle:
    """Assess customers and turn changes into alerts; pure, configuration fixed."""

    def __init__(self, config: RiskConfig, model: Model | None, window: Micros | None) -> None:
        self.config = config
        self.model = model
        self.window = window
        self.cooldown = round(config.cooldown_days * DAY)
        self.alert_rank = RANK[config.alert_tier]
        self.cuts = config.tiers.cuts()
        self.lowered = config.tiers.lowered()

    def assess(self, state: CustomerState, now: Micros) -> Assessment | None:
        return assess(state, now, self.config, self.model, self.window)

    def step(self, state: CustomerState, now: Micros) -> Alert | None:
        """Assess at ``now`` and apply the lifecycle; returns the alert, if any."""
        # One Probe scores the customer now and in the due search: the very floats
        # of quick_assess (tests/unit/test_risk.py), without building the evidence,
        # which only an alert's reasons need.
        probe = Probe(state, self.config, self.model, self.window)
        quick = probe(now)
        mark = state.risk
        if mark is None:
            mark = state.risk = RiskMark(at=now)
        if quick is None:
            return None
        value, churned, explained = quick
        tier = tier_with_hysteresis(value, mark.tier, self.config)
        status = self._transition(mark, tier, churned, explained, now)
        mark.score = value
        mark.due = self._due(state, mark, probe)
        lifetime, at_risk = value_figures(
            state, value, probe.x, probe.age_days(now), self.config, self.model
        )
        mark.value_at_risk = cents(at_risk)
        mark.clv = cents(lifetime)
        if status is None:
            return None
        assert mark.episode is not None
        full = quick_assess(state, now, self.config, self.model, self.window, probe.interval)
        assert full is not None  # as the probe's: the customer has activity
        return Alert(
            status=status,
            customer_id=state.customer_id,
            tier=tier,
            risk_score=round(value, 6),
            reasons=full.reasons,
            value_at_risk=round(at_risk, 2),
            clv=round(lifetime, 2),
            segment=state.segment,
            starts_at=mark.episode,
            at=now,
            sequence=mark.sequence,
            dedup_key=dedup_key(state.customer_id, mark.episode),
        )

    def _transition(
        self, mark: RiskMark, tier: Tier, churned: bool, explained: bool, now: Micros
    ) -> Status | None:
        """Move ``mark`` to the assessment at ``now`` (``churned``: cancelled or
        lapsed; ``explained``: some reason holds); returns the transition, if any."""
        status: Status | None = None
        if churned:
            if mark.status != "churned":
                status = "churned"
                if mark.status not in OPEN:
                    mark.episode = now
        elif mark.status == "churned":
            status = "resolved"
        elif RANK[tier] >= self.alert_rank and explained:
            if mark.status in OPEN:
                if mark.alerted_tier is None or RANK[tier] > RANK[mark.alerted_tier]:
                    status = "escalated"
            elif mark.quiet_until is None or now >= mark.quiet_until:
                status = "firing"
                mark.episode = now
        elif mark.status in OPEN and RANK[tier] < self.alert_rank:
            status = "resolved"
        mark.at = now
        mark.tier = tier
        if status is not None:
            if status == "resolved":
                mark.quiet_until = now + self.cooldown
                mark.alerted_tier = None
            elif status in OPEN:
                mark.alerted_tier = tier
            mark.status = status
            mark.sequence += 1
        return status

    def changes_by(
        self, state: CustomerState, mark: RiskMark, moment: Micros, probe: Probe | None = None
    ) -> bool:
        """Would an assessment at ``moment`` (no new events) differ from ``mark``?

        Differ means: a higher tier, a lapse, or an alert that would now fire (the
        tier is high enough, evidence has appeared, no cooldown holds it back).
        """
        if probe is None:
            probe = Probe(state, self.config, self.model, self.window)
        return self._changes(mark, probe)(moment)

    def _changes(self, mark: RiskMark, probe: Probe) -> Callable[[Micros], bool]:
        """``changes_by`` for one mark at many instants, what depends on the mark
        worked out once (the due search asks about eight instants per assessment).

        Below the tier the mark holds, the tier with hysteresis is the lower of that
        tier and the count of cuts less the hysteresis reached (``tier_with_hysteresis``).
        """
        cuts = self.cuts
        lowered = self.lowered
        rank = RANK[mark.tier]
        alert_rank = self.alert_rank
        was_churned = mark.status == "churned"
        may_fire = mark.status not in OPEN and rank >= alert_rank
        quiet = mark.quiet_until
        churned_from = probe.churned_from

        def changes(moment: Micros) -> bool:
            if churned_from is not None and moment >= churned_from:
                # The probe would say churned (a customer with activity: not None),
                # whatever its score: the answer is known without scoring.
                return not was_churned
            quick = probe(moment)
            if quick is None:
                return False
            value, churned, explained = quick
            if churned:
                return not was_churned
            if was_churned:
                return False
            if bisect_right(cuts, value) > rank:
                return True
            return (
                explained
                and may_fire
                and bisect_right(lowered, value) >= alert_rank
                and (quiet is None or quiet <= moment)
            )

        return changes

    def _due(self, state: CustomerState, mark: RiskMark, probe: Probe) -> Micros | None:
        """The next instant to assess this customer if nothing happens: the first
        change within DUE_LIMIT of the last assessment, else DUE_LIMIT after it (an
        assessment then moves the search on; nobody is ever dropped).

        A function of the state and the mark alone, so every replay schedules the
        same assessments whatever the batching (risk mostly only grows while
        nothing happens, but reasons can also expire, so the search is made over
        one fixed horizon, never up to whenever the next event happens to be).
        """
        if mark.status == "churned" or history.last_activity_at(state) is None:
            return None
        horizon = mark.at + DUE_LIMIT
        found = self.next_change(state, mark, horizon, probe=probe)
        return horizon if found is None else found

    def next_change(
        self,
        state: CustomerState,
        mark: RiskMark,
        until: Micros,
        interval: float | None = UNKNOWN,
        probe: Probe | None = None,
    ) -> Micros | None:
        """First instant in (mark.at, until] at which ``changes_by`` holds, or None:
        the exact instants of a lapse or a cooldown end, else bisection on whole
        days after the last assessment. ``probe``: the state's, if the caller has it."""
        start = mark.at
        if until <= start:
            return None
        if probe is None:
            probe = Probe(state, self.config, self.model, self.window, interval)
        changes = self._changes(mark, probe)
        lapse = state.lapse_at(self.window)
        candidates = []
        if lapse is not None and start < lapse <= until:
            candidates.append(lapse)
        # From the lapse on the customer has churned whatever the instant, so
        # ``until`` is answered as the lapse is, and the lapse needs no probe at all
        # (``_changes`` answers it from ``Probe.churned_from``).
        if not changes(candidates[0] if candidates else until):
            return None
        if mark.quiet_until is not None and start < mark.quiet_until <= until:
            candidates.append(mark.quiet_until)
        # The earliest candidate at which something changes bounds the search.
        high = next((c for c in sorted(candidates) if c == lapse or changes(c)), until)
        lo, hi = 0, (high - start) // DAY
        while lo < hi:
            mid = (lo + hi) // 2
            if changes(start + (mid + 1) * DAY):
                hi = mid
            else:
                lo = mid + 1
        found = start + (lo + 1) * DAY
        return found if found < high else high

    def catch_up(self, state: CustomerState, until: Micros) -> list[Alert]:
        """Assess at every due instant up to ``until``, in time order (no new events).

        Called before an event is applied and when the watermark passes a due time;
        the due instant is kept in the mark, so the common case costs nothing.
        """
        alerts: list[Alert] = []
        mark = state.risk
        for _ in range(64):  # due instants strictly increase; a few steps at most
            if mark is None or mark.due is None or mark.due > until:
                break
            alert = self.step(state, mark.due)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def schedule(self, state: CustomerState) -> Micros | None:
        """The customer's next due instant (computed by the last assessment)."""
        return None if state.risk is None else state.risk.due
