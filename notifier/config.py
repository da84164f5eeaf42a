"""The notifier's configuration: one YAML or JSON file, validated whole at start.

Every error names the field it is about, as a path into the file
(``destinations[1].filters.tiers[0]``), so a typo is found before anything
connects. Unknown fields are errors too: a misspelt ``daily_capacty`` must not
silently mean "no capacity". Secrets (webhook URLs with tokens, signing keys) may
come from an environment variable or a file instead of the file itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from notifier.config_file import File, Format, RawDelivery, RawDestination, RawFilters, explain
from retention.timeutil import SECOND, parse_duration

#: Placeholders a link template may use; each is percent-escaped when filled in.
LINK_FIELDS: Final = frozenset({"customer_id", "dedup_key", "segment", "tier"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """The configuration cannot be used; the message starts with the field's path."""


# -- what the notifier runs with (the file's shape: notifier/config_file.py) ------------


@dataclass(frozen=True)
class Filters:
    """Which episodes a destination is shown; None: no restriction on that field."""

    tiers: frozenset[str] | None = None
    segments: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    min_value_at_risk: float | None = None


@dataclass(frozen=True)
class Destination:
    name: str
    format: Format
    url: str = field(repr=False)
    #: The HMAC-SHA256 key of the JSON format (required there; Slack has none).
    secret: bytes | None = field(default=None, repr=False)
    #: At most this many openings per day (None: no limit).
    daily_capacity: int | None = None
    link_template: str | None = None
    filters: Filters = Filters()
    #: Concurrent deliveries to this destination (None: ``delivery.lanes``); Slack
    #: takes about one message a second per webhook, so 1 suits it.
    lanes: int | None = None


@dataclass(frozen=True)
class Delivery:
    timeout: float = 10.0
    max_attempts: int = 8
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    #: Concurrent deliveries per destination; an episode's transitions share a lane,
    #: so they arrive in sequence order.
    lanes: int = 4


@dataclass(frozen=True)
class Config:
    destinations: tuple[Destination, ...]
    topic: str = "churnwatch.alerts"
    group_id: str = "churnwatch-notifier"
    dead_letter_topic: str = "churnwatch.notify.dead"
    state_topic: str = "churnwatch.notify.state"
    start: Literal["earliest", "latest"] = "earliest"
    delivery: Delivery = Delivery()
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    #: Seconds openings are held to be ranked by value at risk (capacity.py).
    hold: float = 30.0
    currency: str = ""
    metrics_port: int | None = None
    #: Records read and not yet finished before the consumer stops fetching.
    max_in_flight: int = 10_000


def load(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read and validate ``path`` (YAML, of which JSON is a subset)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse(text, environ, source=str(path))


def parse(text: str, environ: dict[str, str] | None = None, source: str = "config") -> Config:
    try:
        raw = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top, got {type(raw).__name__}")
    try:
        shaped = msgspec.convert(raw, File)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(exc)) from None
    return _build(shaped, os.environ if environ is None else environ)


def _seconds(where: str, value: str | float, *, zero_ok: bool = False) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        try:
            micros = parse_duration(str(value))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if micros is None:
            raise ConfigError(f"{where}: must be a finite duration")
        seconds = micros / SECOND
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        bound = "0 s or more" if zero_ok else "more than 0 s"
        raise ConfigError(f"{where}: must be {bound}, got {value!r}")
    return seconds


def _build(shaped: File, environ: dict[str, str] | os._Environ[str]) -> Config:
    if not shaped.destinations:
        raise ConfigError("destinations: at least one is required")
    names: set[str] = set()
    destinations = []
    for index, raw in enumerate(shaped.destinations):
        where = f"destinations[{index}]"
        destination = _destination(where, raw, shaped.link_template, environ)
        if destination.name in names:
            raise ConfigError(f"{where}.name: {destination.name!r} is used twice")
        names.add(destination.name)
        destinations.append(destination)
    if shaped.link_template is not None:
        _check_template("link_template", shaped.link_template)
    zone = _zone(shaped.timezone, environ)
    if shaped.metrics_port is not None and not 0 <= shaped.metrics_port <= 65535:
        raise ConfigError(f"metrics_port: must be 0..65535, got {shaped.metrics_port}")
    if shaped.max_in_flight < 1:
        raise ConfigError(f"max_in_flight: must be at least 1, got {shaped.max_in_flight}")
    source = shaped.source
    for name in ("topic", "group_id", "dead_letter_topic", "state_topic"):
        if not getattr(source, name):
            raise ConfigError(f"source.{name}: must not be empty")
    if len({source.topic, source.dead_letter_topic, source.state_topic}) < 3:
        raise ConfigError("source.dead_letter_topic: topic, dead-letter and state topics differ")
    return Config(
        destinations=tuple(destinations),
        topic=source.topic,
        group_id=source.group_id,
        dead_letter_topic=source.dead_letter_topic,
        state_topic=source.state_topic,
        start=source.start,
        delivery=_delivery(shaped.delivery),
        timezone=zone,
        hold=_seconds("hold", shaped.hold, zero_ok=True),
        currency=shaped.currency,
        metrics_port=shaped.metrics_port,
        max_in_flight=shaped.max_in_flight,
    )


def _zone(name: str | None, environ: dict[str, str] | os._Environ[str]) -> ZoneInfo:
    where = "timezone"
    if name is None:
        name, where = environ.get("CHURNWATCH_TIMEZONE") or "UTC", "CHURNWATCH_TIMEZONE"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: unknown IANA time zone {name!r} (e.g. UTC, Europe/Berlin)"
        ) from None


