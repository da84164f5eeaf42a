"""A real Prometheus scrapes a worker and its recording rules give the report's ratios."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from retention.calendar import Calendar
from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.generator import write_history
from streams.inputs import read_events
from streams.kafka_admin import create_topics, wait_for_zero_lag
from streams.processes import stop_process_group
from streams.produce import publish
from streams.replay import collect, tick_and_wait
from streams.report import build_report
from streams.settings import Settings
from streams.workers import WorkerProcess, free_port, local_settings
from tests.brokers import new_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RATIOS = (
    "retention_rate",
    "churn_rate",
    "repeat_purchase_rate",
    "revenue_churn_rate",
    "nps",
    "csat",
)


def query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_recording_rules_match_the_report(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not found: `make tools` installs it (Debian package)"
    as_of = parse_time("2025-07-01T00:00:00Z")
    history = tmp_path / "history.jsonl"
    write_history(history, 500, 150, 8, from_micros(as_of))
    with new_broker(tmp_path) as broker:
        asyncio.run(create_topics(broker.bootstrap, dict.fromkeys(topics.ALL_TOPICS, 2)))
        settings = local_settings(Settings(), broker, 2, tmp_path)
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        worker.start()
        try:
            worker.wait_ready()
            asyncio.run(publish(broker.bootstrap, read_events(history, "jsonl")))
            group = settings.app_id
            asyncio.run(
                wait_for_zero_lag(broker.bootstrap, group, list(topics.INPUT_TOPICS), timeout=300)
            )
            asyncio.run(
                tick_and_wait(broker.bootstrap, group, 2, as_of + settings.lateness, timeout=60)
            )
            _, partitions = asyncio.run(collect(broker.bootstrap, group))
            report = build_report(partitions, as_of, 500, {}, Calendar("month"))
            expected = report["periods"][-1]

            port = free_port()
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                f"rule_files: ['{DEPLOY / 'rules.yml'}']\n"
                "scrape_configs:\n"
                "  - job_name: churnwatch\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{settings.web_port}']}}]\n"
            )
            server = subprocess.Popen(
                [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
                start_new_session=True,
            )  # fmt: skip
            try:
                got: dict[str, float] = {}
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and len(got) < len(RATIOS):
                    time.sleep(1)
                    for name in RATIOS:
                        try:
                            result = query(port, f'churnwatch:{name}{{period="last"}}')
                        except OSError:
                            break
                        if result:
                            got[name] = float(result[0]["value"][1])  # type: ignore[index]
            finally:
                stop_process_group(server, 10)
        finally:
            worker.stop()
    assert expected["customers_start"] > 0
    for name in RATIOS:
        if expected[name] is None:
            assert name not in got
        else:
            assert got[name] == pytest.approx(expected[name], rel=1e-9), name
