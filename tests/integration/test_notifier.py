"""``churnwatch notify`` end to end: a real Apache Kafka, a real HTTP receiver that
fails, times out and recovers, and the notifier as a subprocess, SIGKILLed mid-run
and started again.

What must hold whatever the timing: every alert transition reaches the receiver's
de-duplicated view exactly once per idempotency key, or the dead-letter topic with
its reason, never neither; every JSON body's signature verifies; no day's capacity
is exceeded, across the restart; every transition of an episode a capped
destination was told of reaches it; a bad configuration exits non-zero naming the
field.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from notifier.formats import SIGNATURE_HEADER, verify
from schemas.notify import Notification, NotifyDeadLetter
from streams.broker import free_port
from streams.embedded import Broker
from streams.kafka_admin import consumer_lag, create_topics, read_all
from streams.processes import stop_process_group
from tests.notify_support import Receiver, encode, episodes, serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-secret"
CAPPED = 4
SLACK_CAPPED = 3
#: More than the outage and a flaky key's failures together (8 at most): only the
#: keys answered 503 every time run out of attempts.
ATTEMPTS = 10


def _config(base: str, topic_name: Callable[[str], str]) -> dict[str, Any]:
    return {
        "source": {
            "topic": topic_name("alerts"),
            "group_id": topic_name("notifier"),
            "dead_letter_topic": topic_name("dead"),
            "state_topic": topic_name("state"),
        },
        "hold": "1s",
        "metrics_port": free_port("127.0.0.1"),
        # Low, so fetching pauses and resumes while deliveries retry.
        "max_in_flight": 20,
        "link_template": "https://churnwatch.example/ui/customers/{customer_id}",
        "delivery": {
            "timeout": "1s",
            "max_attempts": ATTEMPTS,
            "backoff_initial": "50ms",
            "backoff_max": "300ms",
            "lanes": 3,
        },
        "destinations": [
            {"name": "all", "format": "json", "url": f"{base}/all", "secret": SECRET},
            {
                "name": "capped",
                "format": "json",
                "url": f"{base}/capped",
                "secret": SECRET,
                "daily_capacity": CAPPED,
                "filters": {"tiers": ["high", "critical"]},
            },
            {
                "name": "slack",
                "format": "slack",
                "url": f"{base}/slack",
                "daily_capacity": SLACK_CAPPED,
                "filters": {"statuses": ["firing", "escalated", "resolved"]},
            },
        ],
    }


def _start(config: Path, broker: Broker, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CHURNWATCH_BROKER": broker.url, "CHURNWATCH_LOG_LEVEL": "warning"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "notify", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


def _scrape(port: int) -> dict[tuple[str, str], float]:
    """``churnwatch_notify_alerts_total`` by (destination, outcome) from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[tuple[str, str], float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "churnwatch_notify_alerts_total":
                found[(sample.labels["destination"], sample.labels["outcome"])] += sample.value
    return found


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-6000:]


async def _until(
    check: Callable[[], Any], what: str, process: Any, log: Path, limit: float
) -> None:
    """Poll ``check`` (sync or async) until true; fail with the notifier's log after
    ``limit`` seconds, or at once if the notifier exited."""
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if process.poll() is not None:
            pytest.fail(f"notifier exited {process.returncode} before {what}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {limit:g} s; notifier log:\n{_tail(log)}")
        await asyncio.sleep(0.2)


async def _kill_and_restart(
    broker: Broker,
    config: dict[str, Any],
    path: Path,
    log: Path,
    receiver: Receiver,
    later: list[tuple[bytes, bytes]],
) -> None:
    """Run the notifier, SIGKILL it mid-run, publish ``later``, run it again until
    the group has committed everything, and stop it with SIGTERM."""
    topic = config["source"]["topic"]
    process = _start(path, broker, log)
    try:
        # Killed once the capped destinations have spent capacity, deliveries under way:
        # the restart must neither count those openings again nor lose any transition.
        def spent() -> bool:
            return len(receiver.view("all")) >= 12 and len(receiver.view("capped")) >= 1

        await _until(spent, "capacity spent", process, log, 90)
        os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
        await _produce(broker.bootstrap, topic, later)
        process = _start(path, broker, log)
        group = config["source"]["group_id"]

        async def caught_up() -> bool:
            lag = await consumer_lag(broker.bootstrap, group, [topic])
            return sum(lag.values()) == 0

        # Zero lag: every record finished (a held or retrying one holds its commit back).
        await _until(caught_up, "caught up (zero lag)", process, log, 180)
        # What was not sent is counted: the restarted notifier withheld openings.
        metrics = await asyncio.to_thread(_scrape, config["metrics_port"])
        assert metrics[("capped", "withheld")] >= 1 and metrics[("all", "delivered")] >= 1
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0, _tail(log)
    finally:
        stop_process_group(process, timeout=10, kill=True)


