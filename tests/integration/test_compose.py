"""docker-compose.yml validates and keeps the promises a deployment relies on.

No Docker engine runs here, and Docker's own `docker compose` plugin is not packaged
for Debian or PyPI; Debian's docker-compose 1.29 (`make tools`) implements the
Compose Specification and validates the file, its references and its interpolation
without an engine. The file avoids what only v2 knows (a top-level `name`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams import topics

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def compose_config() -> dict[str, Any]:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose not found: `make tools` installs it (Debian docker-compose)"
    done = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def mount_target(volume: str | dict[str, Any]) -> str:
    """Where a volume is mounted, from the short (``src:target[:mode]``) or long form."""
    if isinstance(volume, dict):
        return str(volume["target"])
    parts = volume.split(":")
    return parts[0] if len(parts) == 1 else parts[1]


def test_compose_file_validates() -> None:
    services = compose_config()["services"]
    assert {"kafka", "topics-init", "redis", "worker", "prometheus", "grafana"} <= set(services)
    assert services["generator"]["profiles"] == ["demo"]


def test_compose_runs_the_kafka_the_suite_tests() -> None:
    """Users get the Apache Kafka release the integration tier runs on, and the same
    topics that churnwatch provisions itself (streams/topics.py)."""
    from streams import topics
    from streams.kafka_local import KAFKA_VERSION

    services = compose_config()["services"]
    for name in ("kafka", "topics-init"):
        assert services[name]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    script = "\n".join(services["topics-init"]["command"])
    for topic in topics.ALL_TOPICS:
        assert topic in script, f"topics-init does not create {topic}"


def test_workers_scale_without_clashing() -> None:
    worker = compose_config()["services"]["worker"]
    assert "container_name" not in worker
    for port in worker.get("ports", []):  # published ports must not fix a host port
        assert not (isinstance(port, dict) and port.get("published")), port
    env = worker["environment"]
    assert env["CHURNWATCH_STORE"] == "rocksdb://"
    assert env["CHURNWATCH_REDIS_URL"].startswith("redis://redis:")
    assert env["CHURNWATCH_DATADIR"] in [mount_target(v) for v in worker["volumes"]]
    assert worker["depends_on"]["topics-init"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_topics_init_creates_every_topic_and_compacts_the_changelog() -> None:
    services = compose_config()["services"]
    script = " ".join(services["topics-init"]["command"])
    for topic in topics.ALL_TOPICS:
        assert topic in script, topic
    app_id = services["worker"]["environment"]["CHURNWATCH_APP_ID"]
    assert services["topics-init"]["environment"]["APP_ID"] == app_id
    assert f'APP_ID-{topics.CUSTOMERS_TABLE}-changelog" --config cleanup.policy=compact' in script
    partitions = services["worker"]["environment"]["CHURNWATCH_PARTITIONS"]
    assert services["topics-init"]["environment"]["PARTITIONS"] == partitions


def test_prometheus_and_grafana_are_wired() -> None:
    services = compose_config()["services"]
    assert "redis-server" in services["redis"]["command"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["healthcheck"]["test"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["rules.yml", "alerts.yml"]
    # Each rule file is where the container looks for it: beside the config, in the
    # directory mounted whole (docker-compose config gives the host path absolute).
    command = services["prometheus"]["command"]
    config_file = next(a.split("=", 1)[1] for a in command if a.startswith("--config.file="))
    config_dir = str(Path(config_file).parent)
    (mount,) = [v for v in services["prometheus"]["volumes"] if mount_target(v) == config_dir]
    host_dir = Path(mount["source"] if isinstance(mount, dict) else mount.split(":")[0])
    assert host_dir == ROOT / "deploy/prometheus"
    for name in prometheus["rule_files"]:
        assert (host_dir / name).is_file(), name
    (scrape,) = prometheus["scrape_configs"]
    assert scrape["dns_sd_configs"][0]["names"] == ["worker"]
    assert scrape["dns_sd_configs"][0]["port"] == 6066
    provisioning = ROOT / "deploy/grafana/provisioning"
    sources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["uid"] == "churnwatch-prometheus"
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards/churnwatch.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert path in [mount_target(v) for v in services["grafana"]["volumes"]]


def test_the_notifier_runs_the_example_configuration_once() -> None:
    notifier = compose_config()["services"]["notifier"]
    assert notifier["command"][:2] == ["notify", "--config"]
    mounted = {mount_target(v): v for v in notifier["volumes"]}
    config = notifier["command"][2]
    assert config in mounted and "deploy/notify.example.yaml" in mounted[config]
    assert notifier["depends_on"]["topics-init"]["condition"] == "service_completed_successfully"
    # One replica counts the daily capacity; it needs real webhook URLs, hence a profile.
    assert "deploy" not in notifier and notifier["profiles"] == ["notify"]
    for name in ("SLACK_WEBHOOK_URL", "CRM_WEBHOOK_URL", "CRM_WEBHOOK_SECRET"):
        assert name in notifier["environment"]
