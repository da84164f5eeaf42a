"""The notifier's configuration: every bad field is refused with its path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifier.config import ConfigError, load, parse

ROOT = Path(__file__).resolve().parents[2]


def _good() -> dict[str, Any]:
    return {
        "timezone": "Europe/Berlin",
        "hold": "45s",
        "link_template": "https://cw.example/ui/customers/{customer_id}",
        "delivery": {"timeout": 3, "max_attempts": 5, "backoff_initial": "200ms"},
        "destinations": [
            {
                "name": "team-a",
                "format": "slack",
                "url": "https://hooks.slack.com/services/T/B/X",
                "daily_capacity": 20,
                "filters": {"tiers": ["high", "critical"], "min_value_at_risk": 100},
            },
            {"name": "crm", "format": "json", "url": "http://crm/h", "secret_env": "CRM_KEY"},
        ],
    }


def _parse(raw: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return parse(yaml.safe_dump(raw), {"CRM_KEY": "k3y"} if env is None else env)


def test_a_good_file_gives_typed_values() -> None:
    config = _parse(_good())
    assert config.hold == 45.0 and str(config.timezone) == "Europe/Berlin"
    assert config.delivery.timeout == 3.0 and config.delivery.backoff_initial == 0.2
    slack, crm = config.destinations
    assert slack.daily_capacity == 20 and slack.filters.tiers == frozenset({"high", "critical"})
    assert slack.link_template == "https://cw.example/ui/customers/{customer_id}"
    assert crm.secret == b"k3y" and crm.daily_capacity is None


def test_json_is_read_as_well(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_text(json.dumps(_good()))
    assert load(path, {"CRM_KEY": "x"}).destinations[1].name == "crm"


def test_the_example_file_is_valid() -> None:
    env = {
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/x",
        "CRM_WEBHOOK_URL": "http://crm:8080/hooks",
        "CRM_WEBHOOK_SECRET": "s",
    }
    config = load(ROOT / "deploy" / "notify.example.yaml", env)
    assert [d.name for d in config.destinations] == ["success-enterprise", "crm"]


def _with(path: str, value: Any) -> dict[str, Any]:
    """The good configuration with one field (``a.b[0].c``) set (or deleted: ...)."""
    raw = _good()
    node: Any = raw
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is ...:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return raw


BAD = [
    ("destinations[0].daily_capacty", 5, "destinations[0].daily_capacty: unknown field"),
    ("destinations[0].daily_capacity", 0, "destinations[0].daily_capacity: must be at least 1"),
    ("destinations[0].daily_capacity", "ten", "destinations[0].daily_capacity: expected int"),
    ("destinations[0].format", "teams", "destinations[0].format: expected one of"),
    ("destinations[0].name", "a/b", "destinations[0].name:"),
    ("destinations[1].name", "team-a", "destinations[1].name: 'team-a' is used twice"),
    ("destinations[0].url", "ftp://x/y", "destinations[0].url: expected an http(s):// URL"),
    ("destinations[0].url", ..., "destinations[0].url: required"),
    ("destinations[0].url", "https://h:99999/x", "destinations[0].url: Port out of range"),
    ("destinations[0].secret", "s", "destinations[0].secret: Slack incoming webhooks take no"),
    ("destinations[1].secret_env", ..., "destinations[1].secret: required for format json"),
    ("destinations[1].secret", "x", "destinations[1].secret_env: give only one of"),
    ("destinations[1].secret_env", "NOPE", "destinations[1].secret_env: environment variable"),
    ("destinations[0].filters.tiers", ["hgih"], "destinations[0].filters.tiers[0]: expected one"),
    ("destinations[0].filters.tiers", [], "destinations[0].filters.tiers: an empty list"),
    ("destinations[0].filters.statuses", ["open"], "destinations[0].filters.statuses[0]"),
    (
        "destinations[0].filters.min_value_at_risk",
        "a",
        "destinations[0].filters.min_value_at_risk: expected",
    ),
    ("destinations[0].filters.colour", "red", "destinations[0].filters.colour: unknown field"),
    ("destinations[0].link_template", "https://x/{id}", "destinations[0].link_template: unknown"),
    ("destinations[0].link_template", "/ui/{customer_id}", "destinations[0].link_template: exp"),
    ("destinations", [], "destinations: at least one is required"),
    ("destinations", ..., "destinations: required"),
    ("timezone", "Mars/Olympus", "timezone: unknown IANA time zone"),
    ("destinations[0].lanes", 0, "destinations[0].lanes: must be 1..64"),
    ("hold", "soon", "hold: not a duration"),
    ("hold", -1, "hold: must be 0 s or more"),
    ("delivery.timeout", 0, "delivery.timeout: must be more than 0 s"),
    ("delivery.timeout", "none", "delivery.timeout: must be a finite duration"),
    ("delivery.max_attempts", 0, "delivery.max_attempts: must be at least 1"),
    ("delivery.backoff_max", "100ms", "delivery.backoff_max: must not be less than"),
    ("delivery.lanes", 0, "delivery.lanes: must be 1..64"),
    ("delivery.retries", 3, "delivery.retries: unknown field"),
    ("source.start", "middle", "source.start: expected one of"),
    ("source.state_topic", "churnwatch.alerts", "source.dead_letter_topic: topic, dead-letter"),
    ("source.group_id", "", "source.group_id: must not be empty"),
    ("metrics_port", 70000, "metrics_port: must be 0..65535"),
    ("max_in_flight", 0, "max_in_flight: must be at least 1"),
    ("colour", "red", "colour: unknown field"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_field_is_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(_with(path, value))
    assert str(caught.value).startswith(message.split(":")[0]), caught.value
    assert message in str(caught.value)


def test_the_zone_defaults_to_the_business_calendar() -> None:
    raw = _with("timezone", ...)
    assert str(_parse(raw, {"CRM_KEY": "k"}).timezone) == "UTC"
    berlin = {"CRM_KEY": "k", "CHURNWATCH_TIMEZONE": "Europe/Berlin"}
    assert str(_parse(raw, berlin).timezone) == "Europe/Berlin"
    with pytest.raises(ConfigError, match=r"^CHURNWATCH_TIMEZONE: unknown IANA"):
        _parse(raw, {"CRM_KEY": "k", "CHURNWATCH_TIMEZONE": "Nowhere/Else"})
    tokyo = {"CRM_KEY": "k", "CHURNWATCH_TIMEZONE": "Asia/Tokyo"}
    assert str(_parse(_good(), tokyo).timezone) == "Europe/Berlin"  # the file's own wins


def test_a_secret_file_loses_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    raw = _with("destinations[1].secret_env", ...)
    raw["destinations"][1]["secret_file"] = str(secret)
    assert _parse(raw).destinations[1].secret == b"s3cret"
    raw["destinations"][1]["secret_file"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"^destinations\[1\]\.secret_file: "):
        _parse(raw)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping"),
        ("a: [\n", "not valid YAML or JSON"),
        ("{", "not valid"),
    ],
)
def test_a_file_that_is_no_mapping_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text, {})


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot be read"):
        load(tmp_path / "missing.yaml")
