"""The configuration file's shape, as msgspec checks it: types and unknown fields.

notifier/config.py checks what types cannot (ranges, URLs, secrets, zones) and
builds the values the notifier runs with; both report errors as ``path: what``.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

Format = Literal["slack", "json"]
Status = Literal["firing", "escalated", "resolved", "churned"]
Tier = Literal["low", "medium", "high", "critical"]
STATUSES: Final[tuple[Status, ...]] = ("firing", "escalated", "resolved", "churned")
TIERS: Final[tuple[Tier, ...]] = ("low", "medium", "high", "critical")
#: The choices of each enumerated field, named in its error.
_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "format": ("slack", "json"),
    "tiers": TIERS,
    "statuses": STATUSES,
    "start": ("earliest", "latest"),
}


class RawFilters(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tiers: list[Tier] | None = None
    segments: list[str] | None = None
    statuses: list[Status] | None = None
    min_value_at_risk: float | None = None


class RawDestination(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    format: Format
    url: str | None = None
    url_env: str | None = None
    secret: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    daily_capacity: int | None = None
    link_template: str | None = None
    lanes: int | None = None
    filters: RawFilters = RawFilters()


class RawSource(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    topic: str = "churnwatch.alerts"
    group_id: str = "churnwatch-notifier"
    dead_letter_topic: str = "churnwatch.notify.dead"
    state_topic: str = "churnwatch.notify.state"
    start: Literal["earliest", "latest"] = "earliest"


class RawDelivery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    timeout: str | float = "10s"
    max_attempts: int = 8
    backoff_initial: str | float = "1s"
    backoff_max: str | float = "5m"
    lanes: int = 4


class File(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    destinations: list[RawDestination]
    source: RawSource = RawSource()
    delivery: RawDelivery = RawDelivery()
    #: None: CHURNWATCH_TIMEZONE (the business's calendar) when set, else UTC.
    timezone: str | None = None
    hold: str | float = "30s"
    link_template: str | None = None
    currency: str = ""
    metrics_port: int | None = None
    max_in_flight: int = 10_000


def explain(exc: msgspec.ValidationError) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.a[0].b``` as ``a[0].b: expected
    int, got str``: the path first, as every other error here."""
    message = str(exc)
    where = ""
    if " - at `$" in message:
        message, _, rest = message.rpartition(" - at `$")
        where = rest.rstrip("`").lstrip(".")
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        name = unknown.group(1)
        return f"{where + '.' if where else ''}{name}: unknown field"
    missing = re.match(r"Object missing required field `(.+)`", message)
    if missing:
        name = missing.group(1)
        return f"{where + '.' if where else ''}{name}: required"
    enum = re.match(r"Invalid enum value (.+)", message)
    if enum:
        field_name = re.sub(r"\[\d+\]$", "", where).rsplit(".", 1)[-1]
        choices = _CHOICES.get(field_name)
        if choices:
            return f"{where}: expected one of {', '.join(choices)}, got {enum.group(1)}"
    message = message.replace("`", "")
    return f"{where or 'config'}: {message[:1].lower()}{message[1:]}"
