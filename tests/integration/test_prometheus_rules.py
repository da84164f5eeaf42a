"""The recording and alerting rules, checked and unit-tested by a real promtool, and
the alerts held to what operators need: a runbook, tests both ways, real metrics."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from prometheus_client import generate_latest

from streams.metrics import PipelineMetrics
from tests.prometheus import (
    ALERTS,
    ALERTS_TEST,
    DEPLOY,
    OPERATIONS,
    RULES,
    alerts,
    github_anchors,
    rules,
    selector_name,
    vector_selectors,
)

pytestmark = pytest.mark.integration


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: `make tools` installs it (Debian package prometheus)"
    return path


def test_rules_are_valid() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(DEPLOY / "rules.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_compute_ratios_across_partitions_once() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", str(DEPLOY / "tests" / "rules_test.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def promtool_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=DEPLOY)


def test_alerting_rules_are_valid() -> None:
    done = promtool_run("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules(ALERTS))} rules found" in done.stdout


def test_compose_config_loads_both_rule_files() -> None:
    """`promtool check config` reads the rule files the config names, from its folder."""
    done = promtool_run("check", "config", str(DEPLOY / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    for path in (RULES, ALERTS):
        assert f"Checking {path}" in done.stdout or f"Checking {path.name}" in done.stdout


def test_alerts_fire_and_stay_silent_as_tested() -> None:
    done = promtool_run("test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_severity_summary_description_and_runbook() -> None:
    anchors = set(github_anchors(OPERATIONS.read_text()))
    found = alerts()
    assert len(found) >= 8
    names = [rule["alert"] for rule in found]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in found:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), name
        assert annotations.get("description", "").strip(), name
        document, _, anchor = annotations.get("runbook_url", "").partition("#")
        assert document == "docs/operations.md", (name, document)
        assert anchor in anchors, f"{name}: no heading of docs/operations.md has #{anchor}"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    """promtool passes an alert_rule_test of an alert that does not exist when it
    expects nothing, so the names are checked here, and both cases required."""
    names = {rule["alert"] for rule in alerts()}
    firing: set[str] = set()
    silent: set[str] = set()
    document = yaml.safe_load(ALERTS_TEST.read_text())
    assert [(DEPLOY / "tests" / f).resolve() for f in document["rule_files"]] == [ALERTS]
    for group in document["tests"]:
        for case in group.get("alert_rule_test", []):
            assert case["alertname"] in names, f"a test of no alert: {case['alertname']}"
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert names - firing == set(), "never tested firing"
    assert names - silent == set(), "never tested not firing"


def exported_names() -> set[str]:
    """Sample names a worker's registry exposes, Redis sink included, from the TYPE
    lines of its exposition (a family with no samples yet has its TYPE line)."""
    metrics = PipelineMetrics(lambda: [], lambda: [])
    metrics.export_redis()
    names = {"up"}  # written by Prometheus for every target it scrapes
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            names.update(name + suffix for suffix in suffixes)
    return names


def test_alerts_use_only_metrics_the_worker_exports() -> None:
    exported = exported_names()
    recorded = {rule["record"] for rule in rules(RULES) + rules(ALERTS) if "record" in rule}
    used = {
        selector_name(selector)
        for rule in rules(ALERTS)
        for selector in vector_selectors(rule["expr"])
    }
    assert {"up", "churnwatch_consumer_lag_messages", "churnwatch_redis_up"} <= used
    assert used - exported - recorded == set()
    for rule in rules(ALERTS):
        for selector in vector_selectors(rule["expr"]):
            if selector_name(selector) == "up":  # every target has one: name the job
                assert selector == 'up{job="churnwatch"}', rule.get("alert")
