"""A generated history through the CLI: the same state with one worker or two."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from retention.timeutil import parse_time
from streams import topics
from streams.kafka_admin import end_offsets
from streams.replay import ReplayResult, replay
from streams.settings import Settings
from tests.brokers import KIND, new_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
END = "2025-07-01T00:00:00Z"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    command = [
        sys.executable, "-m", "streams.cli", "generate", "--customers", "400", "--days", "150",
        "--seed", "11", "--end", END, "--out", str(path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "400 customers" in done.stderr
    return path


def alert_keys(alerts: list[dict[str, Any]]) -> set[tuple[str, int, str, str]]:
    return {(a["dedup_key"], a["sequence"], a["status"], a["tier"]) for a in alerts}


def test_produce_publishes_every_line(history: Path, tmp_path: Path) -> None:
    lines = history.read_bytes().count(b"\n")
    with new_broker(tmp_path) as broker:
        command = [sys.executable, "-m", "streams.cli", "produce", str(history),
                   "--broker", broker.url]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        ends = asyncio.run(end_offsets(broker.bootstrap, list(topics.INPUT_TOPICS)))
    assert sum(ends.values()) == lines
    assert f"published {lines} records" in done.stderr


@pytest.fixture(scope="module")
def one_worker(history: Path, tmp_path_factory: pytest.TempPathFactory) -> ReplayResult:
    """The replay on the session's broker with one worker: the reference."""
    workdir = tmp_path_factory.mktemp("one")
    return replay(
        history, parse_time(END), partitions=4, workers=1, embedded=KIND, base=Settings(),
        workdir=workdir,
    )  # fmt: skip


@pytest.mark.tansu_smoke
def test_tansu_computes_what_kafka_does(
    history: Path, one_worker: ReplayResult, tmp_path: Path
) -> None:
    """The demo's default broker gives the same state and alerts, its work-arounds on."""
    on_tansu = replay(
        history, parse_time(END), partitions=2, workers=1, embedded="tansu", base=Settings(),
        workdir=tmp_path,
    )  # fmt: skip
    assert on_tansu.settings.broker_quirks == "tansu"
    assert on_tansu.customers == one_worker.customers
    assert alert_keys(on_tansu.alerts) == alert_keys(one_worker.alerts)
    assert on_tansu.events == one_worker.events


def test_two_workers_compute_what_one_does(
    history: Path, one_worker: ReplayResult, tmp_path: Path
) -> None:
    as_of = parse_time(END)
    one = one_worker
    assert one.settings.broker_quirks == ("tansu" if KIND == "tansu" else "")
    two = replay(
        history,
        as_of,
        partitions=4,
        workers=2,
        embedded=KIND,
        base=Settings(),
        workdir=tmp_path / "2",
    )
    assert len(one.customers) == 400
    # Equal field for field, risk marks included: events are applied in event-time
    # order once every input topic has been read that far, so which topic a worker
    # happened to read first (which the number of workers changes) decides nothing.
    assert one.customers == two.customers
    assert alert_keys(one.alerts) == alert_keys(two.alerts)
    assert len(alert_keys(one.alerts)) > 50
    events = one.events
    assert events == two.events
    assert events["consumed"] == events["valid"] + events["deadletter"] + events["duplicates"]
    assert events["deadletter"] > 0 and events["duplicates"] > 0
