"""The risk configuration: score weights, reason thresholds, tier cuts and alerting,
read from a JSON file (``retention/risk_defaults.json`` by default, made by
``make calibrate``). Kept apart from ``retention/risk.py``, which scores with it
and is compiled by mypyc (``retention/compiled.py``), which cannot compile msgspec
Structs; and since a compiled module's ``__file__`` is not beside the defaults file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

Tier = Literal["low", "medium", "high", "critical"]
TIERS: Final[tuple[Tier, ...]] = ("low", "medium", "high", "critical")
RANK: Final[dict[str, int]] = {tier: index for index, tier in enumerate(TIERS)}
#: Feature names, in the order of ``features()`` and of ``Weights``' fields.
FEATURES: Final = (
    "recency",
    "frequency",
    "spend",
    "expected",
    "frequency_drop",
    "spend_drop",
    "experiences",
    "detractor",
    "low_csat",
)


class RiskConfigError(ValueError):
    """A risk configuration file that cannot be used, with the reason."""


class Weights(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Logistic weights; each feature is defined in ``features()``."""

    intercept: float = 0.0
    recency: float = 0.0
    frequency: float = 0.0
    spend: float = 0.0
    expected: float = 0.0
    frequency_drop: float = 0.0
    spend_drop: float = 0.0
    experiences: float = 0.0
    detractor: float = 0.0
    low_csat: float = 0.0

    def vector(self) -> tuple[float, ...]:
        return tuple(getattr(self, name) for name in FEATURES)


class Thresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a piece of evidence becomes a reason (it does not change the score)."""

    overdue_ratio: float = 2.0  # days since last activity / own typical interval
    frequency_ratio: float = 0.5  # recent purchase days / baseline expectation
    spend_ratio: float = 0.5  # recent mean spend per purchase day / baseline
    detractor_nps: int = 6  # latest NPS at or below
    low_csat: int = 2  # latest CSAT at or below
    bad_support: int = 1  # bad or unresolved support contacts in the recent window
    bad_experiences: int = 2  # any bad experiences in the recent window ("several")
    p_alive: float = 0.5  # BG/NBD probability alive below
    expected_purchases: float = 0.2  # expected purchases in the horizon below


class TierCuts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Score at or above which a tier is entered; leaving needs ``hysteresis`` less."""

    medium: float = 0.5
    high: float = 0.7
    critical: float = 0.85
    hysteresis: float = 0.05

    def cuts(self) -> tuple[float, float, float]:
        return (self.medium, self.high, self.critical)

    def lowered(self) -> tuple[float, ...]:
        """The cuts less the hysteresis: where a tier is left (ascending, like the cuts)."""
        return tuple(cut - self.hysteresis for cut in self.cuts())


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    horizon_days: float = 90.0
    recent_days: float = 90.0  # window for frequency/spend drops and bad experiences
    #: Rhythm assumed for a customer with fewer than two purchase days (days).
    default_interval_days: float = 30.0
    plain: Weights = Weights()  # used without a BG/NBD model
    with_model: Weights = Weights()  # used with one (adds ``expected``)
    thresholds: Thresholds = Thresholds()
    tiers: TierCuts = TierCuts()
    alert_tier: Tier = "high"
    cooldown_days: float = 30.0
    clv_months: int = 12
    discount_rate: float = 0.01  # monthly
    #: Acceptable churn (DESIGN section 10): per segment, the monthly churn rate the
    #: business accepts, e.g. {"enterprise": 0.02, "self-serve": 0.08}; a segment's
    #: churn rate over it is for operators to look at (the /segments view, the
    #: churnwatch_segment_churn_target gauge).
    segment_churn_targets: dict[str, float] = msgspec.field(default_factory=dict)
    #: How the weights were obtained (command, data, split, fit quality).
    provenance: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for segment, target in self.segment_churn_targets.items():
            if not (math.isfinite(target) and 0.0 <= target <= 1.0) or not segment:
                raise RiskConfigError(
                    f"segment_churn_targets: {segment!r} must be a churn rate in [0, 1]"
                )
        cuts = self.tiers.cuts()
        if not all(0.0 < c < 1.0 for c in cuts) or list(cuts) != sorted(set(cuts)):
            raise RiskConfigError(f"tier cuts must be increasing within (0, 1), got {cuts}")
        if not 0.0 <= self.tiers.hysteresis < cuts[0]:
            raise RiskConfigError("tiers.hysteresis must be >= 0 and below the medium cut")
        if self.horizon_days <= 0 or self.recent_days <= 0 or self.default_interval_days <= 0:
            raise RiskConfigError(
                "horizon_days, recent_days and default_interval_days must be positive"
            )
        if self.cooldown_days < 0 or self.clv_months < 1 or self.discount_rate <= -1:
            raise RiskConfigError("cooldown_days >= 0, clv_months >= 1, discount_rate > -1")
        for weights in (self.plain, self.with_model):
            if not all(math.isfinite(w) for w in (weights.intercept, *weights.vector())):
                raise RiskConfigError("weights must be finite numbers")


DEFAULTS_PATH: Final = Path(__file__).with_name("risk_defaults.json")


def load_risk_config(path: str | Path | None = None) -> RiskConfig:
    """The configuration at ``path``, or the calibrated defaults shipped with churnwatch."""
    source = Path(path) if path else DEFAULTS_PATH
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise RiskConfigError(f"cannot read risk configuration {source}: {exc.strerror}") from None
    try:
        return msgspec.json.decode(data, type=RiskConfig)
    except (msgspec.ValidationError, msgspec.DecodeError, RiskConfigError) as exc:
        raise RiskConfigError(f"invalid risk configuration {source}: {exc}") from None


def dump_risk_config(config: RiskConfig) -> bytes:
    return msgspec.json.format(msgspec.json.encode(config), indent=2) + b"\n"
