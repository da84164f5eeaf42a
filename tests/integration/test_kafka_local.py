"""The local Apache Kafka supervisor (streams/kafka_local.py), against the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.broker import BrokerError, _port_taken
from streams.kafka_admin import create_topics, end_offsets
from streams.kafka_local import KAFKA_VERSION, LocalKafka, check_installed
from streams.preflight import session_bounds
from tests.brokers import group_alive, pid_exists

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_starts_answers_and_stops_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    broker = LocalKafka(log_path=log)
    with broker:
        assert broker.process is not None
        pid = broker.process.pid
        assert broker.ready_seconds is not None and broker.ready_seconds < 30
        assert broker.url == f"kafka://127.0.0.1:{broker.port}"
        datadir = broker.datadir
        assert (datadir / "log" / "meta.properties").exists()  # formatted by StorageTool
    assert not broker.running and not pid_exists(pid)
    assert not _port_taken(broker.host, broker.port)
    assert not _port_taken(broker.host, broker.controller_port)
    assert not datadir.exists()  # a temporary data directory goes with the broker
    # log4j-slf4j-impl routes Kafka's slf4j logs to the file: without it they vanish.
    assert "Kafka Server started" in log.read_text()
    broker.stop()  # idempotent


def test_restart_on_its_datadir_keeps_topics(tmp_path: Path) -> None:
    broker = LocalKafka(datadir=tmp_path / "data", keep=True)
    with broker:
        asyncio.run(create_topics(broker.bootstrap, {"kept": 3}))
    with broker:
        assert len(asyncio.run(end_offsets(broker.bootstrap, ["kept"]))) == 3


def test_broker_goes_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "from streams.kafka_local import LocalKafka\n"
        "b = LocalKafka().start()\n"
        "print(b.port, b.process.pid, flush=True)\n"
        "import time; time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert parent.stdout is not None
        port, group = map(int, parent.stdout.readline().split())
        assert _port_taken("127.0.0.1", port)
        parent.kill()  # SIGKILL: no atexit runs; the watchdog's pipe closes
        parent.wait()
        deadline = time.monotonic() + 30
        while _port_taken("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _port_taken("127.0.0.1", port)
        while group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(group)  # the JVM too, not only its listener
    finally:
        parent.kill()
        parent.wait()


def test_missing_jars_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNWATCH_KAFKA_LIBS", str(tmp_path / "nothing"))
    with pytest.raises(
        BrokerError, match=rf"Apache Kafka {KAFKA_VERSION} jars are not in .*`make kafka`"
    ):
        LocalKafka().start()


def test_missing_java_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrokerError, match="needs Java 17"):
        check_installed()


def test_demo_reports_missing_kafka_jars_and_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "CHURNWATCH_KAFKA_LIBS": str(tmp_path / "nothing")}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--embedded", "kafka", "--duration", "5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "make kafka" in done.stderr


def test_worker_refuses_a_session_timeout_the_broker_would_refuse(tmp_path: Path) -> None:
    """Kafka answers InvalidSessionTimeout to such a member, and aiokafka only logs it:
    the worker ran without partitions for ever (seen on the first Kafka run of the
    dashboards test, 3 s against Kafka's default minimum of 6 s)."""
    with LocalKafka() as broker:
        assert asyncio.run(session_bounds(broker.bootstrap)) == (1000, 1_800_000)
        env = {**os.environ, "CHURNWATCH_BROKER": broker.url, "CHURNWATCH_SESSION_TIMEOUT": "0.5"}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "worker"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "CHURNWATCH_SESSION_TIMEOUT=0.5" in done.stderr
    assert "group.min.session.timeout.ms" in done.stderr
    assert time.monotonic() - started < 60
