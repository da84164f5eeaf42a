"""An alert's reasons in words, for people: ``overdue 3.2 (2.0)`` becomes
"no activity for 3.2 times their usual interval between visits (alert from 2 times)".

Each reason is evidence ``{code, value, threshold}`` (README, "Churn risk and
alerts"); the wording says what the value measures and where the threshold lies,
so a success manager can tell a customer who drifted away from one who complained.
A code this module does not know (a newer worker) is still shown, as code and
numbers, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from schemas.alert import AlertReason


def _num(value: float) -> str:
    """A figure as people write it: 3.2, 12, 0.45 (no trailing zeros)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def _plural(count: float, one: str, many: str) -> str:
    return one if count == 1 else many


_WORDS: Final[dict[str, Callable[[float, float], str]]] = {
    "cancelled": lambda v, t: "cancelled their subscription",
    "lapsed": lambda v, t: (
        f"no activity for {_num(v)} days (churned after {_num(t)} days without any)"
    ),
    "overdue": lambda v, t: (
        f"no activity for {_num(v)} times their usual interval between visits "
        f"(alert from {_num(t)} times)"
    ),
    "frequency_drop": lambda v, t: (
        f"buying {_pct(v)} as often as they used to (alert at {_pct(t)} or less)"
    ),
    "spend_drop": lambda v, t: (
        f"spending {_pct(v)} of their usual amount per purchase (alert at {_pct(t)} or less)"
    ),
    "detractor": lambda v, t: f"latest NPS score {_num(v)} of 10, a detractor ({_num(t)} or less)",
    "low_csat": lambda v, t: f"latest satisfaction (CSAT) {_num(v)} of 5 ({_num(t)} or less)",
    "bad_support": lambda v, t: (
        f"{_num(v)} bad or unresolved support {_plural(v, 'contact', 'contacts')} recently"
    ),
    "bad_experiences": lambda v, t: (
        f"{_num(v)} bad {_plural(v, 'experience', 'experiences')} recently (alert from {_num(t)})"
    ),
    "p_alive": lambda v, t: (
        f"{_pct(v)} likely to still be a customer, by their buying pattern (alert below {_pct(t)})"
    ),
    "expected_purchases": lambda v, t: (
        f"expected to buy {_num(v)} times in the coming months (alert below {_num(t)})"
    ),
}


def reason_text(reason: AlertReason) -> str:
    words = _WORDS.get(reason.code)
    if words is None:
        return f"{reason.code}: {_num(reason.value)} (threshold {_num(reason.threshold)})"
    return words(reason.value, reason.threshold)


def reasons_text(reasons: Iterable[AlertReason]) -> list[str]:
    return [reason_text(reason) for reason in reasons]


def money(amount: float, currency: str = "") -> str:
    """``12,345.60`` with the configured currency (``USD 12,345.60``; none by default:
    alert records carry amounts in the inputs' currency, which churnwatch does not know)."""
    text = f"{amount:,.2f}"
    return f"{currency} {text}" if currency else text