def _delivery(raw: RawDelivery) -> Delivery:
    if raw.max_attempts < 1:
        raise ConfigError(f"delivery.max_attempts: must be at least 1, got {raw.max_attempts}")
    if not 1 <= raw.lanes <= 64:
        raise ConfigError(f"delivery.lanes: must be 1..64, got {raw.lanes}")
    initial = _seconds("delivery.backoff_initial", raw.backoff_initial)
    most = _seconds("delivery.backoff_max", raw.backoff_max)
    if most < initial:
        raise ConfigError("delivery.backoff_max: must not be less than delivery.backoff_initial")
    return Delivery(
        timeout=_seconds("delivery.timeout", raw.timeout),
        max_attempts=raw.max_attempts,
        backoff_initial=initial,
        backoff_max=most,
        lanes=raw.lanes,
    )


def _destination(
    where: str,
    raw: RawDestination,
    link_template: str | None,
    environ: dict[str, str] | os._Environ[str],
) -> Destination:
    if not _NAME.match(raw.name):
        raise ConfigError(f"{where}.name: {raw.name!r}: use 1-64 letters, digits, '_', '.' or '-'")
    url = _one_of(where, "url", raw.url, raw.url_env, None, environ, required=True)
    assert url is not None
    parts = urlsplit(url)
    named = "url" if raw.url is not None else "url_env"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.{named}: expected an http(s):// URL")
    try:
        parts.port  # noqa: B018  (raises for a port out of range)
    except ValueError as exc:
        raise ConfigError(f"{where}.{named}: {exc}") from None
    secret = _one_of(
        where, "secret", raw.secret, raw.secret_env, raw.secret_file, environ, required=False
    )
    if raw.format == "json" and not secret:
        raise ConfigError(
            f"{where}.secret: required for format json (or secret_env, secret_file): "
            "the body is signed with it"
        )
    if raw.format == "slack" and secret:
        raise ConfigError(f"{where}.secret: Slack incoming webhooks take no signing key")
    if raw.daily_capacity is not None and raw.daily_capacity < 1:
        raise ConfigError(
            f"{where}.daily_capacity: must be at least 1 (omit it for no limit), "
            f"got {raw.daily_capacity}"
        )
    if raw.lanes is not None and not 1 <= raw.lanes <= 64:
        raise ConfigError(f"{where}.lanes: must be 1..64, got {raw.lanes}")
    template = raw.link_template if raw.link_template is not None else link_template
    if raw.link_template is not None:
        _check_template(f"{where}.link_template", raw.link_template)
    return Destination(
        name=raw.name,
        format=raw.format,
        url=url,
        secret=secret.encode() if secret else None,
        daily_capacity=raw.daily_capacity,
        link_template=template,
        filters=_filters(f"{where}.filters", raw.filters),
        lanes=raw.lanes,
    )


def _one_of(
    where: str,
    name: str,
    inline: str | None,
    env: str | None,
    path: str | None,
    environ: dict[str, str] | os._Environ[str],
    *,
    required: bool,
) -> str | None:
    """A value given inline, by environment variable (``<name>_env``) or by file
    (``<name>_file``): exactly one of them, or none when not required."""
    given = [
        label
        for label, value in ((name, inline), (f"{name}_env", env), (f"{name}_file", path))
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"{where}.{given[1]}: give only one of {', '.join(given)}")
    if not given:
        if required:
            raise ConfigError(f"{where}.{name}: required (or {name}_env)")
        return None
    if env is not None:
        value = environ.get(env)
        if not value:
            raise ConfigError(f"{where}.{name}_env: environment variable {env} is not set")
        return value
    if path is not None:
        try:
            # A mounted secret usually ends with a newline the secret does not hold.
            return Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{where}.{name}_file: {exc.strerror or exc}: {path}") from None
    if not inline:
        raise ConfigError(f"{where}.{name}: must not be empty")
    return inline


def _filters(where: str, raw: RawFilters) -> Filters:
    for name in ("tiers", "segments", "statuses"):
        if getattr(raw, name) == []:
            raise ConfigError(f"{where}.{name}: an empty list would match nothing; omit it")
    if raw.min_value_at_risk is not None and raw.min_value_at_risk != raw.min_value_at_risk:
        raise ConfigError(f"{where}.min_value_at_risk: must be a number")
    return Filters(
        tiers=None if raw.tiers is None else frozenset(raw.tiers),
        segments=None if raw.segments is None else frozenset(raw.segments),
        statuses=None if raw.statuses is None else frozenset(raw.statuses),
        min_value_at_risk=raw.min_value_at_risk,
    )


def _check_template(where: str, template: str) -> None:
    parts = urlsplit(template)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}: expected an http(s):// URL template")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = fields - LINK_FIELDS
    if unknown:
        raise ConfigError(
            f"{where}: unknown placeholder {{{sorted(unknown)[0]}}}; "
            f"use {', '.join('{' + f + '}' for f in sorted(LINK_FIELDS))}"
        )


def as_dict(config: Config) -> dict[str, Any]:
    """A summary safe to log: no URLs (they may hold tokens), no secrets."""
    return {
        "topic": config.topic,
        "group_id": config.group_id,
        "hold_seconds": config.hold,
        "timezone": str(config.timezone),
        "destinations": [
            {"name": d.name, "format": d.format, "daily_capacity": d.daily_capacity}
            for d in config.destinations
        ],
    }
