"""The lifecycle's scorer: ``quick_score`` of one unchanging state at many instants.

An assessment scores the customer at the event's instant and then searches for
the next instant at which something would change (``Lifecycle.next_change``),
about seven more scores of the same state. What does not depend on the instant
(rhythm, totals, latest feedback, the constant terms of the score) is computed
once here; the rest follows ``evidence``/``score``/``reasons`` operation for
operation, so the result is the same float, not merely a close one
(tests/unit/test_risk.py compares them bit for bit on generated histories).
"""

from __future__ import annotations

import bisect
import math
from itertools import accumulate
from typing import Final

from retention import history
from retention.model import Model, Purchasing
from retention.risk import (
    EXPECTED_FLOOR,
    UNKNOWN,
    RiskConfig,
    Weights,
    _int,
    _sigmoid,
    _vector,
)
from retention.state import MONEY_UNIT, CustomerState
from retention.timeutil import DAY, Micros

#: ``Probe.churned_from`` of a cancelled customer: before every instant.
CANCELLED: Final = -(2**63)
#: Per weight set: intercept, weights, the weighted frequency, spend, detractor and
#: low-CSAT features, and the weighted experiences feature by count of experiences.
Terms = tuple[float, tuple[float, ...], float, float, float, float, tuple[float, ...]]


class Probe:
    """``quick_score(state, now, ...)`` as ``probe(now)``, for one state."""

    def __init__(
        self,
        state: CustomerState,
        config: RiskConfig,
        model: Model | None,
        window: Micros | None,
        interval: float | None = UNKNOWN,
    ) -> None:
        self.model = model
        self.last = history.last_activity_at(state)
        th = config.thresholds
        days = state.days
        self.day_numbers = [d.day for d in days]
        self.spends = [d.spend for d in days]
        self.spend_prefix: list[int] | None = None  # made when first needed
        self.x = max(len(days) - 1, 0)
        if interval == UNKNOWN:
            interval = history.typical_interval_days(state)
        self.interval = interval
        self.rhythm = interval if interval else config.default_interval_days
        self.negatives = [(n.at, n.code == "bad_support") for n in state.negatives]
        nps = None if state.nps is None else _int(state.nps.value)
        csat = None if state.csat is None else _int(state.csat.value)
        self.feedback_reason = (nps is not None and nps <= th.detractor_nps) or (
            csat is not None and csat <= th.low_csat
        )
        self.cancelled = (
            self.last is not None
            and state.last_cancel_at is not None
            and state.last_cancel_at >= self.last
        )
        self.t_x = float(days[-1].day - days[0].day) if days else 0.0
        self.first_day = days[0].day if days else None
        self.recent = round(config.recent_days * DAY)
        self.recent_days = config.recent_days
        self.horizon_days = config.horizon_days
        self.thresholds = th
        #: From this instant on the customer has lapsed (None: never, by inactivity).
        self.lapse = None if self.last is None or window is None else self.last + window
        #: From this instant on every probe says churned, whatever the score: the
        #: lapse, or any instant for a customer who cancelled after their last
        #: activity (None: no such instant).
        self.churned_from = CANCELLED if self.cancelled else self.lapse
        detractor = float(nps is not None and nps <= th.detractor_nps)
        low_csat = float(csat is not None and csat <= th.low_csat)
        frequency = math.log1p(self.x)
        spend = math.log1p(state.spend / MONEY_UNIT)
        # Experiences in the recent window are at most the negatives kept.
        counts = range(len(self.negatives) + 1)

        def terms(weights: Weights) -> Terms:
            w = _vector(weights)
            return (
                weights.intercept,
                w,
                w[1] * frequency,
                w[2] * spend,
                w[7] * detractor,
                w[8] * low_csat,
                tuple(w[6] * math.log1p(n) for n in counts),
            )

        # Terms of the score that do not depend on the instant, per weight set
        # (without a model no instant is scored with the model's weights).
        self.plain = terms(config.plain)
        self.with_model = self.plain if model is None else terms(config.with_model)
        #: The expected-purchases term without an expectation (the plain weights'):
        #: log(0.0 + floor), as ``features`` computes it for ``expected`` None.
        self.no_expected = _vector(config.plain)[3] * math.log(0.0 + EXPECTED_FLOOR)
        self.purchasing = (
            None
            if model is None or not days
            else Purchasing(model.bgnbd, config.horizon_days, self.x, self.t_x)
        )

    def age_days(self, now: Micros) -> float:
        """``Evidence.age_days`` at ``now``: days since the first purchase day."""
        return 0.0 if self.first_day is None else (now - self.first_day * DAY) / DAY

    def __call__(self, now: Micros) -> tuple[float, bool, bool] | None:
        last = self.last
        if last is None:
            return None
        recent_days = self.recent_days
        recency = max(0.0, (now - last) / DAY)
        recent_from = now - self.recent
        frequency_ratio = spend_ratio = None
        numbers = self.day_numbers
        if numbers:
            split = bisect.bisect_left(numbers, -(-recent_from // DAY))
            n_base, n_recent = split, len(numbers) - split
            span = (recent_from - numbers[0] * DAY) / DAY
            if n_recent and n_base >= 2 and span >= recent_days:
                frequency_ratio = n_recent / (n_base / span * recent_days)
            if n_base and n_recent:
                prefix = self.spend_prefix
                if prefix is None:
                    prefix = self.spend_prefix = list(accumulate(self.spends, initial=0))
                base_mean = prefix[split] / n_base
                if base_mean > 0:
                    spend_ratio = (prefix[-1] - prefix[split]) / n_recent / base_mean
        experiences = bad_support = 0
        for at, bad in reversed(self.negatives):
            if at <= recent_from:
                break
            if at <= now:
                experiences += 1
                bad_support += bad
        alive = expected = None
        purchasing = self.purchasing
        if purchasing is not None:
            alive, expected = purchasing.at(self.age_days(now))
        lapsed = self.lapse is not None and now >= self.lapse
        churned = self.cancelled or lapsed
        th = self.thresholds
        explained = (
            churned
            or recency / self.rhythm >= th.overdue_ratio
            or (frequency_ratio is not None and frequency_ratio <= th.frequency_ratio)
            or (spend_ratio is not None and spend_ratio <= th.spend_ratio)
            or self.feedback_reason
            or bad_support >= th.bad_support
            or experiences >= th.bad_experiences
            or (alive is not None and self.x > 0 and alive < th.p_alive)
            or (expected is not None and expected < th.expected_purchases)
        )
        if self.cancelled:
            return 1.0, churned, explained
        intercept, w, frequency, spend, detractor, low_csat, experienced = (
            self.plain if expected is None else self.with_model
        )
        z = intercept
        z += w[0] * math.log1p(recency)
        z += frequency
        z += spend
        if expected is None:
            z += self.no_expected
        else:
            z += w[3] * math.log((expected or 0.0) + EXPECTED_FLOOR)
        z += w[4] * (0.0 if frequency_ratio is None else max(0.0, 1.0 - frequency_ratio))
        z += w[5] * (0.0 if spend_ratio is None else max(0.0, 1.0 - spend_ratio))
        z += experienced[experiences]
        z += detractor
        z += low_csat
        return _sigmoid(z), churned, explained