async def test_every_transition_once_across_failures_and_a_sigkill(
    broker: Broker, topic_name: Callable[[str], str], tmp_path: Path
) -> None:
    customers = episodes(seed=19, customers=48)
    alerts = [alert for history in customers for alert in history]
    keys = [f"{a.dedup_key}:{a.sequence}" for a in alerts]
    receiver = Receiver(
        rejected=set(keys[3:5]),
        down={keys[7]},
        slow=set(keys[10:40:6]),
        flaky=set(keys[1:80:9]),
        outage=range(15, 21),
    )
    runner, base = await serve(receiver)
    config = _config(base, topic_name)
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "notifier.log"
    topic = config["source"]["topic"]
    started = datetime.now(UTC)
    await create_topics(broker.bootstrap, {topic: 3})
    encoded = [encode(a) for a in alerts]
    # At least once upstream too: a worker may publish an alert twice, byte for byte.
    first, second = encoded[: len(encoded) // 2], encoded[len(encoded) // 2 :]
    await _produce(broker.bootstrap, topic, first + first[::7])
    try:
        await _kill_and_restart(broker, config, path, log, receiver, second + second[::5])
    finally:
        await runner.cleanup()
    days = _days(started, datetime.now(UTC))
    dead = [
        msgspec.json.decode(r.value, type=NotifyDeadLetter)
        for r in await read_all(broker.bootstrap, config["source"]["dead_letter_topic"])
    ]
    assert {d.destination for d in dead} == {"all"}, dead
    _check_all(receiver, dead, set(keys))
    _check_capped(receiver, alerts, days)
    _check_slack(receiver, alerts, days)


def _days(start: datetime, end: datetime) -> int:
    """UTC calendar days the run touched (a run across midnight has two capacities)."""
    return (end.date() - start.date()).days + 1


def _check_all(receiver: Receiver, dead: list[NotifyDeadLetter], keys: set[str]) -> None:
    view = receiver.view("all")
    given_up = {d.idempotency_key: d for d in dead if d.destination == "all"}
    assert set(given_up) == receiver.rejected | receiver.down
    assert all(
        given_up[k].reason == "rejected" and given_up[k].attempts == 1 for k in receiver.rejected
    )
    assert all(given_up[k].reason == "retries_exhausted" for k in receiver.down)
    assert all(given_up[k].attempts == ATTEMPTS for k in receiver.down)
    for letter in given_up.values():  # the original record travels with the reason
        assert record_key(base64.b64decode(letter.value_b64)) == letter.idempotency_key
    # None lost, none invented: the de-duplicated view is every other transition.
    assert set(view) == keys - set(given_up)
    for key, copies in view.items():
        for copy in copies:
            assert verify(SECRET.encode(), copy.body, copy.headers.get(SIGNATURE_HEADER))
            body = msgspec.json.decode(copy.body, type=Notification)
            assert body.idempotency_key == key == f"{body.alert.dedup_key}:{body.alert.sequence}"
            assert body.link == f"https://churnwatch.example/ui/customers/{body.alert.customer_id}"
    # The failures were real: retries and repeats happened and were absorbed.
    assert any(len(copies) > 1 for copies in view.values())
    assert any(receiver.attempts[("all", k)] > 1 for k in receiver.flaky)


def record_key(value: bytes) -> str:
    alert = json.loads(value)
    return f"{alert['dedup_key']}:{alert['sequence']}"


def _expected_after(alerts: list[Any], statuses: set[str] | None) -> dict[str, list[str]]:
    """Per episode, the idempotency keys of its transitions in sequence order."""
    out: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for alert in alerts:
        if statuses is None or alert.status in statuses:
            out[alert.dedup_key].append((alert.sequence, alert.status, alert.tier))
    return {k: [f"{k}:{s}" for s, _, _ in sorted(v)] for k, v in out.items()}


def _check_capped(receiver: Receiver, alerts: list[Any], days: int) -> None:
    view = receiver.view("capped")
    bodies = {k: msgspec.json.decode(c[0].body, type=Notification) for k, c in view.items()}
    openings = [b for b in bodies.values() if b.opening]
    per_day: dict[str | None, int] = defaultdict(int)
    for body in openings:
        per_day[body.capacity_day] += 1
        assert body.alert.tier in ("high", "critical") and body.alert.status != "resolved"
    assert None not in per_day
    assert all(count <= CAPPED for count in per_day.values()), per_day
    assert len(per_day) <= days
    assert sum(per_day.values()) >= CAPPED  # 48 customers compete: the capacity was used
    # An episode is opened once, and every later transition of it follows (none lost).
    by_episode: dict[str, list[Notification]] = defaultdict(list)
    for body in bodies.values():
        by_episode[body.alert.dedup_key].append(body)
    expected = _expected_after(alerts, None)
    for episode, sent in by_episode.items():
        opened = [b for b in sent if b.opening]
        assert len(opened) == 1, sent
        start = opened[0].alert.sequence
        wanted = [k for k in expected[episode] if int(k.rsplit(":", 1)[1]) >= start]
        assert sorted(b.idempotency_key for b in sent) == sorted(wanted)


def _check_slack(receiver: Receiver, alerts: list[Any], days: int) -> None:
    view = receiver.view("slack")
    by_episode: dict[str, list[int]] = defaultdict(list)
    for key, copies in view.items():
        message = json.loads(copies[0].body)
        assert message["text"] and message["blocks"][0]["type"] == "section"
        episode, sequence = key.rsplit(":", 1)
        by_episode[episode].append(int(sequence))
        customer = next(a.customer_id for a in alerts if a.dedup_key == episode)
        assert f"ui/customers/{customer}|{customer}>" in message["blocks"][0]["text"]["text"]
    assert 1 <= len(by_episode) <= SLACK_CAPPED * days
    expected = _expected_after(alerts, {"firing", "escalated", "resolved"})
    for episode, sequences in by_episode.items():
        start = min(sequences)
        wanted = [k for k in expected[episode] if int(k.rsplit(":", 1)[1]) >= start]
        assert sorted(f"{episode}:{s}" for s in sequences) == sorted(wanted)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"destinations": [{"name": "x", "format": "json", "url": "http://h/", "secrt": "s"}]},
            "destinations[0].secrt: unknown field",
        ),
        (
            {"destinations": [{"name": "x", "format": "json", "url": "http://h/"}]},
            "destinations[0].secret: required",
        ),
        (
            {
                "destinations": [
                    {
                        "name": "x",
                        "format": "slack",
                        "url": "http://h/",
                        "filters": {"tiers": ["hgih"]},
                    }
                ]
            },
            "destinations[0].filters.tiers[0]",
        ),
        (
            {
                "destinations": [
                    {"name": "x", "format": "slack", "url": "http://h/", "daily_capacity": 0}
                ]
            },
            "destinations[0].daily_capacity",
        ),
        (
            {
                "timezone": "Mars/Olympus",
                "destinations": [{"name": "x", "format": "slack", "url": "http://h/"}],
            },
            "timezone",
        ),
    ],
)
def test_a_bad_configuration_exits_naming_the_field(
    change: dict[str, Any], field: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(change))
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "notify", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # No broker at this address: the configuration must be refused before connecting.
        env={**os.environ, "CHURNWATCH_BROKER": "kafka://127.0.0.1:9"},
    )
    assert done.returncode == 2, done.stderr
    assert field in " ".join(done.stderr.split()), done.stderr


def test_the_example_configuration_checks() -> None:
    env = {
        **os.environ,
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
        "CRM_WEBHOOK_URL": "http://crm:8080/hooks",
        "CRM_WEBHOOK_SECRET": "s",
    }
    config = ROOT / "deploy" / "notify.example.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "notify", "--config", str(config), "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stderr)
    assert [d["name"] for d in summary["destinations"]] == ["success-enterprise", "crm"]
    assert "hooks.slack.com" not in done.stderr  # the summary shows no URL
