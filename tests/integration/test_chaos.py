"""Workers killed with SIGKILL and the group rescaled mid-stream: nothing lost,
nothing counted twice. The end state is compared with the independent oracle.

Each test streams a generated history of 100k+ events into the embedded broker,
disturbs the consumer group while the workers are busy, waits until every input
record is committed, closes the periods with a final tick and then checks the
customers table, the period figures, the cohorts, the counters and the alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processor.partition import decode_partition
from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.generator import write_history
from streams.inputs import read_events
from streams.kafka_admin import create_topics, read_all, wait_for_zero_lag
from streams.partitions import is_partition_key
from streams.produce import publish
from streams.replay import collect, send_ticks, tick_and_wait
from streams.settings import Settings
from streams.workers import local_settings
from tests.brokers import new_broker
from tests.fleet import Fleet
from tests.inprocess import Run
from tests.reliability import Outcome, check_outcome, record_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AS_OF = "2025-07-01T00:00:00Z"
PARTITIONS = 4


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chaos") / "history.jsonl"
    stats = write_history(path, 4500, 365, 61, from_micros(parse_time(AS_OF)))
    assert sum(stats.events.values()) >= 100_000
    return path


@pytest.fixture(scope="module")
def reference(history: Path) -> list[dict[str, Any]]:
    """The alerts of an undisturbed run: the agent's own batch logic in-process, one
    partition, the whole history in event-time order (tests/inprocess.py). Alerts
    depend on a customer's events alone, not on partitions or read order
    (tests/agent/test_alignment.py), so the disturbed workers must emit exactly these."""
    as_of = parse_time(AS_OF)
    records = [
        r for r in read_events(history, "jsonl") if r.occurred_at is None or r.occurred_at < as_of
    ]
    records.sort(key=lambda r: -1 if r.occurred_at is None else r.occurred_at)
    run = Run(records, as_of)
    run.feed(records, [500], random.Random(0))
    return run.alert_records()


Disturb = Callable[[Fleet, int], None]


def run_disturbed(history: Path, workdir: Path, initial: int, disturb: Disturb) -> Outcome:
    """Stream ``history`` to ``initial`` workers; ``disturb(fleet, total)`` acts while
    the workers are processing. Returns what the workers computed."""
    as_of = parse_time(AS_OF)
    records = sorted(
        read_events(history, "jsonl"),
        key=lambda r: -1 if r.occurred_at is None else r.occurred_at,
    )
    with new_broker(workdir) as broker:
        settings = local_settings(Settings(), broker, PARTITIONS, workdir)
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, PARTITIONS)))
        # The whole history is in the log before the first worker starts: a topic is
        # read to its end only when it is (see processor/alignment.py), so
        # the outcome depends on nothing but the input, and the oracle can say it.
        first = min(r.occurred_at for r in records if r.occurred_at is not None)
        asyncio.run(send_ticks(broker.bootstrap, PARTITIONS, first))
        published = asyncio.run(publish(broker.bootstrap, records, before=as_of)).published
        fleet = Fleet(settings, workdir)
        try:
            started = time.monotonic()
            fleet.scale(initial)
            disturb(fleet, published)
            fleet.check_alive()
            asyncio.run(
                wait_for_zero_lag(
                    broker.bootstrap, settings.app_id, topics.INPUT_TOPICS, timeout=600
                )
            )
            seconds = time.monotonic() - started
            final = as_of + settings.lateness
            asyncio.run(tick_and_wait(broker.bootstrap, settings.app_id, PARTITIONS, final))
            fleet.check_alive()
        except BaseException:
            print(fleet.tails())
            with contextlib.suppress(Exception):  # what the workers wrote, to diagnose
                _keep_partition_records(broker.bootstrap, settings.app_id, workdir)
            raise
        finally:
            fleet.close()
        customers, partitions = asyncio.run(collect(broker.bootstrap, settings.app_id))
        _keep_partition_records(broker.bootstrap, settings.app_id, workdir)
        alerts = asyncio.run(read_all(broker.bootstrap, topics.ALERTS))
        deadletters = asyncio.run(read_all(broker.bootstrap, topics.DEADLETTER))
    return Outcome(
        history=history,
        as_of=as_of,
        customers=customers,
        partitions=partitions,
        alerts=alerts,
        deadletters=deadletters,
        log=fleet.log,
        seconds=seconds,
    )


def _keep_partition_records(bootstrap: str, app_id: str, workdir: Path) -> None:
    """Every partition record the workers wrote, in changelog order, for diagnosing a
    failed run (workdir/partition-records.jsonl)."""
    changelog = asyncio.run(read_all(bootstrap, topics.changelog_topic(app_id)))
    with (workdir / "partition-records.jsonl").open("w") as out:
        for record in changelog:
            if record.key is not None and is_partition_key(record.key) and record.value:
                state = decode_partition(record.value)
                kept = {f: getattr(state, f) for f in _TRACED}
                out.write(json.dumps({"offset": record.offset, **kept}, default=str) + "\n")


_TRACED = ("partition", "consumed", "valid", "duplicates", "pending", "offsets", "previous",
           "released", "pending_days", "aligned")  # fmt: skip


def kill_three_times(seed: int) -> Disturb:
    def disturb(fleet: Fleet, total: int) -> None:
        rng = random.Random(seed)
        for step in range(3):
            # Mid-stream: a fifth, two and three fifths of the input committed. Not
            # up to three quarters: with record batches two workers read the last
            # quarter between two commits that a full producer buffer held back
            # (committed lag 45,875 for 30 s of rebalancing, then 0 at the next
            # poll), so the third kill came after the end.
            fleet.wait_progress(total * (4 - step) // 5, timeout=300)
            fleet.kill(rng.choice(sorted(fleet.workers)))
            time.sleep(rng.uniform(0.2, 2.0))
            fleet.start()

    return disturb


def rescale(disturb_counts: list[int]) -> Disturb:
    def disturb(fleet: Fleet, total: int) -> None:
        steps = len(disturb_counts)
        for step, count in enumerate(disturb_counts):
            fleet.wait_progress(total * (steps - step) // (steps + 1), timeout=300)
            fleet.scale(count)

    return disturb


@pytest.fixture
def outcomes() -> Iterator[list[Outcome]]:
    kept: list[Outcome] = []
    yield kept
    for outcome in kept:
        record_figures(outcome)


# The disturbed runs below check all of this and more; `make reliability` runs it as
# the baseline to tell a fault's effect from anything else.
@pytest.mark.extended
def test_two_workers_match_the_oracle(
    history: Path, reference: list[dict[str, Any]], tmp_path: Path, outcomes: list[Outcome]
) -> None:
    """The baseline the disturbed runs are held to: two workers, no faults."""
    outcome = run_disturbed(history, tmp_path, 2, lambda fleet, total: None)
    outcome.name = "two workers, no faults"
    outcome.reference_alerts = reference
    outcomes.append(outcome)
    check_outcome(outcome)


@pytest.mark.chaos
def test_sigkill_a_random_worker_three_times(
    history: Path, reference: list[dict[str, Any]], tmp_path: Path, outcomes: list[Outcome]
) -> None:
    outcome = run_disturbed(history, tmp_path, 2, kill_three_times(seed=7))
    outcome.reference_alerts = reference
    outcome.name = "chaos: 2 workers, SIGKILL x3"
    outcomes.append(outcome)
    assert [e.action for e in outcome.log].count("kill") == 3
    assert all(e.lag > 0 for e in outcome.log if e.action == "kill"), "kills must be mid-stream"
    check_outcome(outcome)


@pytest.mark.chaos
def test_scale_one_two_three_one(
    history: Path, reference: list[dict[str, Any]], tmp_path: Path, outcomes: list[Outcome]
) -> None:
    outcome = run_disturbed(history, tmp_path, 1, rescale([2, 3, 1]))
    outcome.reference_alerts = reference
    outcome.name = "chaos: scale 1 -> 2 -> 3 -> 1"
    outcomes.append(outcome)
    assert [e.action for e in outcome.log].count("stop") == 2
    check_outcome(outcome)
