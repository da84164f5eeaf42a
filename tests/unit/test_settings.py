"""Settings come from CHURNWATCH_* variables once, with clear errors for bad values."""

from __future__ import annotations

import pytest

from retention.timeutil import DAY, HOUR, parse_duration
from streams.settings import Settings, SettingsError, to_env


def test_defaults_run_locally() -> None:
    settings = Settings.from_env({})
    assert settings.broker == "kafka://localhost:9092"
    assert settings.window == 90 * DAY
    assert settings.lateness == 6 * HOUR
    assert settings.bootstrap == "localhost:9092"


def test_environment_is_typed_and_overrides_apply() -> None:
    env = {
        "CHURNWATCH_BROKER": "kafka://k1:9092;k2:9092",
        "CHURNWATCH_PARTITIONS": "12",
        "CHURNWATCH_ACTIVITY_WINDOW": "none",
        "CHURNWATCH_BATCH_WITHIN": "0.2",
        "CHURNWATCH_PERIOD": "week",
    }
    settings = Settings.from_env(env, partitions=3)
    assert settings.partitions == 3  # the CLI override wins
    assert settings.bootstrap == "k1:9092,k2:9092"
    assert settings.window is None
    assert settings.batch_within == 0.2
    assert settings.period == "week"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CHURNWATCH_PARTITIONS", "four", "expected a number"),
        ("CHURNWATCH_PARTITIONS", "0", "at least 1"),
        ("CHURNWATCH_PERIOD", "fortnight", "expected one of day, week, month, quarter"),
        ("CHURNWATCH_ACTIVITY_WINDOW", "ninety days", "not a duration"),
        ("CHURNWATCH_ALLOWED_LATENESS", "none", "finite"),
        ("CHURNWATCH_BROKER", "localhost:9092", "kafka://"),
        ("CHURNWATCH_CLOCK", "sometimes", "live, off"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({name: value})
    assert name in str(error.value)
    assert message in str(error.value)


def test_round_trip_through_the_environment() -> None:
    settings = Settings(partitions=7, activity_window="30d", clock="off", batch_within=0.5)
    assert Settings.from_env(to_env(settings)) == settings


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("90d", 90 * DAY),
        ("12h", 12 * HOUR),
        ("1.5s", 1_500_000),
        ("250ms", 250_000),
        ("2", 2_000_000),
    ],
)
def test_durations(text: str, micros: int) -> None:
    assert parse_duration(text) == micros
